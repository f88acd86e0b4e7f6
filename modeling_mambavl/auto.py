"""Registration of MambaVL with the transformers Auto classes (run on ``import modeling_mambavl``)."""

from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification

from .configuration import MambaVLConfig
from .modeling import MambaVLForVideoClassification, MambaVLModel
from .processors.processing import register_auto_classes as _register_processors


def register_auto_classes() -> None:
    """Map ``model_type="mambavl"`` to the MambaVL classes in AutoConfig, AutoModel,
    AutoModelForVideoClassification, AutoProcessor and AutoVideoProcessor (idempotent)."""
    AutoConfig.register(MambaVLConfig.model_type, MambaVLConfig, exist_ok=True)
    AutoModel.register(MambaVLConfig, MambaVLModel, exist_ok=True)
    AutoModelForVideoClassification.register(MambaVLConfig, MambaVLForVideoClassification, exist_ok=True)
    _register_processors(MambaVLConfig)
