"""``musered simulate``: MUSE-format raw data with the ground truth they were made from.

Public API: :func:`simulate` (write nights of raw data, statics, truth and settings.yml),
:func:`load_truth` (read the truth back), :data:`PROFILES`.
"""

from .profiles import PROFILES, Profile, get_profile
from .run import SimulationResult, simulate
from .truth import Truth, load_truth

__all__ = ["PROFILES", "Profile", "SimulationResult", "Truth", "get_profile", "load_truth", "simulate"]
