"""MambaVL configuration (installed as ``modeling_mambavl.configuration``)."""

from .configuration_mambavl import CONTROL_FUSION_TYPES, FUSION_TYPES, MambaVLConfig
from .presets import PRESETS

__all__ = ["MambaVLConfig", "PRESETS", "FUSION_TYPES", "CONTROL_FUSION_TYPES"]
