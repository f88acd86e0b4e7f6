"""The reference selective scan: plain sequential PyTorch, written to be read, and the oracle of the tests.

Semantics are those of mamba-ssm's ``selective_scan_fn`` (Mamba v1, real ``A``, input-dependent ``B`` / ``C``)::

    dt_t  = softplus(delta_t + delta_bias) if delta_softplus else delta_t + delta_bias     (b, d)
    h_t   = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t,  h_{-1} = initial_state or 0     (b, d, n)
    y_t   = <h_t, C_t> + D * u_t                                                          (b, d)
    out_t = y_t * silu(z_t)                                                               (b, d)

Everything runs in float32 whatever the input dtype; the output comes back in ``u``'s dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_reference(
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
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sequential selective scan.

    Args:
        u: (batch, d_inner, L) input.
        delta: (batch, d_inner, L) time steps (before ``delta_bias`` / softplus).
        A: (d_inner, N) state matrix (real, usually ``-exp(A_log)``).
        B: (batch, N, L) input matrix.
        C: (batch, N, L) output matrix.
        D: optional (d_inner,) skip connection.
        z: optional (batch, d_inner, L) gate; the output is multiplied by ``silu(z)``.
        delta_bias: optional (d_inner,) added to ``delta``.
        delta_softplus: apply softplus to ``delta + delta_bias``.
        return_last_state: also return the final state (batch, d_inner, N) in float32.
        initial_state: optional (batch, d_inner, N) state before the first step (zeros when None).

    Returns:
        out (batch, d_inner, L) in ``u``'s dtype, and the last state if asked.
    """
    dtype_in = u.dtype
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, d_inner, length = u.shape
    state = u.new_zeros(batch, d_inner, A.shape[1]) if initial_state is None else initial_state.to(u.dtype)
    ys = []
    # Per-step views from unbind (not indexing inside the loop, whose backward would write a full-size gradient
    # per step and make the backward quadratic in L).
    for dt, B_t, C_t, u_t in zip(delta.unbind(-1), B.unbind(-1), C.unbind(-1), u.unbind(-1)):
        dt = dt[:, :, None]  # (b, d, 1)
        state = torch.exp(dt * A) * state + dt * B_t[:, None, :] * u_t[:, :, None]
        ys.append((state * C_t[:, None, :]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, d_inner, 0)
    if D is not None:
        y = y + u * D.float()[None, :, None]
    if z is not None:
        y = y * F.silu(z.float())
    out = y.to(dtype_in)
    return (out, state) if return_last_state else out
