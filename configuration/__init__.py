"""MambaVL configuration (installed as ``modeling_mambavl.configuration``)."""

from .configuration_mambavl import MambaVLConfig
from .presets import PRESETS

__all__ = ["MambaVLConfig", "PRESETS"]
