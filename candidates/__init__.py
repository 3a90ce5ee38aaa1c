"""chemoscreen candidates: olivine LiMPO4 composition spaces with physically sourced parameters.

```python
import candidates
space = candidates.olivine_space(metals=("Fe", "Mn", "Co"), step=0.25)   # list[Candidate]
props = candidates.properties(space[0], source="literature")             # CandidateProperties
props.params                                                             # mechanics MaterialParams
df = candidates.candidate_table(space)                                   # pandas.DataFrame
candidates.write_table(df, "candidates.csv")                             # or .parquet
```
See ``docs/candidates.md`` for the data, the mixing rules and their sources.
"""

from .mixing import theoretical_capacity_mAh_g, vegard
from .properties import SOURCES, CandidateProperties, coherent_spinodal, properties
from .space import (
    INACTIVE_METALS,
    MAX_INACTIVE_FRACTION,
    OLIVINE_METALS,
    REDOX_ACTIVE_METALS,
    Candidate,
    composition_id,
    custom_space,
    explicit_space,
    olivine_space,
    validate_fractions,
)
from .structures import end_member_structure, ordered_supercell, virtual_crystal
from .table import candidate_table, check_table_path, write_table

__all__ = [
    "INACTIVE_METALS",
    "MAX_INACTIVE_FRACTION",
    "OLIVINE_METALS",
    "REDOX_ACTIVE_METALS",
    "SOURCES",
    "Candidate",
    "CandidateProperties",
    "candidate_table",
    "check_table_path",
    "coherent_spinodal",
    "composition_id",
    "custom_space",
    "end_member_structure",
    "explicit_space",
    "olivine_space",
    "ordered_supercell",
    "properties",
    "theoretical_capacity_mAh_g",
    "validate_fractions",
    "vegard",
    "virtual_crystal",
    "write_table",
]
