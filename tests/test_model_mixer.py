"""The Mamba mixers against transformers' MambaMixer, and the one shared state matrix of SSM fusion."""


import pytest
import torch
from transformers import MambaConfig
from transformers.models.mamba.modeling_mamba import MambaMixer

from modeling_mambavl import MambaVLConfig, MambaVLModel
from modeling_mambavl.fusion import MambaVLSSMFusion
from modeling_mambavl.mixer import MambaVLMixer

D, N, EXPAND = 16, 8, 2


def _hf_mixer(seed: int = 0) -> MambaMixer:
    torch.manual_seed(seed)
    config = MambaConfig(hidden_size=D, state_size=N, expand=EXPAND, conv_kernel=4, num_hidden_layers=1,
                         use_mambapy=False)
    mixer = MambaMixer(config, layer_idx=0).eval()
    with torch.no_grad():  # non-trivial values everywhere, so a wrong wiring cannot hide
        mixer.A_log.add_(0.3 * torch.randn_like(mixer.A_log))
        mixer.D.add_(0.5 * torch.randn_like(mixer.D))
        mixer.conv1d.bias.normal_()
    return mixer


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("owns_state_matrix", [True, False])
def test_mixer_matches_transformers_mamba_mixer(owns_state_matrix):
    hf = _hf_mixer()
    ours = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=owns_state_matrix, scan_backend="reference").eval()
    state = {k: v for k, v in hf.state_dict().items() if owns_state_matrix or k != "A_log"}
    ours.load_state_dict(state, strict=True)  # same parameter names and shapes as MambaMixer
    x = torch.randn(3, 24, D)
    with torch.no_grad():
        expected = hf(x)
        got = ours(x) if owns_state_matrix else ours(x, A_log=hf.A_log)
    assert _relative_error(got, expected) < 1e-4
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_fusion_mixers_each_match_mamba_mixer_with_the_shared_A():
    config = MambaVLConfig(vision_feature_dim=D, hidden_size=D, state_size=N, scan_backend="reference")
    fusion = MambaVLSSMFusion(config).eval()
    layer = fusion.layers[0]
    hf_video, hf_text = _hf_mixer(1), _hf_mixer(2)
    hf_text.A_log.data.copy_(hf_video.A_log.data)  # one A for both modalities
    with torch.no_grad():
        layer.A_log.copy_(hf_video.A_log)
    layer.video_mixer.load_state_dict({k: v for k, v in hf_video.state_dict().items() if k != "A_log"})
    layer.text_mixer.load_state_dict({k: v for k, v in hf_text.state_dict().items() if k != "A_log"})
    video, questions = torch.randn(2, 20, D), torch.randn(2, 2, 9, D)
    with torch.no_grad():
        out = fusion(video, None, questions, None)
        expected_video, expected_text = hf_video(video), hf_text(questions.reshape(4, 9, D)).reshape(2, 2, 9, D)
    assert _relative_error(out.video_states, expected_video) < 1e-4
    assert _relative_error(out.question_states, expected_text) < 1e-4
    torch.testing.assert_close(out.pooled, expected_video.mean(1, keepdim=True) + expected_text.mean(2))


def _ssm_model(**overrides) -> MambaVLModel:
    config = MambaVLConfig.from_preset("features-768", hidden_size=32, vision_feature_dim=24,
                                       text_config={"hidden_size": 16, "vocab_size": 64, "num_attention_heads": 2,
                                                    "intermediate_size": 32, "max_position_embeddings": 32},
                                       scan_backend="reference", **overrides)
    torch.manual_seed(0)
    return MambaVLModel(config)


def test_both_mixers_read_the_one_shared_A_log():
    model = _ssm_model()
    names = [n for n, _ in model.named_parameters(remove_duplicate=False) if n.endswith("A_log")]
    assert names == ["fusion.layers.0.A_log"]  # registered once, on the fusion layer
    layer = model.fusion.layers[0]
    assert layer.video_mixer.A_log is None and layer.text_mixer.A_log is None
    inputs = dict(video_features=torch.randn(2, 12, 24), question_input_ids=torch.randint(3, 64, (2, 2, 7)))

    # Gradient reaches A_log from the video branch alone and from the text branch alone.
    for branch in ("last_hidden_state", "question_last_hidden_state"):
        model.zero_grad()
        getattr(model(**inputs), branch).square().sum().backward()
        assert layer.A_log.grad is not None and layer.A_log.grad.abs().sum() > 0, branch

    # Changing the one parameter changes both modalities' outputs (made state-driven: no skip, large steps).
    with torch.no_grad():
        for mixer in (layer.video_mixer, layer.text_mixer):
            mixer.D.zero_()
            mixer.dt_proj.bias.fill_(1.0)
        before = model(**inputs)
        layer.A_log.add_(0.5)
        after = model(**inputs)
    assert _relative_error(after.last_hidden_state, before.last_hidden_state) > 1e-3
    assert _relative_error(after.question_last_hidden_state, before.question_last_hidden_state) > 1e-3


def test_share_state_matrix_false_gives_each_mixer_its_own_A():
    model = _ssm_model(share_state_matrix=False)
    names = sorted(n for n, _ in model.named_parameters(remove_duplicate=False) if n.endswith("A_log"))
    assert names == ["fusion.layers.0.text_mixer.A_log", "fusion.layers.0.video_mixer.A_log"]
    layer = model.fusion.layers[0]
    assert layer.A_log is None and layer.video_mixer.A_log is not layer.text_mixer.A_log
    inputs = dict(video_features=torch.randn(2, 12, 24), question_input_ids=torch.randint(3, 64, (2, 2, 7)))
    model(**inputs).last_hidden_state.sum().backward()
    assert layer.video_mixer.A_log.grad.abs().sum() > 0 and layer.text_mixer.A_log.grad is None


def test_stacked_layers_each_share_their_own_A():
    model = _ssm_model(num_fusion_layers=3)
    names = [n for n, _ in model.named_parameters() if n.endswith("A_log")]
    assert names == [f"fusion.layers.{i}.A_log" for i in range(3)]
    assert model.fusion.layers[0].video_norm is not None and model.fusion.video_norm is not None
    assert _ssm_model().fusion.video_norm is None  # one layer: the paper's block, no norm or residual
    out = model(video_features=torch.randn(2, 12, 24), question_input_ids=torch.randint(3, 64, (2, 2, 7)),
                output_hidden_states=True)
    assert len(out.hidden_states) == 4 and len(out.question_hidden_states) == 4


def test_initialisation_is_s4d_real_with_mamba_time_steps():
    model = _ssm_model()
    config = model.config
    layer = model.fusion.layers[0]
    expected = torch.log(torch.arange(1, config.state_size + 1, dtype=torch.float32)).expand(64, -1)
    torch.testing.assert_close(layer.A_log.detach(), expected)
    for mixer in (layer.video_mixer, layer.text_mixer):
        assert torch.equal(mixer.D.detach(), torch.ones(64))
        dt = torch.nn.functional.softplus(mixer.dt_proj.bias.detach())
        assert dt.min() >= config.time_step_floor * 0.999 and dt.max() <= config.time_step_max * 1.001
        assert dt.min() < 0.01 < dt.max()  # log-uniform over [1e-3, 1e-1]


def test_padding_is_neutral_inside_the_mixer():
    """Zeroed before the conv and Δ = 0 in the scan: left, right and extra padding give the same real outputs.

    (Padding between real tokens is not neutral: the causal conv would see zeros instead of the previous tokens.)"""
    torch.manual_seed(0)
    mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True).eval()
    hf = _hf_mixer()
    mixer.load_state_dict(hf.state_dict())
    real = torch.randn(1, 7, D)
    layouts = {"right": [1] * 7 + [0] * 4, "left": [0] * 4 + [1] * 7, "both": [0] * 2 + [1] * 7 + [0] * 2}
    outputs = {}
    for name, layout in layouts.items():
        mask = torch.tensor([layout])
        x = torch.randn(1, 11, D) * 5  # garbage at the padded positions
        x[mask.bool()] = real[0]
        with torch.no_grad():
            outputs[name] = mixer(x, mask)[mask.bool()]
    with torch.no_grad():
        expected = mixer(real)[0]
    for name, out in outputs.items():
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "chunk_size, length, masked",
    [
        (16, 50, False),  # four pieces of 13
        (7, 50, True),  # with padding inside pieces
        (2, 9, False),  # pieces shorter than the convolution's context of 3
        (64, 64, False),  # one piece: the one-pass path
    ],
)
def test_long_sequences_in_pieces_equal_one_pass(chunk_size, length, masked, monkeypatch):
    """On the CPU a sequence longer than ``chunk_size`` runs in pieces carrying the conv inputs and the scan state:
    outputs and every gradient are those of one pass."""
    torch.manual_seed(0)
    mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True)
    mixer.load_state_dict(_hf_mixer().state_dict())
    x = torch.randn(2, length, D)
    mask = None
    if masked:
        mask = torch.ones(2, length, dtype=torch.long)
        mask[0, :5] = 0
        mask[1, -9:] = 0
    weights = torch.randn(2, length, D)
    passes = []
    monkeypatch.setattr(mixer, "_mix", lambda *a, _mix=mixer._mix, **k: passes.append(a[0].shape[1]) or _mix(*a, **k))
    results = []
    for chunk in (None, chunk_size):
        mixer.chunk_size = chunk
        mixer.zero_grad()
        leaf = x.clone().requires_grad_()
        out = mixer(leaf, mask)
        (out * weights).sum().backward()
        results.append((out.detach(), leaf.grad, {k: p.grad.clone() for k, p in mixer.named_parameters()}))
    pieces = -(-length // chunk_size)
    assert passes == [length] + [-(-length // pieces)] * (pieces - 1) + [length - (pieces - 1) * -(-length // pieces)]
    (out, dx, grads), (ref_out, ref_dx, ref_grads) = results[1], results[0]
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dx, ref_dx, rtol=1e-5, atol=1e-6)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_mixer_chunk_size_comes_from_the_config():
    assert MambaVLConfig().mixer_chunk_size == 2048
    fusion = MambaVLSSMFusion(MambaVLConfig(vision_feature_dim=D, hidden_size=D, state_size=N, mixer_chunk_size=5))
    assert {m.chunk_size for m in (fusion.layers[0].video_mixer, fusion.layers[0].text_mixer)} == {5}
    fusion = MambaVLSSMFusion(MambaVLConfig(vision_feature_dim=D, hidden_size=D, state_size=N, mixer_chunk_size=None))
    assert fusion.layers[0].video_mixer.chunk_size is None
    with pytest.raises(ValueError, match="mixer_chunk_size"):
        MambaVLConfig(mixer_chunk_size=0)
