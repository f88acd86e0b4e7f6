"""The vision adapter: canonical token order ([CLS] + frame-major t, h, w) whatever the backbone, and its inputs."""


import pytest
import torch
from torch import nn
from transformers import CONFIG_MAPPING

from modeling_mambavl import MambaVLConfig, MambaVLModel
from modeling_mambavl.vision import to_canonical_order

FRAMES, SIZE, PATCH, WIDTH = 4, 48, 16, 8
GRID = SIZE // PATCH  # 3 x 3 patches per frame
HW = GRID * GRID


def _frames_that_carry_their_provenance(batch: int = 2) -> torch.Tensor:
    """pixel_values (batch, T, 3, H, W) whose every pixel of frame t in patch k equals 100 t + k."""
    t = torch.arange(FRAMES).view(FRAMES, 1, 1)
    rows = torch.arange(SIZE).view(1, SIZE, 1) // PATCH
    cols = torch.arange(SIZE).view(1, 1, SIZE) // PATCH
    value = (100 * t + rows * GRID + cols).float()  # (T, H, W)
    return value.unsqueeze(1).expand(FRAMES, 3, SIZE, SIZE).unsqueeze(0).repeat(batch, 1, 1, 1, 1)


def _model(vision_config: dict) -> MambaVLModel:
    vision = CONFIG_MAPPING[vision_config.pop("model_type")](
        image_size=SIZE, patch_size=PATCH, num_frames=FRAMES, hidden_size=WIDTH, num_hidden_layers=0,
        num_attention_heads=2, intermediate_size=16, **vision_config,
    )
    config = MambaVLConfig.from_preset("tiny", hidden_size=16, num_frames=FRAMES, image_size=SIZE, vision_config=vision)
    return MambaVLModel(config).eval()


def _make_transparent(backbone: nn.Module, conv: nn.Module) -> None:
    """Channel 0 of each token = mean pixel value of its patch (or tubelet); nothing else added."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0].fill_(1.0 / conv.weight[0].numel())
        conv.bias.zero_()
    if hasattr(backbone, "layernorm"):
        backbone.layernorm = nn.Identity()


def test_timesformer_tokens_are_reordered_frame_major():
    model = _model({"model_type": "timesformer"})
    backbone = model.vision.backbone
    _make_transparent(backbone, backbone.embeddings.patch_embeddings.projection)
    with torch.no_grad():
        for p in (backbone.embeddings.cls_token, backbone.embeddings.position_embeddings,
                  backbone.embeddings.time_embeddings):
            p.zero_()
        raw = backbone(pixel_values=_frames_that_carry_their_provenance()).last_hidden_state[..., 0]
        tokens, mask = model.vision.tokens(pixel_values=_frames_that_carry_their_provenance())
    assert mask is None and tokens.shape == (2, 1 + FRAMES * HW, WIDTH)
    # transformers' TimeSformer emits patch-major, time-minor: token 1 + k·T + t.
    assert raw[0, 1 + 1 * FRAMES + 2].item() == pytest.approx(100 * 2 + 1, abs=0.05)
    values = tokens[..., 0]
    assert values[:, 0].abs().max() == 0  # the CLS stays first
    for t in range(FRAMES):
        for k in range(HW):
            assert values[0, 1 + t * HW + k].item() == pytest.approx(100 * t + k, abs=0.05), (t, k)
    torch.testing.assert_close(values[1], values[0])


def test_videomae_tokens_are_frame_major_tubelets_without_cls():
    model = _model({"model_type": "videomae", "tubelet_size": 2})
    backbone = model.vision.backbone
    _make_transparent(backbone, backbone.embeddings.patch_embeddings.projection)
    backbone.embeddings.position_embeddings = torch.zeros_like(backbone.embeddings.position_embeddings)
    with torch.no_grad():
        tokens, _ = model.vision.tokens(pixel_values=_frames_that_carry_their_provenance())
    temporal = FRAMES // 2
    assert tokens.shape == (2, temporal * HW, WIDTH)
    for t in range(temporal):  # tubelet t covers frames 2t and 2t + 1
        for k in range(HW):
            assert tokens[0, t * HW + k, 0].item() == pytest.approx(100 * (2 * t + 0.5) + k, abs=0.05), (t, k)


def test_adapter_is_norm_linear_tanh_per_token():
    model = _model({"model_type": "videomae", "tubelet_size": 2})
    pixels = torch.randn(2, FRAMES, 3, SIZE, SIZE)
    with torch.no_grad():
        tokens, _ = model.vision.tokens(pixel_values=pixels)
        adapted, _ = model.vision(pixel_values=pixels)
        expected = torch.tanh(model.vision.proj(model.vision.norm(tokens)))
    assert adapted.shape == (2, tokens.shape[1], 16)
    torch.testing.assert_close(adapted, expected)


def test_features_in_patch_major_order_are_reordered_with_their_mask():
    tokens = torch.arange(1 + 3 * 4).view(1, -1, 1).float()  # CLS, then 4 patches x 3 times, patch-major
    canonical = to_canonical_order(tokens, has_cls=True, order="hwt", temporal_size=3)
    # patch-major index 1 + k*3 + t must land at 1 + t*4 + k
    assert canonical[0, :, 0].tolist() == [0] + [1 + k * 3 + t for t in range(3) for k in range(4)]
    mask = torch.ones(1, 13, dtype=torch.long)
    assert to_canonical_order(mask, True, "hwt", 3).shape == (1, 13)
    with pytest.raises(ValueError, match="cannot be split into 5 temporal positions"):
        to_canonical_order(tokens, True, "hwt", 5)

    config = MambaVLConfig.from_preset("features-768", hidden_size=16, vision_feature_dim=4, video_token_order="hwt",
                                       video_temporal_size=3, fusion_type="none")
    model = MambaVLModel(config)
    features = torch.randn(2, 13, 4)
    reordered, _ = model.vision.tokens(video_features=features)
    torch.testing.assert_close(reordered, to_canonical_order(features, True, "hwt", 3))


def test_wrong_video_inputs_name_the_argument_and_shapes():
    model = _model({"model_type": "videomae", "tubelet_size": 2})
    with pytest.raises(ValueError, match=r"pixel_values: expected shape \(batch, 4, channels, height, width\).*"
                                         r"got \(2, 3, 3, 48, 48\)"):
        model(pixel_values=torch.randn(2, 3, 3, SIZE, SIZE), question_input_ids=torch.ones(2, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="video_features: this model runs its vision backbone"):
        model(video_features=torch.randn(2, 5, WIDTH))
    features_model = MambaVLModel(MambaVLConfig.from_preset("features-768", hidden_size=16, vision_feature_dim=4,
                                                            fusion_type="none"))
    with pytest.raises(ValueError, match=r"video_features: expected shape \(batch, tokens, 4\), got \(2, 5, 3\)"):
        features_model(video_features=torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"video_attention_mask: expected shape \(2, 5\)"):
        features_model(video_features=torch.randn(2, 5, 4), video_attention_mask=torch.ones(2, 6))
    with pytest.raises(ValueError, match="exactly one of pixel_values"):
        features_model()
