"""The artifact names used everywhere: model metadata, database, API, metrics.

The order is the order of the model's output vector.
"""

from typing import Final

ARTIFACTS: Final[tuple[str, ...]] = (
    "motion",
    "ghosting",
    "spike",
    "noise",
    "bias_field",
    "blur",
    "wrap",
)

RESCAN_SCORE: Final[str] = "rescan_score"
