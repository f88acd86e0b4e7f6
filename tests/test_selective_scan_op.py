"""The selective-scan op as a whole: argument checking, backend choice, the kernel build, the custom op's fake /
autograd / FLOP registrations, autocast, torch.compile, and the glue to mamba-ssm's kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from test_selective_scan import make_inputs, rel_err, run_scan  # shared input and comparison helpers
from torch.utils.flop_counter import FlopCounterMode

import modeling_mambavl.ops.dispatch as scan_module
from modeling_mambavl.ops import available_backends, build, cpu, cuda, selective_scan, selective_scan_reference

needs_cpu_kernel = pytest.mark.skipif("cpu" not in available_backends("cpu"),
                                      reason="the CPU kernel cannot be built here (no C++ compiler)")


# --- arguments ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,bad_shape,expected", [
    ("u", (2, 3), "(batch, d_inner, L)"),
    ("delta", (2, 3, 9), "(2, 3, 10)"),
    ("A", (4, 5), "(3, N)"),
    ("B", (2, 10, 5), "(2, 5, 10)"),
    ("C", (2, 5, 9), "(2, 5, 10)"),
    ("D", (4,), "(3,)"),
    ("z", (2, 3, 11), "(2, 3, 10)"),
    ("delta_bias", (3, 1), "(3,)"),
])
def test_bad_shapes_name_the_argument_and_both_shapes(name, bad_shape, expected):
    inputs = make_inputs(2, 3, 10, 5)
    inputs[name] = torch.zeros(bad_shape)
    with pytest.raises(ValueError) as info:
        selective_scan(**inputs, backend="reference")
    message = str(info.value)
    assert f"`{name}`" in message and str(tuple(bad_shape)) in message and expected in message


def test_bad_dtype_and_device():
    inputs = make_inputs(2, 3, 10, 5)
    with pytest.raises(TypeError, match="`B` has dtype torch.int64"):
        selective_scan(**{**inputs, "B": inputs["B"].long()})
    with pytest.raises(ValueError, match="`A` is on meta"):
        selective_scan(**{**inputs, "A": inputs["A"].to("meta")})


def test_unknown_and_impossible_backends():
    inputs = make_inputs(2, 3, 10, 5)
    with pytest.raises(ValueError, match="unknown backend 'fast'.*auto, reference, portable, cpu, cuda"):
        selective_scan(**inputs, backend="fast")
    # The cuda backend on CPU tensors: the error says why (device, or mamba-ssm missing on a GPU machine).
    with pytest.raises(RuntimeError, match="backend='cuda' cannot run: it runs on cuda tensors and the inputs are on"):
        selective_scan(**inputs, backend="cuda")


def test_cuda_module_imports_without_mamba_ssm():
    reason = cuda.unavailable_reason()
    if torch.cuda.is_available() and reason is None:
        pytest.skip("mamba-ssm is installed and a GPU is present")
    assert reason and ("CUDA device" in reason or "mamba-ssm" in reason)


def test_auto_falls_back_to_portable_with_one_warning(monkeypatch):
    monkeypatch.setattr(cpu, "unavailable_reason", lambda: "no C++ compiler found (simulated)")
    monkeypatch.setattr(scan_module, "_warned_fallback", set())
    inputs = make_inputs(2, 3, 10, 5)
    with pytest.warns(RuntimeWarning, match="'portable' backend.*no C\\+\\+ compiler found \\(simulated\\)"):
        out = selective_scan(**inputs, delta_softplus=True)
    torch.testing.assert_close(out, selective_scan_reference(**inputs, delta_softplus=True), rtol=1e-5, atol=1e-5)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        selective_scan(**inputs, delta_softplus=True)  # warned once only
    with pytest.raises(RuntimeError, match="backend='cpu' cannot run: no C\\+\\+ compiler found \\(simulated\\)"):
        selective_scan(**inputs, backend="cpu")


def test_auto_picks_the_fused_kernel_on_cpu(monkeypatch):
    if "cpu" not in available_backends("cpu"):
        pytest.skip("the CPU kernel cannot be built here")
    calls = []
    real = cpu.forward
    monkeypatch.setattr(cpu, "forward", lambda *a: calls.append(1) or real(*a))
    selective_scan(**make_inputs(2, 3, 10, 5))
    assert calls == [1]


# --- the kernel build -------------------------------------------------------------------------------------------


def test_no_compiler_error_says_what_to_do(monkeypatch):
    monkeypatch.setattr(build, "_loaded", {})
    monkeypatch.setattr(build, "find_compiler", lambda: None)
    with pytest.raises(build.KernelBuildError) as info:
        build.load_library("selective_scan_cpu")
    message = str(info.value)
    assert "no C++ compiler" in message and "apt install g++" in message and "backend='portable'" in message


def test_cache_dir_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("MAMBAVL_KERNEL_CACHE", str(tmp_path / "k"))
    assert build.cache_dir() == tmp_path / "k"
    monkeypatch.delenv("MAMBAVL_KERNEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert build.cache_dir() == tmp_path / "xdg" / "mambavl" / "kernels"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert build.cache_dir() == tmp_path / "home" / ".cache" / "mambavl" / "kernels"


_BUILD_SCRIPT = r"""
import json, numpy as np, torch
from modeling_mambavl.ops import cpu, selective_scan, selective_scan_reference
before = float((torch.tensor([1e-40]) * 1.0).item())
assert cpu.unavailable_reason() is None, cpu.unavailable_reason()
g = torch.Generator().manual_seed(0)
u, delta, z = (torch.randn(2, 3, 20, generator=g) for _ in range(3))
A, B, C = -torch.rand(3, 4, generator=g), torch.randn(2, 4, 20, generator=g), torch.randn(2, 4, 20, generator=g)
out = selective_scan(u, delta, A, B, C, z=z, delta_softplus=True, backend="cpu")
ref = selective_scan_reference(u, delta, A, B, C, z=z, delta_softplus=True)
print(json.dumps({"before": before, "after": float((torch.tensor([1e-40]) * 1.0).item()),
                  "numpy_after": float(np.float32(1e-40) * np.float32(1.0)),
                  "err": float((out - ref).abs().max() / ref.abs().max())}))
"""


@pytest.mark.slow
@needs_cpu_kernel
def test_fresh_build_in_the_cache_folder_keeps_denormals(tmp_path):
    """A first build in an empty MAMBAVL_KERNEL_CACHE: the library lands there, works, and loading it does not turn
    on flush-to-zero for the process (what -ffast-math does to a shared library built by GCC < 13)."""
    env = {**os.environ, "MAMBAVL_KERNEL_CACHE": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-c", _BUILD_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.strip().splitlines()[-1])
    built = list((tmp_path / "cache").glob("selective_scan_cpu-*.so"))
    assert len(built) == 1 and not list((tmp_path / "cache").glob("*.tmp"))
    assert result["before"] > 0 and result["after"] > 0 and result["numpy_after"] > 0
    assert result["err"] < 1e-5


@needs_cpu_kernel
def test_loaded_kernel_leaves_denormals_alone():
    cpu.unavailable_reason()  # loads the library
    assert (torch.tensor([1e-40]) * 1.0).item() > 0
    assert float(np.float32(1e-40) * np.float32(1.0)) > 0


# --- the custom op ------------------------------------------------------------------------------------------------


@needs_cpu_kernel
def test_fake_tensor_and_meta_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    real = make_inputs(2, 3, 70, 16, dtype=torch.bfloat16)
    with FakeTensorMode() as mode:
        fake = {k: mode.from_tensor(v) for k, v in real.items()}
        out, last = selective_scan(**fake, delta_softplus=True, return_last_state=True, backend="cpu")
        assert out.shape == (2, 3, 70) and out.dtype == torch.bfloat16
        assert last.shape == (2, 3, 16) and last.dtype == torch.float32
        _, _, saved = torch.ops.mambavl.selective_scan_fwd(*fake.values(), None, True, "cpu")
        assert [tuple(s.shape) for s in saved] == [(2, 3, 2, 16)]  # ceil(70 / 64) chunk states

    meta = {k: v.to("meta").float().requires_grad_() for k, v in real.items()}
    for backend in ("cpu", "auto"):
        out = selective_scan(**meta, delta_softplus=True, backend=backend)
        assert out.device.type == "meta" and out.shape == (2, 3, 70)
        grads = torch.autograd.grad(out.sum(), list(meta.values()))
        assert [g.shape for g in grads] == [v.shape for v in meta.values()]


@needs_cpu_kernel
def test_opcheck():
    inputs = make_inputs(2, 3, 70, 4)
    inputs["initial_state"] = torch.randn(2, 3, 4)
    args = tuple(v.requires_grad_() for v in inputs.values()) + (True, "cpu")
    torch.library.opcheck(torch.ops.mambavl.selective_scan_fwd.default, args)


@needs_cpu_kernel
@pytest.mark.parametrize("optional", [True, False])
def test_flop_counter(optional):
    b, d, length, n = 2, 3, 40, 16
    inputs = make_inputs(b, d, length, n, with_D=optional, with_z=optional)
    leaves = {k: (None if v is None else v.requires_grad_()) for k, v in inputs.items()}
    with FlopCounterMode(display=False) as counter:
        out = selective_scan(**leaves, delta_softplus=True, backend="cpu")
        out.sum().backward()
    counts = counter.get_flop_counts()["Global"]
    expected = 9 * b * d * length * n + (2 * b * d * length if optional else 0)
    assert counts[torch.ops.mambavl.selective_scan_fwd] == expected
    assert counts[torch.ops.mambavl.selective_scan_bwd] == 2 * expected
    assert counter.get_total_flops() == 3 * expected


@pytest.mark.parametrize("backend", ["reference", "portable", "cpu"])
def test_autocast(backend, monkeypatch):
    if backend not in available_backends("cpu"):
        pytest.skip(f"{backend} cannot run here")
    inputs = make_inputs(2, 3, 50, 16)
    seen = {}
    real = cpu.forward

    def spy(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus):
        seen.update(u=u.dtype, delta=delta.dtype, B=B.dtype, C=C.dtype, z=z.dtype, A=A.dtype, D=D.dtype,
                    delta_bias=delta_bias.dtype)
        return real(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus)

    monkeypatch.setattr(cpu, "forward", spy)
    leaves = {k: v.requires_grad_() for k, v in inputs.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, last = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend=backend)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32
    if backend == "cpu":
        activations = {k: torch.bfloat16 for k in ("u", "delta", "B", "C", "z")}
        assert seen == {**activations, "A": torch.float32, "D": torch.float32, "delta_bias": torch.float32}
    # Same result as the float32 reference on bf16-rounded activations and float32 A, D, delta_bias.
    rounded = {k: (v.detach().bfloat16().float() if k in ("u", "delta", "B", "C", "z") else v.detach())
               for k, v in inputs.items()}
    expected, expected_last = selective_scan_reference(**rounded, delta_softplus=True, return_last_state=True)
    assert rel_err(out, expected) < 2e-2 and rel_err(last, expected_last) < 1e-4
    out.float().sum().backward()
    assert all(v.grad is not None and v.grad.dtype == torch.float32 for v in leaves.values())


@pytest.mark.slow
@needs_cpu_kernel
def test_torch_compile_fullgraph_matches_eager():
    import torch._dynamo

    torch._dynamo.reset()
    inputs = make_inputs(2, 3, 70, 16)

    def f(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, backend):
        return selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=delta_softplus,
                              return_last_state=return_last_state, backend=backend)

    eager = run_scan(f, inputs, True, backend="cpu")
    compiled_f = torch.compile(f, fullgraph=True)
    for backend in ("cpu", "auto"):
        result = run_scan(compiled_f, inputs, True, backend=backend)
        torch.testing.assert_close(result[0], eager[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(result[1], eager[1], rtol=1e-6, atol=1e-6)
        for k in eager[2]:
            torch.testing.assert_close(result[2][k], eager[2][k], rtol=1e-6, atol=1e-6, msg=k)


# --- the mamba-ssm glue -------------------------------------------------------------------------------------------


def _fake_mamba_extension():
    """A stand-in for mamba-ssm's `selective_scan_cuda` with its calling convention (B / C as (b, 1, N, L), the state
    saved as interleaved (decay product, state) pairs every 2048 steps, out_z appended when z is given), computed by
    the reference on the CPU."""

    def fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        out, last = selective_scan_reference(u, delta, A, B[:, 0], C[:, 0], D=D, delta_bias=delta_bias,
                                             delta_softplus=delta_softplus, return_last_state=True)
        b, d, length = u.shape
        x = torch.zeros(b, d, (length + 2047) // 2048, 2 * A.shape[1])
        x[:, :, -1, 1::2] = last
        return [out, x] + ([out * torch.nn.functional.silu(z)] if z is not None else [])

    def bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz, delta_softplus, recompute_out_z):
        leaves = [t.detach().requires_grad_() for t in (u, delta, A, B[:, 0], C[:, 0], D, z, delta_bias)]
        res = selective_scan_reference(*leaves, delta_softplus=delta_softplus)
        du, ddelta, dA, dB, dC, dD, dz_, dbias = torch.autograd.grad(res, leaves, dout)
        return [du, ddelta, dA, dB.unsqueeze(1), dC.unsqueeze(1), dD, dbias, dz_]

    return types.SimpleNamespace(fwd=fwd, bwd=bwd)


def test_cuda_glue_with_the_kernel_calling_convention(monkeypatch):
    monkeypatch.setattr(cuda, "_import_extension", lambda: (_fake_mamba_extension(), None))
    inputs = make_inputs(2, 3, 30, 4)
    out, last, saved = cuda.forward(*inputs.values(), None, True)
    assert [tuple(s.shape) for s in saved] == [tuple(s.shape) for s in cuda.saved_like(*inputs.values(), None, True)]
    leaves = {k: v.detach().requires_grad_() for k, v in inputs.items()}
    ref_out, ref_last = selective_scan_reference(**leaves, delta_softplus=True, return_last_state=True)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(last, ref_last)
    dout = torch.randn_like(out)
    grads = cuda.backward(dout, torch.zeros_like(last), *inputs.values(), None, saved, True)
    ref_grads = torch.autograd.grad(ref_out, list(leaves.values()), dout)
    for name, g, r in zip(leaves, grads, ref_grads):
        assert g.shape == r.shape, name
        torch.testing.assert_close(g, r, msg=name)
    with pytest.raises(NotImplementedError, match="last state"):
        cuda.backward(dout, torch.ones_like(last), *inputs.values(), None, saved, True)


def test_custom_op_rejects_unfused_backend_names():
    inputs = make_inputs(2, 3, 10, 5)
    with pytest.raises(ValueError, match="'portable' is not a fused kernel"):
        torch.ops.mambavl.selective_scan_fwd(*inputs.values(), None, True, "portable")
