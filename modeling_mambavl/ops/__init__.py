"""Selective-scan kernels. ``selective_scan`` has the signature and semantics of mamba-ssm's ``selective_scan_fn``."""

from .reference import selective_scan_reference


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto"):
    """Selective scan (batch, d_inner, L) -> (batch, d_inner, L); see ``reference.py`` for the semantics."""
    if backend not in ("auto", "reference"):
        raise ValueError(f"selective_scan: backend {backend!r} is not available yet; use 'reference' or 'auto'.")
    return selective_scan_reference(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                    delta_softplus=delta_softplus, return_last_state=return_last_state)


__all__ = ["selective_scan"]
