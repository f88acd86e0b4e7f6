"""MambaVL: egocentric action recognition and anticipation by questioning, fused by a shared-state Mamba block."""

__version__ = "0.1.0.dev0"

from .processors import MambaVLProcessor, MambaVLVideoProcessor, MediaError, mask_answer  # noqa: F401
