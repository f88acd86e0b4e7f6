"""Selective-scan kernels. ``selective_scan`` has the signature and semantics of mamba-ssm's ``selective_scan_fn``;
``backend=`` picks the implementation (see ``dispatch.py``)."""

from .dispatch import BACKENDS, available_backends, selective_scan, selective_scan_backward, selective_scan_flops
from .portable import selective_scan_portable
from .reference import selective_scan_reference

__all__ = [
    "BACKENDS",
    "available_backends",
    "selective_scan",
    "selective_scan_backward",
    "selective_scan_flops",
    "selective_scan_portable",
    "selective_scan_reference",
]
