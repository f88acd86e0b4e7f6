"""MambaVL: egocentric action recognition and anticipation by questioning, fused by a shared-state Mamba block."""

__version__ = "0.1.0.dev0"

from .auto import register_auto_classes
from .configuration import MambaVLConfig
from .modeling import MambaVLForVideoClassification, MambaVLModel, MambaVLPreTrainedModel
from .pipelines import VideoQuestionClassificationPipeline, register_pipeline
from .processors import MambaVLProcessor, MambaVLVideoProcessor, MediaError, mask_answer
from .saving import load_model_and_processor

register_auto_classes()
register_pipeline()

__all__ = [
    "MambaVLConfig",
    "MambaVLModel",
    "MambaVLForVideoClassification",
    "MambaVLPreTrainedModel",
    "MambaVLProcessor",
    "MambaVLVideoProcessor",
    "MediaError",
    "mask_answer",
    "VideoQuestionClassificationPipeline",
    "load_model_and_processor",
]
