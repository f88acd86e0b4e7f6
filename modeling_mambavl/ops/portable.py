"""The ``portable`` backend: a chunked parallel scan in plain PyTorch that runs on any device (CPU, CUDA, MPS, meta).

The sequence is cut into chunks of ``chunk_size`` steps. Inside a chunk, the linear recurrence
``h_t = a_t h_{t-1} + x_t`` (``a_t = exp(dt_t A)``, ``x_t = dt_t B_t u_t``) is solved by a Hillis-Steele scan on
(batch, d_inner, chunk, N) tensors in log2(chunk) steps; it only multiplies decays ``a <= 1`` together (for the usual
``A < 0``, ``dt >= 0``), so it is as stable as the sequential loop. Chunks are chained through the carried state.
When gradients are needed each chunk runs under ``torch.utils.checkpoint``, so the backward keeps one
(batch, d_inner, N) state per chunk rather than the scan's intermediates. Gradients come from autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_SIZE = 64


def _chunk_scan(h0: torch.Tensor, dt: torch.Tensor, dtu: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk. h0 (b, d, N); dt, dtu (b, d, K); A (d, N); B, C (b, N, K). Returns y (b, d, K), last state."""
    a = torch.exp(dt.unsqueeze(-1) * A[:, None, :])  # (b, d, K, N)
    x = dtu.unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)  # (b, d, K, N)
    length = a.shape[2]
    step = 1
    while step < length:
        # Inclusive scan of the pairs (a, x) under (a1, x1) . (a2, x2) = (a1 a2, a2 x1 + x2).
        x = x + a * F.pad(x[:, :, :-step], (0, 0, step, 0))
        a = a * F.pad(a[:, :, :-step], (0, 0, step, 0), value=1.0)
        step *= 2
    h = x + a * h0.unsqueeze(2)  # a is now the product of the decays since the chunk start
    y = torch.einsum("bdkn,bnk->bdk", h, C)
    return y, h[:, :, -1]


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
    h = u.new_zeros(batch, d_inner, A.shape[1])
    use_checkpoint = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C))
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
