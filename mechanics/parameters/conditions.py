"""Reference conditions of the simulations.

- Temperature 298.15 K (25 °C): the standard temperature of thermochemical tables (IUPAC, *Quantities,
  Units and Symbols in Physical Chemistry* (the Green Book), 3rd ed., RSC (2007)); the Bazant-group
  LixFePO4 constants are quoted at 298 K (Ω = 4.51 kT, ``shared/reference/lfp.md``).
"""

from __future__ import annotations

CITATION = "IUPAC Green Book, 3rd ed. (2007): standard temperature 298.15 K"

STANDARD_TEMPERATURE_K = 298.15
