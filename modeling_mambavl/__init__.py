"""MambaVL: egocentric action recognition and anticipation by questioning, fused by a shared-state Mamba block.

Importing the package registers the model with transformers' Auto classes and the question pipeline task; the EK100
tools (``modeling_mambavl.ek100``), the training tools (``modeling_mambavl.training``), the Hub helpers and the CLI
load on first use, with their dependencies (``datasets``, ``evaluate``, ``pandas``, Accelerate, PEFT).
"""

__version__ = "0.1.0.dev0"

from .auto import register_auto_classes
from .configuration import MambaVLConfig
from .lazy_imports import lazy_getattr
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

# Subpackages and modules that are not needed to build, register or run a model: `modeling_mambavl.ek100` works as an
# attribute without an import statement, as it did when the package imported it eagerly.
__getattr__, __dir__ = lazy_getattr(
    __name__, submodules=("atomic", "cli", "ek100", "hub", "model_card", "remote_code", "training")
)
