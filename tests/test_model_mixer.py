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


# --- recomputation: the same outputs and gradients, less kept for the backward --------------------------------------


def run_mixer_levels(backend: str, length: int = 50, chunk_size: int | None = 7, dtype=None, device: str = "cpu",
                     levels=("none", "speed", "memory"), recompute_chunk_size: int | None = None) -> dict:
    """Output, input gradient, parameter gradients and the gradients of a given initial (conv context, scan state)
    of one mixer at each recompute level: (batch 2, ``length``) tokens with padding at both ends, run in pieces of
    ``chunk_size`` (at the recomputing levels, of at most ``recompute_chunk_size`` too), under autocast to ``dtype``
    when given. Returns {level: (out, grads dict)}."""
    torch.manual_seed(0)
    mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True, scan_backend=backend, chunk_size=chunk_size,
                         recompute_chunk_size=recompute_chunk_size)
    mixer.load_state_dict(_hf_mixer().state_dict())
    mixer.to(device)
    x = torch.randn(2, length, D, device=device)
    mask = torch.ones(2, length, dtype=torch.long, device=device)
    mask[0, :5] = 0
    mask[1, -9:] = 0
    context0 = torch.randn(2, EXPAND * D, 3, device=device)
    state0 = torch.randn(2, EXPAND * D, N, device=device)
    weights = torch.randn(2, length, D, device=device)
    results = {}
    for level in levels:
        mixer.recompute = level
        mixer.zero_grad()
        leaves = [t.clone().requires_grad_() for t in (x, context0, state0)]
        with torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            A = -torch.exp(mixer.A_log.float())
            # A piece continuing from a given state, as the pieces after the first do, then the whole sequence.
            head, _ = mixer._run_piece(level, leaves[0][:, :5], mask[:, :5], A, leaves[1], leaves[2])
            out = mixer(leaves[0], mask)
        ((out.float() * weights).sum() + (head.float() * weights[:, :5]).sum()).backward()
        grads = {name: p.grad.clone() for name, p in mixer.named_parameters()}
        grads.update(x=leaves[0].grad, conv_context=leaves[1].grad, initial_state=leaves[2].grad)
        results[level] = (out.detach(), grads)
    return results


def assert_levels_match(results: dict, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    ref_out, ref_grads = results["none"]
    assert all(g.abs().max() > 0 for g in ref_grads.values())  # every gradient is exercised
    for level, (out, grads) in results.items():
        torch.testing.assert_close(out, ref_out, rtol=rtol, atol=atol, msg=level)
        assert set(grads) == set(ref_grads)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[name], rtol=10 * rtol, atol=10 * atol,
                                       msg=f"{level}: {name}")


@pytest.mark.parametrize("backend", ["cpu", "portable", "reference"])
def test_recompute_levels_give_the_same_outputs_and_gradients(backend):
    """Keeping only the input projection ("speed") or only the input ("memory") and recomputing the rest piece by
    piece gives the outputs and every gradient of keeping everything: pieces, padding, a given initial state."""
    assert_levels_match(run_mixer_levels(backend))


def test_recompute_levels_under_bf16_autocast():
    results = run_mixer_levels("cpu", length=30, chunk_size=8, dtype=torch.bfloat16)
    assert results["none"][0].dtype == torch.bfloat16
    # The recomputation replays the same bf16 operations: the results are those of keeping everything.
    assert_levels_match(results, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("chunk_size, recompute_chunk_size", [(5, 512), (None, 4)])
def test_recompute_levels_with_gradient_checkpointing(chunk_size, recompute_chunk_size):
    """The fusion layer's own activation checkpointing wraps the mixers' per-piece recomputation."""
    grads = {}
    for level in ("none", "memory", "speed"):
        model = _ssm_model(mixer_recompute=level, mixer_chunk_size=chunk_size,
                           mixer_recompute_chunk_size=recompute_chunk_size)
        model.train()
        model.activation_checkpointing_enable()
        assert model.fusion.layers[0].gradient_checkpointing
        assert {m.recompute for m in (model.fusion.layers[0].video_mixer, model.fusion.layers[0].text_mixer)} == {
            level}
        torch.manual_seed(1)
        inputs = dict(video_features=torch.randn(2, 23, 24), question_input_ids=torch.randint(3, 64, (2, 2, 7)),
                      question_attention_mask=torch.tensor([[1] * 7, [1] * 5 + [0] * 2]).expand(2, 2, 7))
        out = model(**inputs)
        (out.last_hidden_state.square().sum() + out.question_last_hidden_state.square().sum()).backward()
        grads[level] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert len(grads["none"]) > 10
    for level in ("memory", "speed"):
        assert set(grads[level]) == set(grads["none"])
        for name, grad in grads[level].items():
            torch.testing.assert_close(grad, grads["none"][name], rtol=1e-4, atol=1e-5, msg=f"{level}: {name}")


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_recompute_pieces_shorter_than_the_chunk_size_give_the_same_results(dtype, monkeypatch):
    """At the recomputing levels pieces are at most ``recompute_chunk_size`` tokens, also where ``chunk_size`` would
    run one pass (None) or longer pieces: outputs and every gradient (padding, a given initial state, bf16 autocast)
    are those of keeping everything in one pass."""
    passes = []
    scan_inputs = MambaVLMixer._scan_inputs  # every pass, forward or recomputed, at every level
    monkeypatch.setattr(MambaVLMixer, "_scan_inputs",
                        lambda self, x, *a: passes.append(x.shape[1]) or scan_inputs(self, x, *a))
    for chunk_size in (None, 30):
        passes.clear()
        results = run_mixer_levels("cpu", length=30, chunk_size=chunk_size, recompute_chunk_size=7, dtype=dtype)
        # none: the head and one pass; each recomputing level: the head and 5 pieces of 6, forward and backward.
        assert sorted(passes) == sorted([5, 30] + 2 * ([5] * 2 + [6] * 10)), chunk_size
        assert_levels_match(results, *((1e-2, 1e-3) if dtype else ()))


def _graph_nodes(output: torch.Tensor) -> list[str]:
    """The names of the autograd nodes ``output`` depends on."""
    names, seen, stack = [], set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return names


def test_recomputing_pieces_build_no_graph_in_the_forward():
    """A recomputing piece's forward records one node for the whole piece, not one per operation (nodes that would
    stay allocated until the backward between the pieces' intermediates); the carries pass through slots."""
    mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True, chunk_size=8)
    x = torch.randn(2, 20, D, requires_grad=True)
    for level in ("none", "speed", "memory"):
        mixer.recompute = level
        names = _graph_nodes(mixer(x))
        inner = {"ConvolutionBackward0", "SiluBackward0", "SoftplusBackward0"} & set(names)
        if level == "none":
            assert inner, names
            continue
        assert not inner, (level, names)
        assert names.count("RecomputedPieceBackward") == 3, (level, names)
        assert names.count("CopyBackwards") == 4, (level, names)  # the two carries after each but the last piece


def test_recompute_keeps_only_the_input_or_its_projection(monkeypatch):
    """What a recomputed piece holds for the backward: the piece's input at "memory", the input projection's output
    at "speed"; the intermediates are recomputed when the backward reaches the piece."""
    from modeling_mambavl.mixer import RecomputedPiece

    held = []
    apply = RecomputedPiece.apply

    def spy(mixer, projected, inputs, *args):
        held.append(("_mix_projected" if projected else "_mix", inputs.shape))
        return apply(mixer, projected, inputs, *args)

    monkeypatch.setattr(RecomputedPiece, "apply", spy)
    mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True, chunk_size=8)
    x = torch.randn(1, 20, D)
    for level, (name, width) in {"memory": ("_mix", D), "speed": ("_mix_projected", 4 * D)}.items():
        held.clear()
        mixer.recompute = level
        mixer(x).sum().backward()
        assert held == [(name, (1, 7, width))] * 2 + [(name, (1, 6, width))], level
    held.clear()
    with torch.no_grad():  # nothing to keep: no checkpoint
        mixer(x)
    mixer.recompute = "none"
    mixer(x).sum().backward()
    assert held == []
    with pytest.raises(ValueError, match="recompute='all' is not one of none, speed, memory"):
        MambaVLMixer(D, EXPAND * D, recompute="all")


def test_mixer_recompute_comes_from_the_config():
    assert MambaVLConfig().mixer_recompute == "none"  # every intermediate kept until a GPU has measured the recomputing levels
    assert MambaVLConfig().mixer_recompute_chunk_size == 512
    fusion = MambaVLSSMFusion(MambaVLConfig(vision_feature_dim=D, hidden_size=D, state_size=N,
                                            mixer_recompute_chunk_size=None))
    assert fusion.layers[0].video_mixer.recompute_chunk_size is None
    fusion = MambaVLSSMFusion(MambaVLConfig(vision_feature_dim=D, hidden_size=D, state_size=N,
                                            mixer_recompute_chunk_size=6))
    assert {m.recompute_chunk_size for m in (fusion.layers[0].video_mixer, fusion.layers[0].text_mixer)} == {6}
    for level in ("none", "speed", "memory"):
        fusion = MambaVLSSMFusion(MambaVLConfig(vision_feature_dim=D, hidden_size=D, state_size=N,
                                                mixer_recompute=level))
        assert {m.recompute for m in (fusion.layers[0].video_mixer, fusion.layers[0].text_mixer)} == {level}


def test_pieces_keep_no_full_piece_intermediate_for_the_backward():
    """At the recompute levels, what the graph keeps for the backward is the parameters, the pieces' inputs (views of
    the mixer's input), their projections at "speed", the state matrix and the small carries: the carried convolution context is a copy, not a
    slice that would keep a piece's (batch, d_inner, piece) convolution input alive."""
    mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True, chunk_size=8)
    mixer.load_state_dict(_hf_mixer().state_dict())
    x = torch.randn(2, 20, D, requires_grad=True)
    carry_bytes = 2 * EXPAND * D * max(N, 3) * 4
    for level, piece_width in (("memory", D), ("speed", 2 * EXPAND * D)):
        mixer.recompute = level
        kept = []

        def pack(t, kept=kept):
            kept.append((tuple(t.shape), t.untyped_storage().nbytes(), t.untyped_storage().data_ptr()))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = mixer(x)
        out.sum().backward()
        pieces = [k for k in kept if k[2] == x.untyped_storage().data_ptr()]
        if level == "memory":
            assert [k[0] for k in pieces] == [(2, 7, D), (2, 7, D), (2, 6, D)]
        parameters = {p.untyped_storage().data_ptr() for p in mixer.parameters()}
        others = [k for k in kept if k[2] != x.untyped_storage().data_ptr() and k[2] not in parameters]
        assert all(nbytes <= max(carry_bytes, 2 * 7 * piece_width * 4) for _, nbytes, _ in others), (level, others)
        assert max(nbytes for shape, nbytes, _ in others if shape[-1] == 3) <= 2 * EXPAND * D * 3 * 4, level


def test_each_piece_output_is_released_before_the_next_piece_runs(monkeypatch):
    """Pieces write into the full-length output as they finish: no piece's output is alive while the next one runs
    (a list of outputs for one cat at the end would keep them all), and the result and gradients are unchanged."""
    import gc
    import weakref

    mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True, chunk_size=8, recompute="memory")
    mixer.load_state_dict(_hf_mixer().state_dict())
    x = torch.randn(2, 20, D, requires_grad=True)
    weights = torch.randn(2, 20, D)
    previous = []
    run_piece = mixer._run_piece

    def spy(*args, **kwargs):
        gc.collect()
        assert all(ref() is None for ref in previous), "a previous piece's output is still alive"
        out, carry = run_piece(*args, **kwargs)
        previous.append(weakref.ref(out))
        return out, carry

    monkeypatch.setattr(mixer, "_run_piece", spy)
    out = mixer(x)
    assert len(previous) == 3
    (out * weights).sum().backward()
    monkeypatch.undo()
    reference_x = x.detach().clone().requires_grad_()
    mixer.chunk_size = None
    reference = mixer(reference_x)
    (reference * weights).sum().backward()
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, reference_x.grad, rtol=1e-4, atol=1e-5)


def test_place_piece_writes_a_slice_and_passes_gradients_through():
    from modeling_mambavl.mixer import PlacePiece

    pieces = [torch.randn(2, n, 3, requires_grad=True) for n in (4, 4, 2)]
    output, start = torch.empty(2, 10, 3), 0
    for piece in pieces:
        output = PlacePiece.apply(output, piece, start)
        start += piece.shape[1]
    torch.testing.assert_close(output, torch.cat(pieces, dim=1), rtol=0, atol=0)
    weights = torch.randn(2, 10, 3)
    (output * weights).sum().backward()
    for piece, expected in zip(pieces, weights.split([4, 4, 2], dim=1)):
        torch.testing.assert_close(piece.grad, expected, rtol=0, atol=0)


def test_recomputing_levels_take_gradients_through_autograd_grad():
    """The recomputed pieces' parameters are inputs of their autograd node: ``torch.autograd.grad`` returns the
    gradients ``backward`` accumulates, at every level, and leaves ``.grad`` untouched."""
    mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True, chunk_size=8)
    mixer.load_state_dict(_hf_mixer().state_dict())
    x = torch.randn(2, 20, D, requires_grad=True)
    weights = torch.randn(2, 20, D)
    parameters = dict(mixer.named_parameters())
    expected = None
    for level in ("none", "speed", "memory"):
        mixer.recompute = level
        grads = torch.autograd.grad((mixer(x) * weights).sum(), [x, *parameters.values()])
        assert all(p.grad is None for p in parameters.values()), level
        if expected is None:
            expected = grads
            continue
        for name, grad, reference in zip(["x", *parameters], grads, expected):
            torch.testing.assert_close(grad, reference, rtol=1e-4, atol=1e-5, msg=f"{level}: {name}")


def test_recomputing_backward_runs_neither_the_scan_nor_the_output_projection_forward(monkeypatch):
    """The backward recomputes the scan's inputs only: the CPU kernel's forward and the output projection run once
    per piece, in the forward; the scan's output comes from its backward."""
    from modeling_mambavl.ops import available_backends, cpu

    if "cpu" not in available_backends("cpu"):
        pytest.skip("the CPU kernel cannot be built here")
    forwards, projections = [], []
    real_forward = cpu.forward
    monkeypatch.setattr(cpu, "forward", lambda *a: forwards.append(a[0].shape[-1]) or real_forward(*a))
    mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True, chunk_size=8, scan_backend="cpu")
    linear = torch.nn.Linear.forward  # counted without a hook: a hooked output projection takes the general path
    monkeypatch.setattr(torch.nn.Linear, "forward", lambda module, x: (
        module is mixer.out_proj and projections.append(x.shape[1])) or linear(module, x))
    x = torch.randn(2, 20, D, requires_grad=True)
    for level in ("speed", "memory"):
        mixer.recompute = level
        forwards.clear()
        projections.clear()
        out = mixer(x)
        assert forwards == projections == [7, 7, 6], level
        out.sum().backward()
        assert forwards == projections == [7, 7, 6], level


def test_an_adapted_output_projection_is_recomputed_through_autograd():
    """A LoRA adapter (PEFT) on the mixers' projections: the output projection is no plain ``nn.Linear``, so its
    backward cannot be taken by hand; the recomputing levels then recompute the piece through autograd, and the
    adapters' gradients equal those of keeping everything."""
    peft = pytest.importorskip("peft")
    results = {}
    for level in ("none", "speed", "memory"):
        torch.manual_seed(0)
        mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True, chunk_size=8)
        mixer.load_state_dict(_hf_mixer().state_dict())
        mixer.recompute = level
        model = peft.get_peft_model(torch.nn.Sequential(mixer), peft.LoraConfig(
            r=4, target_modules=["in_proj", "out_proj"], init_lora_weights=False))
        adapted = model.base_model.model[0]
        assert type(adapted.out_proj) is not torch.nn.Linear
        x = torch.randn(2, 20, D, requires_grad=True)
        (adapted(x) * torch.linspace(-1, 1, D)).sum().backward()
        results[level] = {n: p.grad for n, p in model.named_parameters() if p.requires_grad} | {"x": x.grad}
    assert any("out_proj.lora_B" in n for n in results["none"])
    for level in ("speed", "memory"):
        assert set(results[level]) == set(results["none"])
        for name, grad in results[level].items():
            assert grad is not None, (level, name)
            torch.testing.assert_close(grad, results["none"][name], rtol=1e-4, atol=1e-5, msg=f"{level}: {name}")


def test_an_output_projection_with_a_bias_gets_its_gradient_at_the_recomputing_levels():
    """An output projection with a bias (as a Mamba ported with ``use_bias=True`` has) is a plain ``nn.Linear``,
    but the backward by hand takes only its weight's gradient: the bias's gradient must not be dropped."""
    results = {}
    for level in ("none", "speed", "memory"):
        torch.manual_seed(0)
        mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True, chunk_size=8, recompute=level)
        mixer.load_state_dict(_hf_mixer().state_dict())
        mixer.out_proj = torch.nn.Linear(EXPAND * D, D, bias=True)
        x = torch.randn(2, 20, D, requires_grad=True)
        out = mixer(x)
        (out * torch.linspace(-1, 1, D)).sum().backward()
        results[level] = {n: p.grad for n, p in mixer.named_parameters()} | {"x": x.grad, "out": out.detach()}
    assert results["none"]["out_proj.bias"].abs().max() > 0
    for level in ("speed", "memory"):
        for name, grad in results[level].items():
            assert grad is not None, (level, name)
            torch.testing.assert_close(grad, results["none"][name], rtol=1e-4, atol=1e-5, msg=f"{level}: {name}")


@pytest.mark.parametrize("register", ["register_full_backward_hook", "register_full_backward_pre_hook"])
def test_backward_hooks_on_the_output_projection_run_at_the_recomputing_levels(register):
    """A backward hook on the output projection (gradient logging, attribution, a hook that rescales the gradient)
    runs once per piece and acts on the gradients at every level, as it does when everything is kept: the backward
    by hand, which never calls the module, would skip it."""
    results, calls = {}, []
    for level in ("none", "speed", "memory"):
        torch.manual_seed(0)
        mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True, chunk_size=8, recompute=level)
        mixer.load_state_dict(_hf_mixer().state_dict())
        # Returns the first gradient doubled: grad_input for a backward hook, grad_output for a pre-hook.
        getattr(mixer.out_proj, register)(lambda module, *grads, level=level: (calls.append(level), (2 * grads[0][0],))[1])
        x = torch.randn(2, 20, D, requires_grad=True)
        (mixer(x) * torch.linspace(-1, 1, D)).sum().backward()
        results[level] = {n: p.grad for n, p in mixer.named_parameters()} | {"x": x.grad}
    assert calls == ["none"] * 3 + ["speed"] * 3 + ["memory"] * 3  # three pieces each
    for level in ("speed", "memory"):
        for name, grad in results[level].items():
            torch.testing.assert_close(grad, results["none"][name], rtol=1e-4, atol=1e-5, msg=f"{level}: {name}")


def test_an_adapted_time_step_projection_acts_at_every_level():
    """A LoRA adapter on ``dt_proj`` (PEFT) changes the time steps as merging it into the weight would, and gets its
    gradients, at every level: using ``dt_proj.weight`` directly would ignore the adapter (no effect, no gradient)."""
    peft = pytest.importorskip("peft")
    x = torch.randn(2, 20, D)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, 14:] = 0
    results = {}
    for level in ("none", "speed", "memory"):
        torch.manual_seed(0)
        mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True, chunk_size=8, recompute=level)
        mixer.load_state_dict(_hf_mixer().state_dict())
        model = peft.get_peft_model(torch.nn.Sequential(mixer), peft.LoraConfig(
            r=4, target_modules=["dt_proj"], init_lora_weights=False))
        adapted = model.base_model.model[0]
        outs = [adapted(x), adapted(x, mask)]
        sum((out * torch.linspace(-1, 1, D)).sum() for out in outs).backward()
        results[level] = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        with torch.no_grad():
            merged = model.merge_and_unload()[0]
            assert type(merged.dt_proj) is torch.nn.Linear
            for out, expected in zip(outs, [merged(x), merged(x, mask)]):
                torch.testing.assert_close(out.detach(), expected, rtol=1e-4, atol=1e-5, msg=level)
    assert len(results["none"]) == 2 and all(g.abs().max() > 0 for g in results["none"].values())
    for level in ("speed", "memory"):
        assert set(results[level]) == set(results["none"])
        for name, grad in results[level].items():
            torch.testing.assert_close(grad, results["none"][name], rtol=1e-4, atol=1e-5, msg=f"{level}: {name}")


def test_recomputing_levels_use_the_parameters_the_forward_was_given():
    """``torch.func.functional_call`` runs the mixer with other parameter tensors than the module holds once it
    returns: the backward recomputes with those it was given, so every one of them gets the gradient of keeping
    everything, and the module's own get none."""
    results = {}
    for level in ("none", "speed", "memory"):
        torch.manual_seed(0)
        mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True, chunk_size=8, recompute=level)
        mixer.load_state_dict(_hf_mixer().state_dict())
        given = {name: (1.5 * p.detach()).requires_grad_() for name, p in mixer.named_parameters()}
        x = torch.randn(2, 20, D, requires_grad=True)
        out = torch.func.functional_call(mixer, given, (x,))
        (out * torch.linspace(-1, 1, D)).sum().backward()
        assert all(p.grad is None for p in mixer.parameters()), level
        results[level] = {n: p.grad for n, p in given.items()} | {"x": x.grad, "out": out.detach()}
    for level in ("speed", "memory"):
        for name, grad in results[level].items():
            assert grad is not None, (level, name)
            torch.testing.assert_close(grad, results["none"][name], rtol=1e-4, atol=1e-5, msg=f"{level}: {name}")


@pytest.mark.parametrize("adaptation", ["hook", "lora"])
def test_an_adapted_convolution_acts_on_every_piece(adaptation):
    """A forward hook or a LoRA adapter (PEFT) on ``conv1d`` acts on every piece, not only on the first (the pieces
    after it continue from the carried context): outputs and gradients in pieces at every level are those of one
    pass keeping everything."""
    x = torch.randn(2, 20, D)
    weights = torch.randn(2, 20, D)
    results = {}
    for level, chunk_size in (("none", None), ("none", 8), ("speed", 8), ("memory", 8)):
        torch.manual_seed(0)
        mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True, chunk_size=chunk_size, recompute=level)
        mixer.load_state_dict(_hf_mixer().state_dict())
        module = mixer
        if adaptation == "hook":
            mixer.conv1d.register_forward_hook(lambda conv, inputs, output: 0.5 * output)
        else:  # PEFT's depthwise-convolution LoRA needs a rank divisible by the groups
            peft = pytest.importorskip("peft")
            module = peft.get_peft_model(torch.nn.Sequential(mixer), peft.LoraConfig(
                r=EXPAND * D, target_modules=["conv1d"], init_lora_weights=False))
        leaf = x.clone().requires_grad_()
        out = module(leaf)
        (out * weights).sum().backward()
        results[level, chunk_size] = {n: p.grad for n, p in module.named_parameters() if p.requires_grad} | {
            "x": leaf.grad, "out": out.detach()}
    reference = results["none", None]
    for key, result in results.items():
        assert set(result) == set(reference)
        for name, value in result.items():
            torch.testing.assert_close(value, reference[name], rtol=1e-4, atol=1e-5, msg=f"{key}: {name}")


def test_recomputed_pieces_sum_their_parameter_gradients_once_per_backward():
    """The pieces' parameter gradients are summed in place and returned once, by the first piece: a second backward
    through a retained graph adds the same gradients again, also after a backward that failed half-way."""
    mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True, chunk_size=8)
    mixer.load_state_dict(_hf_mixer().state_dict())
    x = torch.randn(2, 20, D, requires_grad=True)
    weights = torch.randn(2, 20, D)
    mixer.recompute = "none"
    (mixer(x) * weights).sum().backward()
    expected = {n: p.grad.clone() for n, p in mixer.named_parameters()}
    mixer.recompute = "memory"
    mixer.zero_grad()
    loss = (mixer(x) * weights).sum()
    calls = []

    def fail_in_the_second_piece(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("fails half-way")

    hook = mixer.in_proj.register_full_backward_hook(fail_in_the_second_piece)
    with pytest.raises(RuntimeError, match="fails half-way"):
        loss.backward(retain_graph=True)  # the second piece's backward fails after the third's summed
    hook.remove()
    assert all(p.grad is None for p in mixer.parameters())
    loss.backward(retain_graph=True)
    loss.backward()
    for name, p in mixer.named_parameters():
        torch.testing.assert_close(p.grad, 2 * expected[name], rtol=1e-4, atol=1e-5, msg=name)


def test_second_order_gradients_through_a_recomputed_piece_are_refused():
    mixer = MambaVLMixer(D, EXPAND * D, N, 4, owns_state_matrix=True, chunk_size=8, recompute="memory")
    x = torch.randn(2, 20, D, requires_grad=True)
    (grad,) = torch.autograd.grad(mixer(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()
