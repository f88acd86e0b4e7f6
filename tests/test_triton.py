"""The ``triton`` selective-scan backend against the sequential reference: outputs, last state and every gradient.

On a GPU the kernel tests run natively on CUDA tensors. Without one they run on CPU tensors in Triton's interpreter,
at small sizes and with small tiles (8 steps, 2 channels) so that several tiles, a partial last tile and padded
states are all exercised. Triton decides when it is first imported whether kernels are interpreted, and the rest of
the suite must not run interpreted (it would be far too slow), so `test_kernels_in_the_interpreter` runs this file
again in a subprocess with ``TRITON_INTERPRET=1``; in the main run the kernel tests are skipped in its favour.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from test_model_mixer import assert_levels_match, run_mixer_levels  # the mixer's recompute-level comparison
from test_selective_scan import make_inputs, rel_err, run_scan  # shared input and comparison helpers

from modeling_mambavl.ops import dispatch, selective_scan, selective_scan_reference

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from modeling_mambavl.ops import triton as triton_backend  # noqa: E402

TOL = 1e-4
# The kernels can run in this process: natively on a GPU, or because this process was started interpreted.
KERNELS_HERE = torch.cuda.is_available() or triton_backend.INTERPRETED
needs_kernels = pytest.mark.skipif(not KERNELS_HERE, reason="no GPU: run under the interpreter by "
                                                              "test_kernels_in_the_interpreter")


@pytest.fixture
def kernel():
    return triton_backend


def _devices():
    return ["cuda"] if torch.cuda.is_available() else ["cpu"]


def _triton(**kwargs):
    return selective_scan(**kwargs, backend="triton")


def _compare(inputs, softplus, device, grad_of_last_state=True):
    moved = {k: (None if v is None else v.to(device)) for k, v in inputs.items()}
    out, last, grads = run_scan(_triton, moved, softplus, grad_of_last_state=grad_of_last_state)
    ref_out, ref_last, ref_grads = run_scan(selective_scan_reference, inputs, softplus,
                                            grad_of_last_state=grad_of_last_state)
    assert out.dtype == inputs["u"].dtype and last.dtype == torch.float32
    assert rel_err(out, ref_out) < TOL, rel_err(out, ref_out)
    assert rel_err(last, ref_last) < TOL, rel_err(last, ref_last)
    assert set(grads) == set(ref_grads)
    for name, grad in grads.items():
        assert grad.dtype == inputs[name].dtype and grad.shape == inputs[name].shape, name
        assert rel_err(grad, ref_grads[name]) < TOL, (name, rel_err(grad, ref_grads[name]))
    return out, last, grads


@needs_kernels
@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize(
    "batch, d_inner, length, n",
    [
        (2, 3, 19, 4),  # three tiles of 8 steps (interpreter), the last one partial
        (1, 3, 16, 5),  # whole tiles; N padded to 8; channels not a multiple of the block
        (1, 2, 1, 4),  # a single step
    ],
)
def test_matches_reference_with_every_option(kernel, device, batch, d_inner, length, n):
    _compare(make_inputs(batch, d_inner, length, n, seed=length + n), True, device)


@needs_kernels
@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize(
    "with_D, with_z, with_bias, softplus",
    [(False, False, False, False), (True, False, True, False), (False, True, False, True), (True, True, False, True)],
)
def test_matches_reference_without_optional_inputs(kernel, device, with_D, with_z, with_bias, softplus):
    inputs = make_inputs(2, 2, 13, 4, with_D=with_D, with_z=with_z, with_bias=with_bias, softplus=softplus, seed=3)
    _compare(inputs, softplus, device)


@needs_kernels
@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("length", [0, 3, 19])
def test_matches_reference_from_an_initial_state(kernel, device, length):
    inputs = make_inputs(2, 3, length, 5, seed=length + 17)
    inputs["initial_state"] = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(length))
    _, _, grads = _compare(inputs, True, device)
    assert grads["initial_state"].abs().max() > 0


@needs_kernels
@pytest.mark.parametrize("device", _devices())
def test_gradients_without_a_last_state_gradient(kernel, device):
    _compare(make_inputs(1, 2, 11, 4, seed=5), True, device, grad_of_last_state=False)


@needs_kernels
@pytest.mark.parametrize("device", _devices())
def test_strided_inputs_are_read_in_place(kernel, device):
    """Views with any strides (a transposed ``u``, a slice of a larger ``B``) give the same results."""
    base = make_inputs(2, 3, 12, 4, seed=7)
    strided = dict(base)
    strided["u"] = base["u"].transpose(1, 2).contiguous().transpose(1, 2)
    strided["B"] = torch.cat([base["B"], torch.randn_like(base["B"])], dim=1)[:, :4]
    assert not strided["u"].is_contiguous() and not strided["B"].is_contiguous()
    got = _compare(strided, True, device)
    ref = run_scan(_triton, {k: (None if v is None else v.to(device)) for k, v in base.items()}, True)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)


@needs_kernels
@pytest.mark.parametrize("device", _devices())
def test_half_precision_inputs_keep_a_float32_state(kernel, device):
    inputs = make_inputs(1, 2, 10, 4, seed=11, dtype=torch.bfloat16)
    moved = {k: (None if v is None else v.to(device)) for k, v in inputs.items()}
    out, last, grads = run_scan(_triton, moved, True)
    ref_out, ref_last, _ = run_scan(selective_scan_reference, inputs, True)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    assert all(grads[k].dtype == torch.bfloat16 for k in ("u", "delta", "B", "C", "z"))
    # Same bf16 inputs, float32 inside both: only the output rounding to bf16 differs.
    assert rel_err(out, ref_out) < 1e-2 and rel_err(last, ref_last) < TOL


@needs_kernels
@pytest.mark.parametrize("device", _devices())
def test_bitwise_deterministic(kernel, device):
    inputs = {k: (None if v is None else v.to(device)) for k, v in make_inputs(2, 3, 12, 4, seed=13).items()}
    first = run_scan(_triton, inputs, True)
    second = run_scan(_triton, inputs, True)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert all(torch.equal(first[2][k], second[2][k]) for k in first[2])


@needs_kernels
@pytest.mark.parametrize("device", _devices())
def test_recomputing_mixer_matches_keeping_everything(kernel, device):
    """The mixer's memory level on this backend, continuing from a given initial state and with padding: the same
    outputs and gradients as keeping every intermediate (which matches the reference scan within TOL). One piece
    each, to keep the interpreter's kernel launches few; pieces and the speed level are compared on the other
    backends in test_model_mixer.py."""
    levels = ("none", "memory")
    results = run_mixer_levels("triton", length=12, chunk_size=12, device=device, levels=levels)
    assert_levels_match(results)
    reference = run_mixer_levels("reference", length=12, chunk_size=12, levels=("none",))["none"]
    assert rel_err(results["none"][0].cpu(), reference[0]) < TOL
    for name, grad in reference[1].items():
        assert rel_err(results["none"][1][name].cpu(), grad) < TOL, name


def test_auto_prefers_mamba_ssm_then_triton_on_cuda(kernel, monkeypatch):
    from modeling_mambavl.ops import cuda

    monkeypatch.setattr(cuda, "unavailable_reason", lambda: "mamba-ssm is not installed (simulated)")
    monkeypatch.setattr(kernel, "unavailable_reason", lambda: None)
    assert dispatch._resolve_backend("auto", "cuda") == "triton"
    monkeypatch.setattr(cuda, "unavailable_reason", lambda: None)
    assert dispatch._resolve_backend("auto", "cuda") == "cuda"
    monkeypatch.setattr(cuda, "unavailable_reason", lambda: "mamba-ssm is not installed (simulated)")
    monkeypatch.setattr(kernel, "unavailable_reason", lambda: "triton is not installed (simulated)")
    assert dispatch._resolve_backend("auto", "cuda") == "portable"
    # On the CPU the fused C++ kernel (or portable) is used, never the interpreter.
    assert dispatch._resolve_backend("auto", "cpu") in ("cpu", "portable")
    # mamba-ssm's kernel starts from a zero state: with an initial state auto takes the next one.
    monkeypatch.setattr(cuda, "unavailable_reason", lambda: None)
    monkeypatch.setattr(kernel, "unavailable_reason", lambda: None)
    assert dispatch._resolve_backend("auto", "cuda", initial_state=True) == "triton"
    with pytest.raises(RuntimeError, match="backend='cuda' cannot run: its kernel takes no initial state"):
        dispatch._resolve_backend("cuda", "cuda", initial_state=True)


def test_explicit_triton_without_triton_says_what_to_do(kernel, monkeypatch):
    monkeypatch.setattr(kernel, "triton", None)
    monkeypatch.setattr(kernel, "_IMPORT_ERROR", "triton cannot be imported (simulated); install it with "
                                                 "`pip install triton`")
    with pytest.raises(RuntimeError, match="backend='triton' cannot run: triton cannot be imported.*pip install"):
        dispatch._resolve_backend("triton", "cuda")
    assert "triton" not in dispatch.available_backends("cuda")


@pytest.mark.slow
@pytest.mark.skipif(triton_backend.INTERPRETED, reason="checked by the main run")
def test_package_imports_and_scans_without_triton(tmp_path):
    """A machine without triton: importing the package, ``auto`` and the fused CPU path still work."""
    script = textwrap.dedent(
        """
        import sys

        sys.modules["triton"] = None  # `import triton` raises ImportError, find_spec finds nothing
        import torch
        import modeling_mambavl
        from modeling_mambavl.ops import available_backends, selective_scan
        from modeling_mambavl.ops import triton as kernel

        assert kernel.triton is None and "triton cannot be imported" in kernel.unavailable_reason()
        assert "triton" not in available_backends("cpu")
        u = torch.randn(1, 4, 6)
        out = selective_scan(u, torch.rand(1, 4, 6), -torch.rand(4, 2), torch.randn(1, 2, 6), torch.randn(1, 2, 6))
        assert out.shape == (1, 4, 6)
        print("ok")
        """
    )
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


@pytest.mark.slow
@pytest.mark.skipif(KERNELS_HERE, reason="the kernel tests run in this process")
def test_kernels_in_the_interpreter(tmp_path):
    """Runs this file's kernel tests on the CPU in Triton's interpreter (a fresh process, TRITON_INTERPRET=1)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", os.path.abspath(__file__), "-q", "-p", "no:cacheprovider",
         "--rootdir", os.path.dirname(os.path.dirname(os.path.abspath(__file__)))],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
