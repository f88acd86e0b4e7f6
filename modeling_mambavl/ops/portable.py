"""The ``portable`` backend: a chunked parallel scan in plain PyTorch that runs on any device (CPU, CUDA, MPS, meta).

The sequence is cut into chunks of ``chunk_size`` steps. Inside a chunk, the linear recurrence
``h_t = a_t h_{t-1} + x_t`` (``a_t = exp(dt_t A)``, ``x_t = dt_t B_t u_t``) is solved on (batch, d_inner, N, chunk)
tensors by a work-efficient (Blelloch-style) parallel scan: combine neighbouring pairs, scan the pairs recursively,
fill in the even positions; log2(chunk) levels and about twice the work of the sequential loop. It only multiplies
decays ``a <= 1`` together (for the usual ``A < 0``, ``dt >= 0``), so it is as stable as the sequential loop. Chunks
are chained through the carried state. When gradients are needed each chunk runs under ``torch.utils.checkpoint``:
the backward keeps one (batch, d_inner, N) state per chunk and recomputes a chunk's scan when it gets there.
Gradients come from autograd.

On the CPU the fused ``cpu`` backend is far faster. Note that glibc's malloc keeps the memory of the many
short-lived per-chunk tensors, so this path's resident memory on Linux can be several times its live memory
(a different allocator, e.g. jemalloc, or ``MALLOC_MMAP_THRESHOLD_=65536`` avoids it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_SIZE = 64


def _scan_pairs(a: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive scan along the last dim (a power of two) of (a, x) under (a1, x1) . (a2, x2) = (a1 a2, a2 x1 + x2).

    Returns the running products of ``a`` and the states ``h_t`` of ``h_t = a_t h_{t-1} + x_t``, ``h_{-1} = 0``.
    """
    k = x.shape[-1]
    if k == 1:
        return a, x
    a_even, a_odd = a.unflatten(-1, (k // 2, 2)).unbind(-1)
    x_even, x_odd = x.unflatten(-1, (k // 2, 2)).unbind(-1)
    # Scan over pairs: the results are the values at the odd positions.
    a_odd, x_odd = _scan_pairs(a_even * a_odd, torch.addcmul(x_odd, a_odd, x_even))
    # Even position 2j continues from odd position 2j - 1.
    x_even = torch.cat([x_even[..., :1], torch.addcmul(x_even[..., 1:], a_even[..., 1:], x_odd[..., :-1])], -1)
    a_even = torch.cat([a_even[..., :1], a_even[..., 1:] * a_odd[..., :-1]], -1)
    return torch.stack([a_even, a_odd], -1).flatten(-2), torch.stack([x_even, x_odd], -1).flatten(-2)


def _chunk_scan(h0: torch.Tensor, dt: torch.Tensor, dtu: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk. h0 (b, d, N); dt, dtu (b, d, K); A (d, N); B, C (b, N, K). Returns y (b, d, K), last state."""
    k = dt.shape[-1]
    padded = 1 << (k - 1).bit_length()
    a = torch.exp(A[:, :, None] * dt[:, :, None, :])  # (b, d, N, K)
    x = B[:, None] * dtu[:, :, None, :]  # (b, d, N, K)
    if padded != k:  # identity elements: a = 1, x = 0
        a = F.pad(a, (0, padded - k), value=1.0)
        x = F.pad(x, (0, padded - k))
    a, x = _scan_pairs(a, x)
    h = torch.addcmul(x[..., :k], a[..., :k], h0[..., None])  # a: product of the decays since the chunk start
    return torch.einsum("bdnk,bnk->bdk", h, C), h[..., -1]


def selective_scan_portable(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Chunked selective scan; same arguments, shapes and results as ``reference.selective_scan_reference``.

    Computes in float32 (float64 for float64 inputs); ``out`` (b, d_inner, L) comes back in u's dtype, the last
    state (b, d_inner, N) in the compute dtype. Peak memory is O(b * d_inner * chunk_size * N * log2(chunk_size)).
    """
    dtype_in = u.dtype
    compute = torch.float64 if dtype_in == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(compute) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    dtu = delta * u
    batch, d_inner, length = u.shape
    h = u.new_zeros(batch, d_inner, A.shape[1]) if initial_state is None else initial_state.to(compute)
    use_checkpoint = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, initial_state))
    ys = []
    # split (not slicing in the loop): its backward is one cat, where per-chunk slices would each write a full-size
    # gradient and make the backward quadratic in the number of chunks.
    chunks = zip(*(t.split(chunk_size, dim=-1) for t in (delta, dtu, B, C))) if length > 0 else ()
    for dt_c, dtu_c, B_c, C_c in chunks:
        if use_checkpoint:
            y, h = checkpoint(_chunk_scan, h, dt_c, dtu_c, A, B_c, C_c, use_reentrant=False)
        else:
            y, h = _chunk_scan(h, dt_c, dtu_c, A, B_c, C_c)
        ys.append(y)
    y = torch.cat(ys, dim=-1) if ys else u.new_zeros(batch, d_inner, 0)
    if D is not None:
        y = y + u * D.to(compute)[None, :, None]
    if z is not None:
        y = y * F.silu(z.to(compute))
    out = y.to(dtype_in)
    return (out, h) if return_last_state else out
