"""The linear-probe baseline (``fusion_type="linear_probe"``) and the identity vision adapter it reads through."""


import pytest
import torch
import torch.nn.functional as F

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification
from modeling_mambavl.training.optimization import build_param_groups

VISION = {"image_size": 32, "patch_size": 16, "num_frames": 4, "hidden_size": 16, "num_hidden_layers": 1,
          "num_attention_heads": 2, "intermediate_size": 32}


def _probe(backbone: str, **overrides) -> MambaVLForVideoClassification:
    if backbone.startswith("features"):
        # "features": CLS first (the preset); "features-no-cls": pooled by the masked mean.
        config = MambaVLConfig.from_preset("features-768", fusion_type="linear_probe", hidden_size=24,
                                           vision_feature_dim=24, video_has_cls=backbone == "features", **overrides)
    else:
        vision = {"model_type": backbone, **VISION, **({"tubelet_size": 2} if backbone == "videomae" else {})}
        config = MambaVLConfig.from_preset("tiny", vision_config=vision, num_frames=4, image_size=32, hidden_size=16,
                                           fusion_type="linear_probe", **overrides)
    torch.manual_seed(0)
    model = MambaVLForVideoClassification(config)
    with torch.no_grad():  # O(1) weights so that the comparisons below mean something
        for name, p in model.named_parameters():
            if not name.startswith("mambavl.vision"):
                p.copy_(torch.randn_like(p) * (0.5 if p.dim() == 1 else p.shape[1] ** -0.5))
    return model


def test_config_defaults_and_errors():
    config = MambaVLConfig.from_preset("features-768", fusion_type="linear_probe")
    assert config.vision_adapter == "identity" and not config.uses_questions
    assert MambaVLConfig.from_preset("features-768").vision_adapter == "norm_linear_tanh"
    with pytest.raises(ValueError, match="vision_adapter.*linear probe reads"):
        MambaVLConfig.from_preset("features-768", fusion_type="linear_probe", vision_adapter="norm_linear_tanh")
    with pytest.raises(ValueError, match="vision_adapter.*allowed"):
        MambaVLConfig.from_preset("features-768", vision_adapter="mlp")
    with pytest.raises(ValueError, match=r"MambaVLConfig.hidden_size: 768 differs from vision_feature_dim 1024.*"
                                         r"set hidden_size=1024"):
        MambaVLConfig.from_preset("features-768", fusion_type="linear_probe", vision_feature_dim=1024)
    # The identity adapter also serves the fusions (the authors' AVION models feed the backbone's tokens directly).
    config = MambaVLConfig.from_preset("features-1024", vision_adapter="identity")
    assert config.fusion_type == "ssm" and config.hidden_size == config.vision_feature_dim == 1024


@pytest.mark.parametrize("backbone", ["features", "features-no-cls", "videomae", "timesformer"])
def test_logits_are_a_linear_classifier_on_the_pooled_backbone_output(backbone):
    model = _probe(backbone).eval()
    if backbone.startswith("features"):
        video = {"video_features": torch.randn(3, 7, 24),
                 "video_attention_mask": torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])}
    else:
        video = {"pixel_values": torch.randn(3, 4, 3, 32, 32)}
    with torch.no_grad():
        out = model(**video)
        if backbone == "features":
            pooled = video["video_features"][:, 0]  # the CLS token
        elif backbone == "features-no-cls":
            tokens, mask = video["video_features"], video["video_attention_mask"]
            pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # masked mean
        else:
            backbone_model = model.mambavl.vision.backbone
            tokens = backbone_model(pixel_values=video["pixel_values"]).last_hidden_state
            # TimeSformer has a CLS token (first whatever the order); VideoMAE has none: mean over its tokens.
            pooled = tokens[:, 0] if backbone == "timesformer" else tokens.mean(1)
        norm = model.mambavl.fusion.norm
        z = F.layer_norm(pooled, pooled.shape[-1:], norm.weight, norm.bias, norm.eps)
        expected_verb = z @ model.verb_head.weight.T + model.verb_head.bias
        expected_noun = z @ model.noun_head.weight.T + model.noun_head.bias
    torch.testing.assert_close(out.verb_logits, expected_verb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.noun_logits, expected_noun, rtol=1e-5, atol=1e-5)
    assert out.verb_logits.abs().mean() > 0.1
    # The probe never sees the adapter: the model holds no adapter weights and no text model.
    assert model.mambavl.vision.norm is None and model.mambavl.vision.proj is None
    assert model.mambavl.questions is None


def test_only_the_norm_and_heads_train_and_the_backbone_stays_frozen_in_eval_mode(tmp_path):
    model = _probe("videomae").train()
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["mambavl.fusion.norm.bias", "mambavl.fusion.norm.weight", "noun_head.bias",
                         "noun_head.weight", "verb_head.bias", "verb_head.weight"]
    assert not model.mambavl.vision.backbone.training and model.verb_head.training
    out = model(pixel_values=torch.randn(2, 4, 3, 32, 32), labels=torch.tensor([5, 9]))
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)
    # The optimizer groups hold only "rest" (the frozen backbone is not passed to the optimizer).
    _, specs = build_param_groups(model, lr=1e-3, lr_backbone=1e-4, weight_decay=0.05)
    assert {spec.name.split("/")[0] for spec in specs} == {"rest"}
    assert sorted(n for spec in specs for n in spec.params) == trainable

    model.save_pretrained(tmp_path / "probe")
    loaded = MambaVLForVideoClassification.from_pretrained(tmp_path / "probe").train()
    assert not any(p.requires_grad for p in loaded.mambavl.vision.backbone.parameters())
    assert not loaded.mambavl.vision.backbone.training
    pixels = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(pixel_values=pixels).logits, model.eval()(pixel_values=pixels).logits)


def test_from_backbones_freezes_the_pretrained_backbone(tmp_path):
    from transformers import VideoMAEConfig, VideoMAEModel

    VideoMAEModel(VideoMAEConfig(**VISION, tubelet_size=2)).save_pretrained(tmp_path / "videomae")
    model = MambaVLForVideoClassification.from_backbones(vision=str(tmp_path / "videomae"), fusion_type="linear_probe",
                                                         hidden_size=16).train()
    assert not any(p.requires_grad for p in model.mambavl.vision.backbone.parameters())
    assert not model.mambavl.vision.backbone.training


def test_questions_are_ignored_and_features_follow_the_model_dtype():
    model = _probe("features").eval()
    features = torch.randn(2, 5, 24)
    ids = torch.randint(3, 50, (2, 2, 6))
    with torch.no_grad():
        torch.testing.assert_close(model(video_features=features, question_input_ids=ids).logits,
                                   model(video_features=features).logits)
        out = model.to(torch.bfloat16)(video_features=features)  # float32 features into a bf16 model
    assert out.verb_logits.dtype == torch.bfloat16


def test_identity_adapter_feeds_the_tokens_to_the_ssm_fusion_unchanged():
    config = MambaVLConfig.from_preset("features-768", hidden_size=32, vision_feature_dim=32,
                                       vision_adapter="identity", scan_backend="reference",
                                       text_config={"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 0,
                                                    "num_attention_heads": 2, "intermediate_size": 32})
    model = MambaVLForVideoClassification(config).eval()
    features = torch.randn(2, 9, 32)
    tokens, _ = model.mambavl.vision(video_features=features)
    assert torch.equal(tokens, features)
    assert not [n for n, _ in model.named_parameters() if n.startswith("mambavl.vision")]
