"""Numerics of every available selective-scan backend against the sequential reference."""

from __future__ import annotations

import itertools

import pytest
import torch

from modeling_mambavl.ops import (
    available_backends,
    selective_scan,
    selective_scan_backward,
    selective_scan_portable,
    selective_scan_reference,
)

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def _devices():
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


# Every backend that can run here, on every device present, except the oracle itself.
CASES = [(dev, name) for dev in _devices() for name in available_backends(dev) if name != "reference"]


def make_inputs(batch, d_inner, length, n, *, with_D=True, with_z=True, with_bias=True, softplus=True, seed=0,
                dtype=torch.float32, device="cpu"):
    """Random inputs in the operator's domain: with ``softplus`` delta is any real pre-activation; without it,
    delta + delta_bias is already a time step (>= 0, as in mamba-ssm's tests), so every decay exp(dt A) is <= 1."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    return {
        "u": randn(batch, d_inner, length),
        "delta": randn(batch, d_inner, length, scale=0.5) if softplus else (
            torch.rand(batch, d_inner, length, generator=g) * 0.5).to(device=device, dtype=dtype),
        # S4D-real-like decays, -exp(A_log) in [-n, -1], plus some slow channels.
        "A": (-(torch.rand(d_inner, n, generator=g) * n + 0.05)).to(device=device, dtype=dtype),
        "B": randn(batch, n, length),
        "C": randn(batch, n, length),
        "D": randn(d_inner) if with_D else None,
        "z": randn(batch, d_inner, length) if with_z else None,
        "delta_bias": ((torch.rand(d_inner, generator=g) * 0.3).to(device=device, dtype=dtype)
                       if with_bias else None),
    }


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (max |a - b| where b is all zeros)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    diff = (a - b).abs().max().item() if b.numel() else 0.0
    scale = b.abs().max().item() if b.numel() else 0.0
    return diff / scale if scale > 0 else diff


def run_scan(fn, inputs, delta_softplus, *, grad_of_last_state=True, seed=1, **kwargs):
    """Output, last state and gradients of a random linear loss of both."""
    leaves = {k: (None if v is None else v.detach().clone().requires_grad_()) for k, v in inputs.items()}
    out, last = fn(**leaves, delta_softplus=delta_softplus, return_last_state=True, **kwargs)
    g = torch.Generator().manual_seed(seed)
    loss = (out.float() * torch.randn(out.shape, generator=g).to(out.device)).sum()
    if grad_of_last_state:
        loss = loss + (last * torch.randn(last.shape, generator=g).to(last.device)).sum()
    present = [k for k in GRAD_NAMES if leaves.get(k) is not None]
    # Zeros for inputs that do not reach the loss (an empty sequence).
    grads = torch.autograd.grad(loss, [leaves[k] for k in present], allow_unused=True, materialize_grads=True)
    return out, last, dict(zip(present, grads))


_reference_cache: dict = {}
# The sequential reference is slow at L = 2049 and its results are shared by every backend's test: one worker.
pytestmark = pytest.mark.xdist_group("selective-scan-reference")


def reference_result(key, inputs, delta_softplus, grad_of_last_state):
    full = (*key, grad_of_last_state)
    if full not in _reference_cache:
        fp32 = {k: (None if v is None else v.float().cpu()) for k, v in inputs.items()}
        _reference_cache[full] = run_scan(selective_scan_reference, fp32, delta_softplus,
                                          grad_of_last_state=grad_of_last_state)
    return _reference_cache[full]


def assert_matches(result, expected, tol, what):
    out, last, grads = result
    ref_out, ref_last, ref_grads = expected
    errors = {"out": rel_err(out, ref_out), "last_state": rel_err(last, ref_last)}
    assert set(grads) == set(ref_grads)
    for k in grads:
        assert grads[k].shape == ref_grads[k].shape, (what, k)
        errors[k] = rel_err(grads[k], ref_grads[k])
    bad = {k: v for k, v in errors.items() if not v <= tol}  # `not <=` also catches NaN
    assert not bad, f"{what}: relative errors above {tol}: {bad}"


# (D, z, delta_bias, softplus): every combination for short sequences; for L = 2049 (the sequential reference is
# slow there) four sets in which each option is both on and off.
OPTION_SETS = list(itertools.product((False, True), repeat=4))
OPTION_SETS_LONG = [(True, True, True, True), (False, False, False, False), (True, False, True, False),
                    (False, True, False, True)]


@pytest.mark.parametrize("device,backend", CASES)
@pytest.mark.parametrize("length", [1, 37, 2049])
@pytest.mark.parametrize("n", [1, 16])
def test_backend_matches_reference_fp32(device, backend, length, n):
    batch, d_inner = 2, 3
    for with_D, with_z, with_bias, softplus in (OPTION_SETS if length < 1000 else OPTION_SETS_LONG):
        inputs = make_inputs(batch, d_inner, length, n, with_D=with_D, with_z=with_z, with_bias=with_bias,
                             softplus=softplus, seed=length * 100 + n)
        key = (batch, d_inner, length, n, with_D, with_z, with_bias, softplus)
        # mamba-ssm's kernel has no gradient path through the last state (documented there and in ops/cuda.py).
        last_grad = backend != "cuda"
        expected = reference_result(key, inputs, softplus, last_grad)
        dev_inputs = {k: (None if v is None else v.to(device)) for k, v in inputs.items()}
        result = run_scan(selective_scan, dev_inputs, softplus, grad_of_last_state=last_grad, backend=backend)
        assert result[0].dtype == torch.float32 and result[1].dtype == torch.float32
        assert result[0].shape == (batch, d_inner, length) and result[1].shape == (batch, d_inner, n)
        assert_matches(result, expected, 1e-4, f"{backend} on {device}, options {key}")


@pytest.mark.parametrize("device,backend", CASES)
@pytest.mark.parametrize("length,softplus", [(37, True), (2049, True), (37, False)])
def test_backend_matches_reference_bf16(device, backend, length, softplus):
    inputs = make_inputs(2, 3, length, 16, softplus=softplus, seed=7, dtype=torch.bfloat16)
    last_grad = backend != "cuda"
    # The reference runs in float32 on the same bf16-rounded values.
    expected = reference_result(("bf16", length, softplus), inputs, softplus, last_grad)
    dev_inputs = {k: v.to(device) for k, v in inputs.items()}
    out, last, grads = run_scan(selective_scan, dev_inputs, softplus, grad_of_last_state=last_grad, backend=backend)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    assert all(grads[k].dtype == torch.bfloat16 for k in grads)
    assert_matches((out, last, grads), expected, 2e-2, f"{backend} bf16 on {device}")


def _split(inputs, start, stop):
    """The steps [start, stop) of the per-step inputs (u, delta, z, B, C); the per-channel ones as they are."""
    return {k: (v[..., start:stop] if v is not None and v.dim() == 3 else v) for k, v in inputs.items()}


def test_reference_in_pieces_equals_one_pass():
    """The initial state's semantics: a scan cut in three, each piece starting from the last state of the one before,
    gives the outputs, last state and every gradient (the initial state's too) of one pass."""
    inputs = make_inputs(2, 3, 40, 5, seed=21)
    inputs["initial_state"] = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(22))

    def in_pieces(initial_state, delta_softplus, return_last_state, **leaves):
        outs, state = [], initial_state
        for start, stop in ((0, 7), (7, 8), (8, 40)):
            out, state = selective_scan_reference(**_split(leaves, start, stop), initial_state=state,
                                                  delta_softplus=delta_softplus, return_last_state=True)
            outs.append(out)
        return torch.cat(outs, dim=-1), state

    one_pass = run_scan(selective_scan_reference, inputs, True)
    assert_matches(run_scan(in_pieces, inputs, True), one_pass, 1e-5, "reference in three pieces")
    assert one_pass[2]["initial_state"].abs().max() > 0
    # A zero initial state is the default.
    inputs["initial_state"] = torch.zeros(2, 3, 5)
    out, last, _ = run_scan(selective_scan_reference, inputs, True)
    del inputs["initial_state"]
    out0, last0, _ = run_scan(selective_scan_reference, inputs, True)
    torch.testing.assert_close(out, out0, rtol=0, atol=0)
    torch.testing.assert_close(last, last0, rtol=0, atol=0)


# mamba-ssm's kernel takes no initial state (auto then skips it; tested in test_triton.py).
INITIAL_STATE_CASES = [(dev, name) for dev, name in CASES if name != "cuda"]


@pytest.mark.parametrize("device,backend", INITIAL_STATE_CASES)
@pytest.mark.parametrize("length", [0, 1, 37, 130])
def test_initial_state_matches_reference(device, backend, length):
    inputs = make_inputs(2, 3, length, 16, seed=length + 31)
    inputs["initial_state"] = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(length))
    expected = run_scan(selective_scan_reference, inputs, True)
    dev_inputs = {k: (None if v is None else v.to(device)) for k, v in inputs.items()}
    result = run_scan(selective_scan, dev_inputs, True, backend=backend)
    assert set(result[2]) == set(GRAD_NAMES)
    assert_matches(result, expected, 1e-4, f"{backend} on {device} from an initial state, L = {length}")


@pytest.mark.parametrize("device,backend", INITIAL_STATE_CASES)
def test_initial_state_in_bf16_autocast_stays_float32(device, backend):
    inputs = make_inputs(1, 2, 20, 4, seed=41, device=device)
    h0 = torch.randn(1, 2, 4, device=device, dtype=torch.bfloat16)
    with torch.autocast(device, dtype=torch.bfloat16):
        _, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend=backend,
                                 initial_state=h0)
    assert last.dtype == torch.float32


def test_initial_state_shape_is_checked():
    inputs = make_inputs(2, 3, 10, 4)
    with pytest.raises(ValueError, match=r"`initial_state` has shape \(2, 3, 5\), expected \(batch, d_inner, N\) = "
                                         r"\(2, 3, 4\)"):
        selective_scan(**inputs, initial_state=torch.zeros(2, 3, 5))


@pytest.mark.parametrize("n", [2, 8, 33])
def test_cpu_kernel_state_sizes(n):
    """The kernel has specialised (N = 8, 16) and generic paths; check a few other sizes and a ragged last chunk."""
    if "cpu" not in available_backends("cpu"):
        pytest.skip("the CPU kernel cannot be built here")
    inputs = make_inputs(2, 3, 130, n, seed=n)
    expected = run_scan(selective_scan_reference, inputs, True)
    assert_matches(run_scan(selective_scan, inputs, True, backend="cpu"), expected, 1e-4, f"cpu N={n}")


def test_portable_chunk_sizes():
    inputs = make_inputs(2, 3, 37, 4, seed=3)
    expected = run_scan(selective_scan_reference, inputs, True)
    for chunk_size in (1, 5, 16, 64):
        result = run_scan(selective_scan_portable, inputs, True, chunk_size=chunk_size)
        assert_matches(result, expected, 1e-4, f"portable chunk_size={chunk_size}")


def test_cpu_kernel_non_contiguous_inputs():
    if "cpu" not in available_backends("cpu"):
        pytest.skip("the CPU kernel cannot be built here")
    inputs = make_inputs(2, 5, 40, 16, seed=11)
    # Same values, other memory layouts: (b, L, d) storage for u / delta / z, (b, L, N) for B / C.
    strided = {k: (v.transpose(-1, -2).contiguous().transpose(-1, -2) if v is not None and v.dim() == 3 else v)
               for k, v in inputs.items()}
    assert not strided["u"].is_contiguous() and not strided["B"].is_contiguous()
    a = run_scan(selective_scan, inputs, True, backend="cpu")
    b = run_scan(selective_scan, strided, True, backend="cpu")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert all(torch.equal(a[2][k], b[2][k]) for k in a[2])


def test_cpu_kernel_is_deterministic_across_thread_counts():
    """Several channel groups (d_inner > 32), several chunks (L > 64): bitwise equal at 1 and 2 threads, twice."""
    if "cpu" not in available_backends("cpu"):
        pytest.skip("the CPU kernel cannot be built here")
    inputs = make_inputs(3, 70, 300, 16, seed=5)
    threads = torch.get_num_threads()
    results = []
    try:
        for n_threads in (1, 2, 1, 2):
            torch.set_num_threads(n_threads)
            results.append(run_scan(selective_scan, inputs, True, backend="cpu"))
    finally:
        torch.set_num_threads(threads)
    first = results[0]
    for other in results[1:]:
        assert torch.equal(first[0], other[0]) and torch.equal(first[1], other[1])
        for k in first[2]:
            assert torch.equal(first[2][k], other[2][k]), k
    # ... and right: this shape exercises the cross-group reductions of dB and dC.
    assert_matches(first, run_scan(selective_scan_reference, inputs, True), 1e-4, "cpu, 3 groups")


def test_zero_length_sequence():
    inputs = make_inputs(2, 3, 0, 4)
    for backend in ("reference", *(name for dev, name in CASES if dev == "cpu")):
        out, last = selective_scan(**inputs, return_last_state=True, backend=backend)
        assert out.shape == (2, 3, 0)
        assert torch.equal(last, torch.zeros(2, 3, 4)), backend


# --- selective_scan_backward: the gradients and the output from the inputs alone ------------------------------------


def _backward_both_ways(backend, inputs, *, softplus=True, initial_state=None, with_dlast=True, seed=1):
    """(autograd through selective_scan, selective_scan_backward) on the same output and last-state gradients: each
    (out, {name: gradient})."""
    g = torch.Generator().manual_seed(seed)
    b, d, length = inputs["u"].shape
    dout = torch.randn(b, d, length, generator=g)
    dlast = torch.randn(b, d, inputs["A"].shape[1], generator=g) if with_dlast else None
    leaves = {k: (None if v is None else v.detach().clone().requires_grad_())
              for k, v in {**inputs, "initial_state": initial_state}.items()}
    out, last = selective_scan(**leaves, delta_softplus=softplus, return_last_state=True, backend=backend)
    outputs, grad_outputs = ([out, last], [dout, dlast]) if with_dlast else ([out], [dout])
    present = [k for k in GRAD_NAMES if leaves.get(k) is not None]
    expected = torch.autograd.grad(outputs, [leaves[k] for k in present], grad_outputs, allow_unused=True,
                                   materialize_grads=True)
    recomputed, grads = selective_scan_backward(dout, **inputs, delta_softplus=softplus, backend=backend,
                                                initial_state=initial_state, dlast=dlast)
    assert [k for k, v in zip(GRAD_NAMES, grads) if v is not None] == present  # None exactly for absent inputs
    return (out, dict(zip(present, expected))), (recomputed, {k: v for k, v in zip(GRAD_NAMES, grads) if v is not None})


@pytest.mark.parametrize("backend", ["reference", *sorted({name for _, name in CASES if _ == "cpu"})])
@pytest.mark.parametrize("length", [1, 37])
@pytest.mark.parametrize("options", [(True, True, True, True), (False, False, False, False), (True, False, True, False)])
@pytest.mark.parametrize("with_state", [False, True])
def test_selective_scan_backward_matches_autograd(backend, length, options, with_state):
    """``selective_scan_backward`` returns the output of ``selective_scan`` and the gradients autograd takes through
    it, for every backend here, with and without each optional input, an initial state and a last-state gradient."""
    with_D, with_z, with_bias, softplus = options
    inputs = make_inputs(2, 3, length, 16, with_D=with_D, with_z=with_z, with_bias=with_bias, softplus=softplus)
    state = torch.randn(2, 3, 16) if with_state else None
    (out, expected), (recomputed, grads) = _backward_both_ways(backend, inputs, softplus=softplus,
                                                               initial_state=state, with_dlast=with_state)
    assert rel_err(recomputed, out) < 1e-5
    assert set(grads) == set(expected)
    for name in grads:
        assert grads[name].dtype == expected[name].dtype, name
        assert rel_err(grads[name], expected[name]) < 1e-5, name


@pytest.mark.skipif("cpu" not in available_backends("cpu"), reason="the CPU kernel cannot be built here")
def test_selective_scan_backward_runs_no_forward_up_to_one_chunk(monkeypatch):
    """The CPU kernel's backward recomputes the output itself up to ``ONE_CHUNK_MAX`` steps (no forward); a longer
    sequence runs the forward first for its chunk states, with the same results."""
    from modeling_mambavl.ops import cpu

    forwards = []
    real_forward = cpu.forward
    monkeypatch.setattr(cpu, "forward", lambda *a: forwards.append(a[0].shape[-1]) or real_forward(*a))
    inputs = make_inputs(2, 3, 150, 16)
    state = torch.randn(2, 3, 16)
    results = {}
    for one_chunk_max in (2048, 100):
        monkeypatch.setattr(cpu, "ONE_CHUNK_MAX", one_chunk_max)
        forwards.clear()
        recomputed, grads = selective_scan_backward(torch.ones(2, 3, 150), **inputs, delta_softplus=True,
                                                    backend="cpu", initial_state=state)
        assert forwards == ([] if one_chunk_max == 2048 else [150]), one_chunk_max
        results[one_chunk_max] = (recomputed, grads)
    (out_one, grads_one), (out_chunks, grads_chunks) = results.values()
    assert rel_err(out_one, out_chunks) < 1e-6
    assert all(rel_err(a, b) < 1e-5 for a, b in zip(grads_one, grads_chunks) if a is not None)


def test_selective_scan_backward_under_autocast_and_bad_arguments():
    inputs = make_inputs(2, 3, 20, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads = selective_scan_backward(torch.ones(2, 3, 20), **inputs, delta_softplus=True, backend="portable")
    assert out.dtype == torch.bfloat16
    assert dict(zip(GRAD_NAMES, (g.dtype for g in grads if g is not None))) == {
        "u": torch.bfloat16, "delta": torch.bfloat16, "A": torch.float32, "B": torch.bfloat16, "C": torch.bfloat16,
        "D": torch.float32, "z": torch.bfloat16, "delta_bias": torch.float32}
    with pytest.raises(ValueError, match=r"`dout` has shape \(2, 3, 19\), expected \(2, 3, 20\)"):
        selective_scan_backward(torch.ones(2, 3, 19), **inputs)
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        selective_scan_backward(torch.ones(2, 3, 20), **inputs, backend="fast")
    with pytest.raises(TypeError, match="`dout` must be a real floating torch.Tensor, got torch.int64"):
        selective_scan_backward(torch.ones(2, 3, 20, dtype=torch.long), **inputs)
    with pytest.raises(ValueError, match=r"`dlast` has shape \(2, 3\), expected \(2, 3, 16\)"):
        selective_scan_backward(torch.ones(2, 3, 20), **inputs, dlast=torch.ones(2, 3))
    with pytest.raises(ValueError, match="`dout` is on meta but `u` is on cpu"):
        selective_scan_backward(torch.ones(2, 3, 20, device="meta"), **inputs)


@pytest.mark.parametrize("backend", sorted({"portable", *(name for dev, name in CASES if dev == "cpu")}))
@pytest.mark.parametrize("shape", [(2, 3, 0), (0, 3, 5)])
def test_selective_scan_backward_of_empty_inputs(backend, shape):
    """No step or no batch element: an empty output, zero gradients, and the last state's gradient passed on to the
    initial state when no step runs."""
    b, d, length = shape
    inputs = make_inputs(b, d, length, 16)
    state, dlast = torch.randn(b, d, 16), torch.randn(b, d, 16)
    out, grads = selective_scan_backward(torch.ones(shape), **inputs, delta_softplus=True, backend=backend,
                                         initial_state=state, dlast=dlast)
    assert out.shape == shape
    named = dict(zip(GRAD_NAMES, grads))
    assert all(not g.any() for k, g in named.items() if k != "initial_state")
    torch.testing.assert_close(named["initial_state"], dlast if length == 0 else torch.zeros_like(dlast))
    with pytest.raises(ValueError, match="`B` has shape"):
        selective_scan_backward(torch.ones(2, 3, 20), **{**inputs, "B": torch.ones(2, 16, 3)})
