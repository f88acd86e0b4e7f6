"""The ``cpu`` backend: a fused C++ selective scan with its own backward (``csrc/selective_scan_cpu.cpp``).

Forward and backward never hold a (batch, d_inner, L, N) tensor: the forward keeps the state only at chunk
boundaries, (batch, d_inner, ceil(L / 64), N) floats, and the backward recomputes each chunk's states from them.
The state is float32 whatever the input dtype. Work is parallel over batch x channels on
``torch.get_num_threads()`` threads, vectorised over the N states, and every cross-thread reduction runs in a fixed
order, so results are bitwise identical whatever the thread count.

This module implements the fused-kernel interface of ``dispatch.py`` (``unavailable_reason``, ``forward``,
``backward``, ``backward_with_output``, ``saved_like``); call it through ``modeling_mambavl.ops.selective_scan(..., backend="cpu")``.
"""

from __future__ import annotations

import ctypes
import threading

import torch

from .build import KernelBuildError, load_library

DEVICE_TYPES = ("cpu",)
SUPPORTS_INITIAL_STATE = True
# Steps between saved states: the backward recomputes one chunk (CHUNK x N floats per channel) at a time.
CHUNK = 64
# backward_with_output runs sequences up to this long as one chunk from the initial state, with no forward first;
# its buffers, 3 x (length + 1) x N floats per thread, then still fit in a core's L2 cache.
ONE_CHUNK_MAX = 2048

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_INT = ctypes.c_int


def _library() -> ctypes.CDLL:
    global _lib, _error
    with _lock:
        if _lib is not None:
            return _lib
        if _error is not None:
            raise KernelBuildError(_error)
        try:
            lib = load_library("selective_scan_cpu")
        except KernelBuildError as e:
            _error = str(e)
            raise
        lib.mambavl_scan_fwd.restype = _INT
        lib.mambavl_scan_fwd.argtypes = [_P] * 9 + [_INT] + [_I64] * 5 + [_P, _P, _INT]
        lib.mambavl_scan_bwd.restype = _INT
        lib.mambavl_scan_bwd.argtypes = [_P] * 9 + [_INT] + [_I64] * 5 + [_P] * 13 + [_INT]
        _lib = lib
        return lib


def unavailable_reason() -> str | None:
    """``None`` when the kernel is built and loaded (building it on first call), else why it cannot run."""
    try:
        _library()
    except KernelBuildError as e:
        return str(e)
    return None


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    """float32 contiguous, without a copy when it already is."""
    return None if t is None else t.detach().to(torch.float32).contiguous()


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _transposed_f32(t: torch.Tensor) -> torch.Tensor:
    """(b, N, L) -> float32 contiguous (b, L, N) in one copy."""
    b, n, length = t.shape
    return torch.empty((b, length, n), dtype=torch.float32).copy_(t.detach().transpose(1, 2))


def _n_chunks(length):
    return (length + CHUNK - 1) // CHUNK


def saved_like(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus) -> list[torch.Tensor]:
    """Empty tensors shaped like what ``forward`` saves for the backward (for fake / meta tensors)."""
    b, d, length = u.shape
    return [u.new_empty((b, d, _n_chunks(length), A.shape[1]), dtype=torch.float32)]


def forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus):
    """Returns ``out`` (b, d, L) in u's dtype, the last state (b, d, N) float32, and ``[states]``, the state after
    every chunk of ``CHUNK`` steps, (b, d, ceil(L / CHUNK), N) float32. ``initial_state`` (b, d, N) or None (zeros)."""
    lib = _library()
    b, d, length = u.shape
    n = A.shape[1]
    states = torch.empty((b, d, _n_chunks(length), n), dtype=torch.float32)
    if length == 0 or b == 0 or d == 0:
        last = u.new_zeros((b, d, n), dtype=torch.float32) if initial_state is None else _f32(initial_state).clone()
        return u.new_zeros((b, d, length)), last, [states]
    uf, df, zf = _f32(u), _f32(delta), _f32(z)
    Af, Df, bf, h0 = _f32(A), _f32(D), _f32(delta_bias), _f32(initial_state)
    Bt, Ct = _transposed_f32(B), _transposed_f32(C)
    out = torch.empty((b, d, length), dtype=torch.float32)
    rc = lib.mambavl_scan_fwd(
        _ptr(uf), _ptr(df), _ptr(Af), _ptr(Bt), _ptr(Ct), _ptr(Df), _ptr(zf), _ptr(bf), _ptr(h0),
        int(bool(delta_softplus)),
        b, d, length, n, CHUNK, _ptr(out), _ptr(states), torch.get_num_threads(),
    )
    if rc != 0:
        raise MemoryError("selective_scan (cpu backend): a worker thread ran out of memory in the forward pass")
    last = states[:, :, -1].clone(memory_format=torch.contiguous_format)
    return out.to(u.dtype), last, [states]


def backward(dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, saved, delta_softplus):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state) in the dtypes of the inputs; ``None``
    for absent optional inputs. ``dlast`` (b, d, N) is the gradient of the last state, or ``None``."""
    (states,) = saved
    return _backward(dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, states, delta_softplus,
                     CHUNK, None)


def backward_with_output(dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus):
    """``backward`` from the inputs alone, also returning the forward's output (b, d, L) in u's dtype: (out,
    gradients). Up to ``ONE_CHUNK_MAX`` steps the kernel recomputes the states from ``initial_state`` in one chunk
    and writes the output as it goes, so this costs one backward; longer sequences run the forward first for the
    chunk states."""
    b, d, length = u.shape
    if length > ONE_CHUNK_MAX:
        out, _, saved = forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus)
        return out, backward(dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, saved,
                             delta_softplus)
    out = (torch.empty if length and b and d else torch.zeros)((b, d, length), dtype=torch.float32)
    # One chunk: the kernel starts from initial_state and reads no saved state.
    states = torch.zeros((b, d, 1, A.shape[1]), dtype=torch.float32)
    grads = _backward(dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, states, delta_softplus,
                      max(length, 1), out)
    return out.to(u.dtype), grads


def _backward(dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, states, delta_softplus, chunk, out):
    """``backward`` with the states saved every ``chunk`` steps; writes the forward's output into ``out`` (b, d, L)
    float32 unless it is None."""
    lib = _library()
    b, d, length = u.shape
    n = A.shape[1]
    run = length > 0 and b > 0 and d > 0
    new = torch.empty if run else torch.zeros  # the kernel writes every element
    dA = new((d, n), dtype=torch.float32)
    dD = None if D is None else new((d,), dtype=torch.float32)
    dbias = None if delta_bias is None else new((d,), dtype=torch.float32)
    du = new((b, d, length), dtype=torch.float32)
    ddelta = new((b, d, length), dtype=torch.float32)
    dz = None if z is None else new((b, d, length), dtype=torch.float32)
    dBt = new((b, length, n), dtype=torch.float32)
    dCt = new((b, length, n), dtype=torch.float32)
    dh0 = None
    if initial_state is not None:  # with no step to run, the last state is the initial one
        dh0 = new((b, d, n), dtype=torch.float32) if run else (
            torch.zeros((b, d, n), dtype=torch.float32) if dlast is None else _f32(dlast).clone())
    if run:
        uf, df, zf = _f32(u), _f32(delta), _f32(z)
        Af, Df, bf, h0 = _f32(A), _f32(D), _f32(delta_bias), _f32(initial_state)
        Bt, Ct = _transposed_f32(B), _transposed_f32(C)
        dout_f = _f32(dout)
        dlast_f = _f32(dlast)
        rc = lib.mambavl_scan_bwd(
            _ptr(uf), _ptr(df), _ptr(Af), _ptr(Bt), _ptr(Ct), _ptr(Df), _ptr(zf), _ptr(bf), _ptr(h0),
            int(bool(delta_softplus)), b, d, length, n, chunk, _ptr(states), _ptr(dout_f), _ptr(dlast_f),
            _ptr(du), _ptr(ddelta), _ptr(dA), _ptr(dBt), _ptr(dCt), _ptr(dD), _ptr(dz), _ptr(dbias), _ptr(dh0),
            _ptr(out), torch.get_num_threads(),
        )
        if rc != 0:
            raise MemoryError("selective_scan (cpu backend): a worker thread ran out of memory in the backward pass")

    def back(g, like):
        return None if g is None else g.to(like.dtype)

    dB = torch.empty((b, n, length), dtype=B.dtype).copy_(dBt.transpose(1, 2))
    dC = torch.empty((b, n, length), dtype=C.dtype).copy_(dCt.transpose(1, 2))
    return (back(du, u), back(ddelta, delta), back(dA, A), dB, dC, back(dD, D), back(dz, z),
            back(dbias, delta_bias), back(dh0, initial_state))
