"""The Mamba-v1 mixer of MambaVL, able to read its state matrix ``A`` from outside.

Parameter names and shapes are those of transformers' ``MambaMixer`` / mamba-ssm's ``Mamba`` (``in_proj``,
``conv1d``, ``x_proj``, ``dt_proj``, ``D``, ``out_proj``, and ``A_log`` when the mixer owns its state matrix), so Mamba
weights port one-to-one. For SSM fusion the shared ``A_log`` lives once on the fusion layer and is passed to both
mixers at call time: a parameter is never registered in two modules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from .ops import selective_scan


class MambaVLMixer(nn.Module):
    """Selective state-space mixer (Mamba v1): in_proj -> causal depthwise conv + SiLU -> selective scan gated by
    SiLU(z) -> out_proj.

    Padding (``attention_mask`` 0) is neutral: padded positions are zeroed before the convolution and after it, and
    get Δ = 0 in the scan, so the state passes through them unchanged and left, right or extra padding leave the
    outputs at the real positions unchanged.
    """

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        state_size: int = 16,
        conv_kernel: int = 4,
        dt_rank: int | None = None,
        owns_state_matrix: bool = False,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.state_size = state_size
        self.dt_rank = dt_rank if dt_rank is not None else math.ceil(hidden_size / 16)
        self.scan_backend = scan_backend
        self.in_proj = nn.Linear(hidden_size, 2 * intermediate_size, bias=False)
        self.conv1d = nn.Conv1d(
            intermediate_size, intermediate_size, kernel_size=conv_kernel, groups=intermediate_size,
            padding=conv_kernel - 1, bias=True,
        )
        self.x_proj = nn.Linear(intermediate_size, self.dt_rank + 2 * state_size, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, intermediate_size, bias=True)
        if owns_state_matrix:
            self.A_log = nn.Parameter(torch.empty(intermediate_size, state_size))
        else:
            self.register_parameter("A_log", None)
        self.D = nn.Parameter(torch.empty(intermediate_size))
        self.out_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        A_log: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(batch, L, hidden_size) -> (batch, L, hidden_size).

        Args:
            hidden_states: (batch, L, hidden_size).
            attention_mask: optional (batch, L), 1 for real positions and 0 for padding.
            A_log: (intermediate_size, state_size), the shared state matrix; required iff the mixer owns none.
        """
        if (A_log is None) == (self.A_log is None):
            raise ValueError(
                "MambaVLMixer: pass A_log exactly when the mixer has no A_log of its own "
                f"(owns one: {self.A_log is not None}, A_log passed: {A_log is not None})"
            )
        A_log = self.A_log if A_log is None else A_log
        seq_len = hidden_states.shape[1]
        mask = None
        if attention_mask is not None:
            mask = attention_mask.to(hidden_states.dtype)[:, None, :]  # (b, 1, L)
            hidden_states = hidden_states * mask.transpose(1, 2)

        x, z = self.in_proj(hidden_states).transpose(1, 2).chunk(2, dim=1)  # (b, d_inner, L) each
        x = F.silu(self.conv1d(x)[..., :seq_len])
        if mask is not None:
            x = x * mask

        dt, B, C = torch.split(self.x_proj(x.transpose(1, 2)), [self.dt_rank, self.state_size, self.state_size], -1)
        dt = self.dt_proj.weight @ dt.transpose(1, 2)  # (b, d_inner, L), bias added with the softplus
        A = -torch.exp(A_log.float())
        B, C = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()  # (b, N, L)
        if mask is None:
            with record_function("mambavl.selective_scan"):
                y = selective_scan(
                    x, dt, A, B, C, D=self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                    backend=self.scan_backend,
                )
        else:
            # Δ = 0 at padding: exp(0 * A) = 1 keeps the state and Δ·B·u adds nothing.
            dt = F.softplus(dt + self.dt_proj.bias[:, None].to(dt.dtype)) * mask
            with record_function("mambavl.selective_scan"):
                y = selective_scan(x, dt, A, B, C, D=self.D.float(), z=z, backend=self.scan_backend)
        return self.out_proj(y.transpose(1, 2).to(hidden_states.dtype))


class MambaVLRMSNorm(nn.Module):
    """RMSNorm (as Mamba's) for the pre-norm residual fusion stack."""

    def __init__(self, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dtype = hidden_states.dtype
        hidden_states = hidden_states.float()
        hidden_states = hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * hidden_states.to(dtype)
