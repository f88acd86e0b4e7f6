"""EPIC-KITCHENS-100: class vocabulary, annotations, metrics, submissions and synthetic data."""

from .annotations import UNKNOWN_ACTION, EK100AnnotationError, anticipation_window, load_ek100
from .features import EK100FeatureReader, EK100FeatureWriter
from .media import set_ek100_epoch
from .metric import EK100Metric
from .submission import write_submission
from .synthetic import SyntheticEK100, make_synthetic_ek100
from .vocabulary import EK100_ATTRIBUTION, EK100Class, EK100Vocabulary

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
