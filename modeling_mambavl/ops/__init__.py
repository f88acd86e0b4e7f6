"""Selective-scan kernels. ``selective_scan`` has the signature and semantics of mamba-ssm's ``selective_scan_fn``;
``backend=`` picks the implementation (see ``selective_scan.py``)."""

from .portable import selective_scan_portable
from .reference import selective_scan_reference
from .selective_scan import BACKENDS, available_backends, selective_scan, selective_scan_flops

__all__ = [
    "BACKENDS",
    "available_backends",
    "selective_scan",
    "selective_scan_flops",
    "selective_scan_portable",
    "selective_scan_reference",
]
