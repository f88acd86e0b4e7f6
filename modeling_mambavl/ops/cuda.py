"""The ``cuda`` backend: mamba-ssm's selective-scan CUDA kernel, when it is installed and the tensors are on a GPU.

mamba-ssm is optional (``pip install causal-conv1d mamba-ssm --no-build-isolation``, with a CUDA toolkit) and is
imported lazily, inside ``try``: this module imports cleanly without it. The kernel's compiled extension
(``selective_scan_cuda``) is called directly, as mamba-ssm's own ``SelectiveScanFn`` does, so that the op stays one
``torch.library`` custom op under ``torch.compile``.

This module implements the fused-kernel interface of ``dispatch.py`` (``unavailable_reason``, ``forward``,
``backward``, ``saved_like``).
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch

DEVICE_TYPES = ("cuda",)
# mamba-ssm's selective_scan_fn always starts from a zero state.
SUPPORTS_INITIAL_STATE = False
# No backward that recomputes the output: selective_scan_backward runs the forward with autograd instead.
backward_with_output = None
# mamba-ssm's kernel saves (decay product, state) pairs every 2048 steps.
_KERNEL_CHUNK = 2048
_INSTALL_HINT = ("install it with `pip install causal-conv1d mamba-ssm --no-build-isolation` (needs a CUDA toolkit), "
                 "or use backend='portable'")


@functools.cache
def _import_extension() -> tuple[ModuleType | None, str | None]:
    try:
        import selective_scan_cuda  # mamba-ssm's compiled kernel
    except Exception as e:  # ImportError, or an OSError from a CUDA library mismatch
        return None, f"mamba-ssm's kernel (selective_scan_cuda) cannot be imported ({type(e).__name__}: {e}); " + (
            _INSTALL_HINT)
    return selective_scan_cuda, None


def _extension() -> ModuleType:
    ext, error = _import_extension()
    if ext is None:
        raise RuntimeError(f"selective_scan backend 'cuda': {error}")
    return ext


def unavailable_reason() -> str | None:
    """``None`` when mamba-ssm's kernel can run here, else why not."""
    if not torch.cuda.is_available():
        return "no CUDA device is available (torch.cuda.is_available() is False)"
    return _import_extension()[1]


def _call(fn, *args):
    # Newer mamba-ssm releases take an extra trailing `cu_seqlens` argument; pybind11 rejects a wrong arity with a
    # TypeError before running anything.
    try:
        return fn(*args)
    except TypeError:
        return fn(*args, None)


def _last_dim_contiguous(t: torch.Tensor | None) -> torch.Tensor | None:
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def saved_like(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus) -> list[torch.Tensor]:
    """Empty tensors shaped like what ``forward`` saves (for fake / meta tensors)."""
    b, d, length = u.shape
    n_chunks = (length + _KERNEL_CHUNK - 1) // _KERNEL_CHUNK
    saved = [u.new_empty((b, d, n_chunks, 2 * A.shape[1]), dtype=torch.float32)]
    if z is not None:
        saved.append(u.new_empty((b, d, length)))
    return saved


def _prepare(u, delta, A, B, C, D, z, delta_bias):
    def f32(t):
        return None if t is None else t.to(torch.float32).contiguous()

    u, delta, z = (_last_dim_contiguous(t) for t in (u, delta, z))
    B = _last_dim_contiguous(B).unsqueeze(1)  # (b, 1, N, L): one group
    C = _last_dim_contiguous(C).unsqueeze(1)
    return u, delta, f32(A), B, C, f32(D), z, f32(delta_bias)


def forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus):
    """Returns out (b, d, L) in u's dtype, the last state (b, d, N) float32, and what the backward needs."""
    if initial_state is not None:  # dispatch never sends one; a direct call of the op might
        raise NotImplementedError("selective_scan backend 'cuda': mamba-ssm's kernel takes no initial state")
    ext = _extension()
    u_, delta_, A_, B_, C_, D_, z_, bias_ = _prepare(u, delta, A, B, C, D, z, delta_bias)
    out, x, *rest = _call(ext.fwd, u_, delta_, A_, B_, C_, D_, z_, bias_, bool(delta_softplus))
    last = x[:, :, -1, 1::2].clone(memory_format=torch.contiguous_format)
    if z is None:
        return out, last, [x]
    return rest[0], last, [x, out]


def backward(dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, saved, delta_softplus):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, None) in the dtypes of the inputs (``None`` for absent
    optional inputs). mamba-ssm's kernel has no gradient path through the last state: a non-zero ``dlast`` raises."""
    if dlast is not None and bool(dlast.ne(0).any()):
        raise NotImplementedError(
            "selective_scan backend 'cuda': mamba-ssm's kernel does not propagate gradients through the returned "
            "last state; use backend='portable' (or 'triton' where available) when the loss depends on it.")
    ext = _extension()
    u_, delta_, A_, B_, C_, D_, z_, bias_ = _prepare(u, delta, A, B, C, D, z, delta_bias)
    x = saved[0]
    out = saved[1] if z is not None else None
    du, ddelta, dA, dB, dC, dD, dbias, *rest = _call(
        ext.bwd, u_, delta_, A_, B_, C_, D_, z_, bias_, _last_dim_contiguous(dout), x, out, None,
        bool(delta_softplus), False)
    dz = rest[0] if z is not None else None

    def back(g, like):
        return None if like is None else g.to(like.dtype).contiguous()

    return (back(du, u), back(ddelta, delta), back(dA, A), back(dB.squeeze(1), B), back(dC.squeeze(1), C),
            back(dD, D), back(dz, z), back(dbias, delta_bias), None)
