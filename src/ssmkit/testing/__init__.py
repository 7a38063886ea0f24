"""What checks correctness: tolerances relative to a reference, and the equivalence checker behind
``ssmkit check`` and the registry-wide test (every mode, step, split, state, mask and gradient of a
mixer against its reference mode, in float64)."""
from .equivalence import DEFAULT_LENGTHS, DEFAULT_TOL, CheckResult, check_mixer
from .tolerances import assert_close_rel, measured_tol, rel_err

__all__ = [
    "DEFAULT_LENGTHS", "DEFAULT_TOL", "CheckResult", "assert_close_rel", "check_mixer", "measured_tol", "rel_err",
]
