"""EPIC-KITCHENS-100: class vocabulary, annotations, metrics, submissions and synthetic data.

Each name loads its module on first use (``datasets``, ``evaluate`` and ``pandas`` come with the annotations and the
metric), so importing ``modeling_mambavl`` does not pay for them.
"""

from typing import TYPE_CHECKING

from ..lazy_imports import lazy_getattr

_EXPORTS = {
    "EK100Vocabulary": "vocabulary",
    "EK100Class": "vocabulary",
    "EK100_ATTRIBUTION": "vocabulary",
    "load_ek100": "annotations",
    "EK100AnnotationError": "annotations",
    "UNKNOWN_ACTION": "annotations",
    "anticipation_window": "annotations",
    "EK100Metric": "metric",
    "write_submission": "submission",
    "make_synthetic_ek100": "synthetic",
    "SyntheticEK100": "synthetic",
    "EK100FeatureReader": "features",
    "EK100FeatureWriter": "features",
    "set_ek100_epoch": "media",
}
_SUBMODULES = ("annotations", "features", "media", "metric", "submission", "synthetic", "vocabulary")

__all__ = [
    "EK100Vocabulary",
    "EK100Class",
    "EK100_ATTRIBUTION",
    "load_ek100",
    "EK100Metric",
    "write_submission",
    "make_synthetic_ek100",
    "SyntheticEK100",
    "EK100AnnotationError",
    "EK100FeatureReader",
    "EK100FeatureWriter",
    "UNKNOWN_ACTION",
    "anticipation_window",
    "set_ek100_epoch",
]
__getattr__, __dir__ = lazy_getattr(__name__, _EXPORTS, _SUBMODULES)

if TYPE_CHECKING:
    from .annotations import UNKNOWN_ACTION, EK100AnnotationError, anticipation_window, load_ek100
    from .features import EK100FeatureReader, EK100FeatureWriter
    from .media import set_ek100_epoch
    from .metric import EK100Metric
    from .submission import write_submission
    from .synthetic import SyntheticEK100, make_synthetic_ek100
    from .vocabulary import EK100_ATTRIBUTION, EK100Class, EK100Vocabulary
