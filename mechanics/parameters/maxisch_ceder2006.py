"""Elastic constants of LiFePO4 and FePO4 from DFT (GGA+U).

Source: T. Maxisch, G. Ceder, "Elastic properties of olivine LixFePO4 from first principles",
Phys. Rev. B 73, 174112 (2006). Voigt, GPa, 1 = a, 2 = b, 3 = c, as quoted in
``shared/reference/lfp.md`` (the LiFePO4 row "as commonly quoted": good to a few per cent).
The simulator uses the LiFePO4 row as the composition-independent stiffness of LixFePO4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CITATION = "Maxisch & Ceder, Phys. Rev. B 73, 174112 (2006), DFT GGA+U"


@dataclass(frozen=True)
class OrthorhombicConstants:
    """Nine independent stiffness constants (GPa); C44 = bc, C55 = ac, C66 = ab shear."""

    C11_GPa: float
    C22_GPa: float
    C33_GPa: float
    C44_GPa: float
    C55_GPa: float
    C66_GPa: float
    C12_GPa: float
    C13_GPa: float
    C23_GPa: float

    def voigt(self) -> np.ndarray:
        """6×6 Voigt matrix (GPa), order (11, 22, 33, 23, 13, 12)."""
        v = np.zeros((6, 6))
        v[0, 0], v[1, 1], v[2, 2] = self.C11_GPa, self.C22_GPa, self.C33_GPa
        v[3, 3], v[4, 4], v[5, 5] = self.C44_GPa, self.C55_GPa, self.C66_GPa
        v[0, 1] = v[1, 0] = self.C12_GPa
        v[0, 2] = v[2, 0] = self.C13_GPa
        v[1, 2] = v[2, 1] = self.C23_GPa
        return v

    def voigt_tuple(self) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(float(x) for x in row) for row in self.voigt())


# Maxisch & Ceder (2006), DFT GGA+U
FEPO4 = OrthorhombicConstants(
    C11_GPa=175.9, C22_GPa=153.6, C33_GPa=135.0, C44_GPa=38.8, C55_GPa=47.5, C66_GPa=55.6,
    C12_GPa=29.6, C13_GPa=54.0, C23_GPa=19.6,
)
# Maxisch & Ceder (2006), DFT GGA+U
LIFEPO4 = OrthorhombicConstants(
    C11_GPa=138.9, C22_GPa=198.0, C33_GPa=173.0, C44_GPa=36.8, C55_GPa=50.6, C66_GPa=47.6,
    C12_GPa=72.8, C13_GPa=52.5, C23_GPa=46.2,
)
