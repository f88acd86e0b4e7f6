"""``selective_scan``: mamba-ssm's ``selective_scan_fn`` with a choice of backends, as a ``torch.library`` op.

Backends (``backend=``):

- ``"reference"``: the sequential PyTorch loop of ``reference.py`` (the oracle of the tests; slow).
- ``"portable"``: a chunked parallel scan in plain PyTorch (``portable.py``); any device, autograd-native.
- ``"cpu"``: a fused C++ kernel with its own backward (``cpu.py``), compiled on first use.
- ``"cuda"``: mamba-ssm's CUDA kernel (``cuda.py``), when mamba-ssm is installed and the tensors are on a GPU.
- ``"triton"``: the project's own Triton kernel (``triton.py``), when triton is importable and the tensors are on a
  GPU (or on the CPU under ``TRITON_INTERPRET=1``, for tests).
- ``"auto"``: CPU tensors use ``cpu`` when its kernel can be built (else ``portable``, with a one-time warning
  saying why); CUDA tensors use ``cuda`` when mamba-ssm is importable, else ``triton`` when triton is, else
  ``portable``; other devices ``portable``.

The fused backends (``cpu``, ``cuda``, ``triton``) run through the custom ops ``mambavl::selective_scan_fwd`` /
``mambavl::selective_scan_bwd``, which have fake (meta) implementations, a registered autograd formula and a FLOP
formula, so the scan works under ``torch.compile(fullgraph=True)``, ``FakeTensorMode`` and
``torch.utils.flop_counter.FlopCounterMode``. A fused backend is a module with ``DEVICE_TYPES``,
``unavailable_reason()``, ``forward``, ``backward`` and ``saved_like`` (see ``FusedScanKernel``); adding one is an
entry in ``_FUSED_KERNELS`` and in ``_AUTO_ORDER``.

Autocast: when autocast is enabled for the tensors' device, ``u``, ``delta``, ``B``, ``C`` and ``z`` are cast to the
autocast dtype and ``A``, ``D``, ``delta_bias`` to float32 (mamba-ssm's convention); every backend keeps the state
and the exponentials in float32 and returns ``out`` in u's (cast) dtype and the last state in float32.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Protocol

import torch
from torch.utils.flop_counter import register_flop_formula

from . import cpu, cuda
from . import triton as triton_kernel
from .portable import selective_scan_portable
from .reference import selective_scan_reference

Tensor = torch.Tensor


class FusedScanKernel(Protocol):
    """What a fused backend module provides (``cpu.py`` and ``cuda.py`` are the examples)."""

    DEVICE_TYPES: tuple[str, ...]
    SUPPORTS_INITIAL_STATE: bool

    def unavailable_reason(self) -> str | None: ...

    def forward(self, u, delta, A, B, C, D, z, delta_bias, initial_state,
                delta_softplus) -> tuple[Tensor, Tensor, list[Tensor]]:
        """(out in u's dtype, last state float32 (b, d, N), tensors saved for the backward)."""

    def backward(self, dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, saved,
                 delta_softplus) -> tuple:
        """(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state) in the inputs' dtypes, None for absent
        inputs."""

    def saved_like(self, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus) -> list[Tensor]:
        """Empty tensors with the shapes and dtypes of ``forward``'s saved tensors (for fake tensors)."""

    # Optional (None where a kernel has none): ``backward`` from the inputs alone, without a forward's saved
    # tensors, returning (out, gradients); it recomputes the forward's output on the way (as mamba-ssm's backward
    # with ``recompute_out_z``), for ``selective_scan_backward``.
    backward_with_output: Callable | None


_FUSED_KERNELS: dict[str, FusedScanKernel] = {"cpu": cpu, "cuda": cuda, "triton": triton_kernel}
_UNFUSED = ("reference", "portable")
BACKENDS = ("auto", *_UNFUSED, *_FUSED_KERNELS)
# Preference of "auto" per device type; the last entry must run everywhere.
_AUTO_ORDER = {"cpu": ("cpu", "portable"), "cuda": ("cuda", "triton", "portable")}
_DEFAULT_AUTO_ORDER = ("portable",)

_warned_fallback: set[str] = set()


def _unavailable(name: str, device_type: str, initial_state: bool = False) -> str | None:
    """Why backend ``name`` cannot run on ``device_type`` tensors (with an initial state if asked), or None."""
    if name in _UNFUSED:
        return None
    kernel = _FUSED_KERNELS[name]
    if initial_state and not kernel.SUPPORTS_INITIAL_STATE:
        return "its kernel takes no initial state; pass initial_state=None, or use another backend"
    if device_type == "meta":  # shapes only: the fake implementation needs no kernel
        return None
    if device_type not in kernel.DEVICE_TYPES:
        return (f"it runs on {' / '.join(kernel.DEVICE_TYPES)} tensors and the inputs are on {device_type!r}; "
                f"move them, or use backend='portable', which runs on any device")
    return kernel.unavailable_reason()


@torch.compiler.assume_constant_result
def _resolve_backend(backend: str, device_type: str, initial_state: bool = False) -> str:
    # Runs eagerly even under torch.compile (its result is a constant of the graph): it may build the CPU kernel.
    if backend != "auto":
        reason = _unavailable(backend, device_type, initial_state)
        if reason is not None:
            raise RuntimeError(f"selective_scan: backend={backend!r} cannot run: {reason}")
        return backend
    reasons = []
    for name in _AUTO_ORDER.get(device_type, _DEFAULT_AUTO_ORDER):
        reason = _unavailable(name, device_type, initial_state)
        if reason is None:
            if reasons and device_type == "cpu" and device_type not in _warned_fallback:
                _warned_fallback.add(device_type)
                warnings.warn(f"selective_scan: using the slower '{name}' backend for {device_type} tensors because "
                              + "; ".join(reasons), RuntimeWarning, stacklevel=3)
            return name
        reasons.append(f"backend '{name}' is unavailable: {reason}")
    raise AssertionError("unreachable: the last backend of every auto order runs everywhere")


def _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state) -> None:
    def fail(name: str, t: Tensor, expected: str):
        raise ValueError(f"selective_scan: `{name}` has shape {tuple(t.shape)}, expected {expected}")

    tensors = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias,
               "initial_state": initial_state}
    for name, t in tensors.items():
        if t is None:
            if name in ("u", "delta", "A", "B", "C"):
                raise TypeError(f"selective_scan: `{name}` is required (got None)")
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"selective_scan: `{name}` must be a torch.Tensor, got {type(t).__name__}")
        if not t.dtype.is_floating_point:
            raise TypeError(f"selective_scan: `{name}` has dtype {t.dtype}; expected a real floating dtype "
                            "(float32, bfloat16, float16; complex A is not supported)")
        if t.device != u.device:
            raise ValueError(f"selective_scan: `{name}` is on {t.device} but `u` is on {u.device}; "
                             "put all inputs on one device")
    if u.dim() != 3:
        fail("u", u, "(batch, d_inner, L)")
    batch, d_inner, length = u.shape
    if A.dim() != 2 or A.shape[0] != d_inner:
        fail("A", A, f"(d_inner, N) = ({d_inner}, N)")
    n = A.shape[1]
    for name, t in (("delta", delta), ("z", z)):
        if t is not None and t.shape != u.shape:
            fail(name, t, f"(batch, d_inner, L) = {tuple(u.shape)}, the shape of `u`")
    for name, t in (("B", B), ("C", C)):
        if t.shape != (batch, n, length):
            fail(name, t, f"(batch, N, L) = {(batch, n, length)} (N = A.shape[1]; one B / C per batch element, "
                          "shared by all channels)")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (d_inner,):
            fail(name, t, f"(d_inner,) = ({d_inner},)")
    if initial_state is not None and initial_state.shape != (batch, d_inner, n):
        fail("initial_state", initial_state, f"(batch, d_inner, N) = {(batch, d_inner, n)}, the shape of the last "
                                             "state")


# --- the custom ops -------------------------------------------------------------------------------------------


def _kernel(backend: str) -> FusedScanKernel:
    try:
        return _FUSED_KERNELS[backend]
    except KeyError:
        raise ValueError(f"mambavl::selective_scan ops: backend {backend!r} is not a fused kernel; choose one of "
                         f"{', '.join(_FUSED_KERNELS)} (or call modeling_mambavl.ops.selective_scan)") from None


# Explicit schemas: independent of how a torch version reads this module's postponed annotations.
_FWD_SCHEMA = ("(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, "
               "Tensor? initial_state, bool delta_softplus, str backend) -> (Tensor, Tensor, Tensor[])")
_BWD_SCHEMA = ("(Tensor dout, Tensor? dlast, Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, "
               "Tensor? z, Tensor? delta_bias, Tensor? initial_state, Tensor[] saved, bool delta_softplus, "
               "str backend) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")


@torch.library.custom_op("mambavl::selective_scan_fwd", mutates_args=(), schema=_FWD_SCHEMA)
def _scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
              delta_bias: Tensor | None, initial_state: Tensor | None, delta_softplus: bool,
              backend: str) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Fused forward: (out (b, d, L) in u's dtype, last state (b, d, N) float32, tensors saved for the backward)."""
    return _kernel(backend).forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus)


@_scan_fwd.register_fake
def _scan_fwd_fake(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, backend):
    b, d, length = u.shape
    saved = _kernel(backend).saved_like(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus)
    return u.new_empty((b, d, length)), u.new_empty((b, d, A.shape[1]), dtype=torch.float32), saved


@torch.library.custom_op("mambavl::selective_scan_bwd", mutates_args=(), schema=_BWD_SCHEMA)
def _scan_bwd(dout: Tensor, dlast: Tensor | None, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
              D: Tensor | None, z: Tensor | None, delta_bias: Tensor | None, initial_state: Tensor | None,
              saved: list[Tensor], delta_softplus: bool, backend: str) -> tuple[Tensor, ...]:
    """Fused backward: (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state); absent optional inputs get
    empty tensors."""
    grads = _kernel(backend).backward(dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, saved,
                                      delta_softplus)
    return tuple(u.new_empty(0) if g is None else g for g in grads)


@_scan_bwd.register_fake
def _scan_bwd_fake(dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, saved, delta_softplus, backend):
    def like(t):
        return u.new_empty(0) if t is None else t.new_empty(t.shape)

    return tuple(like(t) for t in (u, delta, A, B, C, D, z, delta_bias, initial_state))


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, backend = inputs
    _, _, saved = output
    ctx.delta_softplus = delta_softplus
    ctx.backend = backend
    ctx.optional = (D is not None, z is not None, delta_bias is not None, initial_state is not None)
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, *saved)


def _backward(ctx, dout, dlast, dsaved):
    u, delta, A, B, C, D, z, delta_bias, initial_state, *saved = ctx.saved_tensors
    *grads, dh0 = torch.ops.mambavl.selective_scan_bwd(
        dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, saved, ctx.delta_softplus, ctx.backend)
    du, ddelta, dA, dB, dC, dD, dz, dbias = grads
    has_D, has_z, has_bias, has_h0 = ctx.optional
    return (du, ddelta, dA, dB, dC, dD if has_D else None, dz if has_z else None, dbias if has_bias else None,
            dh0 if has_h0 else None, None, None)


_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_flops(u_shape, A_shape, has_D: bool = False, has_z: bool = False) -> int:
    """Forward FLOPs, mamba-ssm's count: 9 B D L N (exp(dt A), dt B u, the recurrence, <h, C>), plus B D L each for
    the D skip and the z gate."""
    b, d, length = u_shape
    flops = 9 * b * d * length * A_shape[1]
    return flops + b * d * length * (int(has_D) + int(has_z))


@register_flop_formula(torch.ops.mambavl.selective_scan_fwd)
def _scan_fwd_flop_formula(u_shape, delta_shape, A_shape, B_shape, C_shape, D_shape, z_shape, delta_bias_shape,
                           *args, out_shape=None, **kwargs) -> int:
    return selective_scan_flops(u_shape, A_shape, D_shape is not None, z_shape is not None)


@register_flop_formula(torch.ops.mambavl.selective_scan_bwd)
def _scan_bwd_flop_formula(dout_shape, dlast_shape, u_shape, delta_shape, A_shape, B_shape, C_shape, D_shape,
                           z_shape, delta_bias_shape, initial_state_shape, *args, out_shape=None, **kwargs) -> int:
    # The usual convention: the backward costs twice the forward (recomputing the states is not counted).
    return 2 * selective_scan_flops(u_shape, A_shape, D_shape is not None, z_shape is not None)


# --- the public function ----------------------------------------------------------------------------------------


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str = "auto",
    initial_state: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan with the signature and semantics of mamba-ssm's ``selective_scan_fn``, plus an optional
    initial state::

        dt_t  = softplus(delta_t + delta_bias) if delta_softplus else delta_t + delta_bias
        h_t   = exp(dt_t A) h_{t-1} + dt_t B_t u_t,   h_{-1} = initial_state (zeros when None)
        out_t = (<h_t, C_t> + D u_t) * silu(z_t)

    Args:
        u: (batch, d_inner, L) input.
        delta: (batch, d_inner, L) time steps, before ``delta_bias`` / softplus.
        A: (d_inner, N) state matrix (real; usually ``-exp(A_log)``).
        B, C: (batch, N, L) input and output matrices.
        D: optional (d_inner,) skip.
        z: optional (batch, d_inner, L) gate.
        delta_bias: optional (d_inner,) added to ``delta``.
        delta_softplus: apply softplus to ``delta + delta_bias``.
        return_last_state: also return the final state (batch, d_inner, N), float32.
        backend: "auto", "reference", "portable", "cpu", "cuda" or "triton" (see the module docstring).
        initial_state: optional (batch, d_inner, N) state before the first step, gradients flowing back to it.
            Feeding one call's last state to the next call's ``initial_state`` scans a long sequence in pieces with
            the result of one call. mamba-ssm's kernel (``cuda``) takes none: ``auto`` then skips it.

    Returns:
        ``out`` (batch, d_inner, L) in u's dtype, and the last state if ``return_last_state``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"selective_scan: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    device_type = u.device.type
    name = _resolve_backend(backend, device_type, initial_state is not None)

    if _autocasting(device_type):
        u, delta, A, B, C, D, z, delta_bias, initial_state = _autocast_inputs(
            device_type, u, delta, A, B, C, D, z, delta_bias, initial_state)
        with torch.autocast(device_type, enabled=False):
            return _run(name, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state)
    return _run(name, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state)


def _autocasting(device_type: str) -> bool:
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def _autocast_inputs(device_type, u, delta, A, B, C, D, z, delta_bias, initial_state) -> tuple:
    """The inputs as autocast runs the scan (mamba-ssm's convention): ``u``, ``delta``, ``B``, ``C``, ``z`` in the
    autocast dtype; ``A``, ``D``, ``delta_bias`` and the initial state in float32."""
    dtype = torch.get_autocast_dtype(device_type)

    def cast(t, to):
        return None if t is None else t.to(to)

    return (cast(u, dtype), cast(delta, dtype), cast(A, torch.float32), cast(B, dtype), cast(C, dtype),
            cast(D, torch.float32), cast(z, dtype), cast(delta_bias, torch.float32), cast(initial_state, torch.float32))


def selective_scan_backward(
    dout: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    backend: str = "auto",
    initial_state: Tensor | None = None,
    dlast: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor | None, ...]]:
    """The gradients of ``selective_scan`` from its inputs alone, with its output recomputed: for callers that run
    the scan without autograd in the forward and recompute in the backward (activation checkpointing), who need the
    output for the next operation's weight gradient.

    Arguments as ``selective_scan``, plus ``dout`` (batch, d_inner, L), the gradient of ``out``, and ``dlast``
    (batch, d_inner, N), that of the last state (None: zero). Autocast casts the inputs as ``selective_scan`` does.

    Returns:
        ``out`` (batch, d_inner, L) in u's (cast) dtype, and the gradients (du, ddelta, dA, dB, dC, dD, dz,
        ddelta_bias, dinitial_state) in the (cast) inputs' dtypes, None for absent optional inputs. The ``cpu``
        kernel recomputes the states in its backward anyway and writes ``out`` on the way, so up to its
        ``ONE_CHUNK_MAX`` steps this costs one backward and no forward; other backends run the forward with autograd
        and its backward.
    """
    if backend not in BACKENDS:
        raise ValueError(f"selective_scan_backward: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    gradients = [("dout", dout, tuple(u.shape), "`u`")]
    if dlast is not None:
        gradients.append(("dlast", dlast, (u.shape[0], u.shape[1], A.shape[1]), "the last state (batch, d_inner, N)"))
    for name, t, shape, of in gradients:
        if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
            raise TypeError(f"selective_scan_backward: `{name}` must be a real floating torch.Tensor, got "
                            f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
        if t.device != u.device:
            raise ValueError(f"selective_scan_backward: `{name}` is on {t.device} but `u` is on {u.device}")
        if tuple(t.shape) != shape:
            raise ValueError(f"selective_scan_backward: `{name}` has shape {tuple(t.shape)}, expected {shape}, the "
                             f"shape of {of}")
    device_type = u.device.type
    name = _resolve_backend(backend, device_type, initial_state is not None)
    inputs = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    if _autocasting(device_type):
        inputs = _autocast_inputs(device_type, *inputs)
        dout = dout.to(inputs[0].dtype)
    with torch.autocast(device_type, enabled=False):
        kernel = _FUSED_KERNELS.get(name)
        if kernel is not None and kernel.backward_with_output is not None:
            return kernel.backward_with_output(dout, dlast, *inputs, bool(delta_softplus))
        leaves = [None if t is None else t.detach().requires_grad_() for t in inputs]
        with torch.enable_grad():
            out, last = _run(name, *leaves[:8], delta_softplus, True, leaves[8])
        wanted = [t for t in leaves if t is not None]
        outputs, grad_outputs = ([out, last], [dout, dlast]) if dlast is not None else ([out], [dout])
        found = iter(torch.autograd.grad(outputs, wanted, grad_outputs, allow_unused=True, materialize_grads=True))
        grads = tuple(None if t is None else next(found) for t in leaves)
    return out.detach(), grads


def _run(name, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state):
    if name in _UNFUSED:
        scan = selective_scan_reference if name == "reference" else selective_scan_portable
        return scan(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                    return_last_state=return_last_state, initial_state=initial_state)
    out, last_state, _ = torch.ops.mambavl.selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                                             bool(delta_softplus), name)
    return (out, last_state) if return_last_state else out


def available_backends(device: str | torch.device = "cpu") -> list[str]:
    """The backends that can run on tensors of ``device`` here (may build the CPU kernel)."""
    device_type = torch.device(device).type
    return [name for name in BACKENDS[1:] if _unavailable(name, device_type) is None]
