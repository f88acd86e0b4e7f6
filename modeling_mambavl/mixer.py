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
from torch.autograd.function import once_differentiable
from torch.profiler import record_function

from .configuration.configuration_mambavl import MIXER_RECOMPUTE_LEVELS
from .ops import selective_scan, selective_scan_backward


class MambaVLMixer(nn.Module):
    """Selective state-space mixer (Mamba v1): in_proj -> causal depthwise conv + SiLU -> selective scan gated by
    SiLU(z) -> out_proj.

    Padding (``attention_mask`` 0) is neutral: padded positions are zeroed before the convolution and after it, and
    get Δ = 0 in the scan, so the state passes through them unchanged and left, right or extra padding leave the
    outputs at the real positions unchanged.

    On the CPU, a sequence longer than ``chunk_size`` tokens runs in equal pieces of at most ``chunk_size``, the last
    ``conv_kernel - 1`` inputs of the convolution and the scan's state carried from one piece to the next. The outputs
    and gradients are those of one pass (up to float rounding), but a piece's (d_inner, piece) activations are still
    in the CPU's cache when the next operation reads them, where a whole video's go out to memory and back between
    every two operations. This keeps the cost linear in the length on CPUs (see BENCHMARKS.md).

    ``recompute`` (``"none"``, ``"speed"`` or ``"memory"``, as the config's ``mixer_recompute``) trades time for
    memory when gradients are needed: at ``"speed"`` a piece keeps for the backward only its input projection's
    output (batch, piece, 2 * intermediate_size), at ``"memory"`` only its input (batch, piece, hidden_size). The
    backward recomputes one piece at a time (``RecomputedPiece``, the carried convolution inputs and scan state
    being the piece's inputs) only what the scan's backward needs, the convolution, Δ, B and C (and the input
    projection at ``"memory"``); the scan's backward recomputes its output on the way (``selective_scan_backward``),
    so neither the scan nor the output projection runs forward twice. The transient memory is that of one piece;
    pieces are then at most ``recompute_chunk_size`` tokens as well (``None``: ``chunk_size`` alone). Each piece's
    output goes into the full-length output as soon as it is computed, the carries are copied into slots made once,
    and a piece's forward builds no graph, so nothing of a finished piece but its input and the small carries stays
    alive, and nothing small and long-lived is allocated between the pieces' intermediates (which would fragment
    the allocator's heap). Parameters are the piece's inputs, so ``torch.autograd.grad`` works as ``backward`` does.
    With recomputation, tensors on any device run in pieces; without it, GPU tensors run in one pass.
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
        chunk_size: int | None = None,
        recompute: str = "none",
        recompute_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        if recompute not in MIXER_RECOMPUTE_LEVELS:
            raise ValueError(f"MambaVLMixer: recompute={recompute!r} is not one of "
                             f"{', '.join(MIXER_RECOMPUTE_LEVELS)}")
        self.chunk_size = chunk_size
        self.recompute = recompute
        self.recompute_chunk_size = recompute_chunk_size
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
        A = -torch.exp(A_log.float())
        mask = None if attention_mask is None else attention_mask.to(hidden_states.dtype)
        recompute = self.recompute if torch.is_grad_enabled() else "none"
        seq_len = hidden_states.shape[1]
        on_cpu = hidden_states.device.type == "cpu"
        # mamba-ssm's kernel takes no initial state, so it cannot continue a piece: one pass there.
        chunk_size = self.chunk_size
        if recompute != "none" and self.recompute_chunk_size:
            chunk_size = min(chunk_size or seq_len, self.recompute_chunk_size)
        in_pieces = (chunk_size and seq_len > chunk_size and (on_cpu or recompute != "none")
                     and self.scan_backend != "cuda")
        if not in_pieces:
            return self._run_piece(recompute, hidden_states, mask, A)[0]
        # Pieces of equal length (no short last one), at most chunk_size each.
        n_pieces = -(-seq_len // chunk_size)
        step = -(-seq_len // n_pieces)
        # split, not slicing: its backward is one cat, where each slice's would write a full-length gradient.
        pieces = hidden_states.split(step, dim=1)
        masks = [None] * len(pieces) if mask is None else mask.split(step, dim=1)
        output, carry, slots, start = None, (None, None), [], 0
        # The recomputed pieces' parameter gradients, summed in place as each piece's backward makes them and
        # returned by the first piece's, whose backward runs last (see RecomputedPiece).
        gradient_sum = GradientSum()
        for i, (piece, piece_mask) in enumerate(zip(pieces, masks)):
            last = i == len(pieces) - 1
            out, carry = self._run_piece(recompute, piece, piece_mask, A, *carry, keep_state=not last,
                                         gradient_sum=gradient_sum, returns_sum=i == 0)
            if output is None:  # the dtype of the pieces' outputs (autocast's, if on)
                output = out.new_empty(hidden_states.shape[:2] + out.shape[2:])
            if not last:
                # The carries live until the backward. Made inside a piece, each would sit among that piece's freed
                # intermediates and split the free space the next piece's intermediates need, so the heap would grow
                # by about one piece's intermediates per piece (glibc); copied into slots made together, once, they
                # leave the pieces' memory in one reusable block.
                if not slots:
                    slots = [tuple(torch.empty_like(t) for t in carry) for _ in range(len(pieces) - 1)]
                carry = tuple(slot.copy_(t) for slot, t in zip(slots[i], carry))
            # Written into the full-length output at once (not kept for one cat at the end): each piece's output is
            # freed before the next piece runs, so the pieces' transients reuse the same memory.
            output = PlacePiece.apply(output, out, start)
            start += out.shape[1]
            del out
        return output

    def _run_piece(
        self,
        recompute: str,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        A: torch.Tensor,
        conv_context: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        keep_state: bool = False,
        gradient_sum: GradientSum | None = None,
        returns_sum: bool = True,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor | None, torch.Tensor | None]]:
        """One piece at the given recompute level; arguments as ``_mix``, the results (output, (conv context,
        state)). At a recomputing level, the pieces of one pass share ``gradient_sum`` (None: a piece of its own), and
        the piece whose backward runs last (the first) ``returns_sum``."""
        if recompute == "none":
            out, conv_context, state = self._mix(hidden_states, mask, A, conv_context, state, keep_state)
            return out, (conv_context, state)
        projected = recompute == "speed"
        inputs = self._project(hidden_states, mask) if projected else hidden_states
        names, parameters = zip(*((name, p) for name, p in self.named_parameters() if name != "A_log"))
        if gradient_sum is None:
            gradient_sum, returns_sum = GradientSum(), True
        result = RecomputedPiece.apply(self, projected, inputs, mask, A, conv_context, state, keep_state,
                                       (gradient_sum, returns_sum, names), *parameters)
        return (result[0], tuple(result[1:])) if keep_state else (result, (None, None))

    def _mix(
        self,
        hidden_states: torch.Tensor,
        mask: torch.Tensor | None,
        A: torch.Tensor,
        conv_context: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        keep_state: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """One pass over (batch, L, hidden_size), continuing from the convolution's last ``conv_kernel - 1`` inputs
        ``conv_context`` (batch, d_inner, conv_kernel - 1) and the scan ``state`` (batch, d_inner, N) when given.
        Returns the output (batch, L, hidden_size) and, with ``keep_state``, the same two for the tokens after these
        (else ``None, None``)."""
        return self._mix_projected(self._project(hidden_states, mask), mask, A, conv_context, state, keep_state)

    def _project(self, hidden_states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(batch, L, hidden_size) -> the input projection (batch, L, 2 * d_inner), padded positions zeroed first."""
        if mask is not None:
            hidden_states = hidden_states * mask[:, :, None]
        return self.in_proj(hidden_states)

    def _mix_projected(
        self,
        projected: torch.Tensor,
        mask: torch.Tensor | None,
        A: torch.Tensor,
        conv_context: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        keep_state: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``_mix`` after the input projection: ``projected`` (batch, L, 2 * d_inner)."""
        scan_inputs, next_context = self._scan_inputs(projected, mask, conv_context, keep_state)
        with record_function("mambavl.selective_scan"):
            y = selective_scan(**scan_inputs, A=A, return_last_state=keep_state, backend=self.scan_backend,
                               initial_state=state)
        if keep_state:
            y, state = y
        out = self.out_proj(y.transpose(1, 2).to(projected.dtype))
        return (out, next_context, state) if keep_state else (out, None, None)

    def _scan_inputs(
        self,
        projected: torch.Tensor,
        mask: torch.Tensor | None,
        conv_context: torch.Tensor | None,
        keep_state: bool,
    ) -> tuple[dict, torch.Tensor | None]:
        """The selective scan's inputs from the input projection (batch, L, 2 * d_inner): ``u``, ``delta`` and ``z``
        (batch, d_inner, L), ``B`` and ``C`` (batch, N, L), ``D``, ``delta_bias`` and ``delta_softplus`` (all but
        ``A`` and the initial state), and, with ``keep_state``, the convolution's last ``conv_kernel - 1`` inputs
        (batch, d_inner, conv_kernel - 1) for the tokens after these (else None)."""
        seq_len = projected.shape[1]
        if mask is not None:
            mask = mask[:, None, :]  # (b, 1, L)
        x, z = projected.transpose(1, 2).chunk(2, dim=1)  # (b, d_inner, L) each
        if conv_context is None:
            conv_in = x
            x = self.conv1d(x)[..., :seq_len]
        else:
            conv_in = torch.cat([conv_context, x], dim=-1)
            if is_plain(self.conv1d, nn.Conv1d):
                x = F.conv1d(conv_in, self.conv1d.weight, self.conv1d.bias, groups=self.intermediate_size)
            else:  # called, as the first piece's is, so that an adapter or a hook acts on every piece
                x = self.conv1d(conv_in)[..., conv_context.shape[-1]:conv_context.shape[-1] + seq_len]
        x = F.silu(x)
        if mask is not None:
            x = x * mask

        dt, B, C = torch.split(self.x_proj(x.transpose(1, 2)), [self.dt_rank, self.state_size, self.state_size], -1)
        if is_plain(self.dt_proj, nn.Linear):
            dt = self.dt_proj.weight @ dt.transpose(1, 2)  # (b, d_inner, L), bias added with the softplus
            delta_bias = self.dt_proj.bias.float()
        else:  # an adapter or a hook on dt_proj acts only when the module is called; it adds its bias itself
            dt, delta_bias = self.dt_proj(dt).transpose(1, 2), None
        B, C = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()  # (b, N, L)
        inputs = dict(u=x, delta=dt, B=B, C=C, D=self.D.float(), z=z, delta_bias=delta_bias, delta_softplus=True)
        if mask is not None:
            # Δ = 0 at padding: exp(0 * A) = 1 keeps the state and Δ·B·u adds nothing.
            # The dt bias is added (and the softplus taken) in fp32 as the fused path does, not in the autocast dtype.
            dt = dt.float() if delta_bias is None else dt.float() + delta_bias[:, None]
            inputs.update(delta=F.softplus(dt) * mask, delta_bias=None, delta_softplus=False)
        if not keep_state:
            return inputs, None
        # The convolution's last conv_kernel - 1 inputs (zeros before the start, as its padding): a slice, which the
        # pieces' loop copies into its slot at once (kept, it would hold the piece's whole (b, d_inner, L) input).
        context = self.conv1d.weight.shape[-1] - 1  # the weight, which an adapter exposes as the module would
        if conv_in.shape[-1] < context:
            conv_in = F.pad(conv_in, (context - conv_in.shape[-1], 0))
        return inputs, conv_in[..., conv_in.shape[-1] - context:]


def is_plain(module: nn.Module, kind: type[nn.Module]) -> bool:
    """Whether ``module`` is exactly a ``kind`` (``nn.Linear``, ``nn.Conv1d``) without hooks (forward or backward), so
    that using its weight directly instead of calling it changes nothing: a PEFT adapter or a hook acts only when the
    module is called."""
    return type(module) is kind and not (module._forward_hooks or module._forward_pre_hooks
                                         or module._backward_hooks or module._backward_pre_hooks)


class GradientSum(dict):
    """The parameter gradients of one pass's recomputed pieces, by the parameter's input position, summed in place
    as each piece's backward makes them: returned by the piece whose backward runs last, the sum then costs one set of
    parameter gradients and one gradient at a time, as accumulating into ``.grad`` would (each piece returning its
    own would hold the autograd engine's running sum and a whole second set at once)."""

    def add(self, position: int, grad: torch.Tensor) -> None:
        if position in self:
            self[position].add_(grad)
        else:
            self[position] = grad


class Recomputation(nn.Module):
    """Calls a function of ``mixer`` as this module's forward, so that ``torch.func.functional_call`` runs it with
    the mixer's parameters replaced (keys ``mixer.<parameter name>``)."""

    def __init__(self, mixer: MambaVLMixer) -> None:
        super().__init__()
        self.mixer = mixer

    def forward(self, function):
        return function()


class RecomputedPiece(torch.autograd.Function):
    """One piece of a mixer at a recomputing level, as mamba-ssm's ``MambaInnerFn``: the forward runs
    ``_mix_projected`` (``projected``) or ``_mix`` without recording a graph and keeps only its input; the backward
    recomputes the scan's inputs (the input projection at ``"memory"``, the convolution, Δ, B, C), takes the
    scan's gradients with ``selective_scan_backward`` (which recomputes the scan's output on the way, where the
    kernel allows, instead of running the scan forward again) and the output projection's by hand, and returns
    every input's and parameter's gradient, so ``torch.autograd.grad`` works as ``backward`` does. An output
    projection that is not a plain ``nn.Linear`` without bias or hooks (a PEFT adapter, a forward or backward hook, a
    bias) is not differentiated by hand: the backward then recomputes the whole piece with autograd. The backward
    recomputes with the parameter tensors the forward was given (``torch.func.functional_call``, or anything else that
    swaps the module's parameter tensors, may have restored others since), about 50 µs per piece.

    Inputs: the mixer, ``projected``, ``inputs`` (batch, l, hidden_size) or its projection (batch, l, 2 * d_inner),
    the float mask (batch, l) or None, ``A`` (d_inner, N), the carried conv context and state or None,
    ``keep_state``, (the pass's ``GradientSum``, whether this piece returns it, the parameters' names), then the mixer's parameters but
    ``A_log``. Outputs: (batch, l, hidden_size), and the next conv context and state with ``keep_state``. The pieces
    of a pass chain through their carries, so the first piece's backward runs after every other's: it returns the
    parameters' summed gradients, the others none."""

    PARAMETERS = 9  # the position of the first parameter among the inputs

    @staticmethod
    def forward(ctx, mixer, projected, inputs, mask, A, conv_context, state, keep_state, bookkeeping, *parameters):
        device_type = inputs.device.type
        ctx.autocast = (device_type, torch.get_autocast_dtype(device_type),
                        torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type))
        ctx.mixer, ctx.projected, ctx.keep_state = mixer, projected, keep_state
        ctx.gradient_sum, ctx.returns_sum, ctx.names = bookkeeping
        out_proj = mixer.out_proj
        # The backward by hand takes the weight's gradient only: a bias (a ported Mamba's use_bias=True projection)
        # takes the general path, as an adapter or a hook does.
        ctx.by_hand = is_plain(out_proj, nn.Linear) and out_proj.bias is None
        # By position: saved tensors are not always unpacked as the same Python objects.
        ctx.out_weight = RecomputedPiece.PARAMETERS + ctx.names.index("out_proj.weight") if ctx.by_hand else None
        ctx.save_for_backward(inputs, mask, A, conv_context, state, *parameters)
        mix = mixer._mix_projected if projected else mixer._mix
        out, next_context, next_state = mix(inputs, mask, A, conv_context, state, keep_state)
        return (out, next_context, next_state) if keep_state else out

    @staticmethod
    @once_differentiable  # the recomputation is not differentiated again: a second-order gradient is an error
    def backward(ctx, dout, dnext_context=None, dnext_state=None):
        saved, needs = ctx.saved_tensors, ctx.needs_input_grad
        mixer, first = ctx.mixer, RecomputedPiece.PARAMETERS
        parameters = dict(enumerate(saved[5:], start=first))
        # The Function's inputs by position: 2 inputs, 3 mask, 4 A, 5 conv context, 6 state, 9... parameters.
        leaves = {i: None if saved[i - 2] is None else saved[i - 2].detach().requires_grad_(needs[i])
                  for i in (2, 4, 5, 6)}
        inputs, A, conv_context, state = leaves.values()
        mask, gradient_sum, returns_sum = saved[1], ctx.gradient_sum, ctx.returns_sum
        if not ctx.keep_state:  # the last piece, whose backward runs first: nothing left from a failed backward
            gradient_sum.clear()
        device_type, dtype, autocast = ctx.autocast

        def recompute() -> tuple:
            projected = inputs if ctx.projected else mixer._project(inputs, mask)
            if ctx.by_hand:
                return mixer._scan_inputs(projected, mask, conv_context, ctx.keep_state)
            return mixer._mix_projected(projected, mask, A, conv_context, state, ctx.keep_state)

        # With the parameters the forward was given, not those the module holds now: torch.func.functional_call (or
        # anything else that swaps the module's parameter tensors) restores others between the forward and backward.
        swapped = {f"mixer.{name}": parameters[first + i] for i, name in enumerate(ctx.names)}
        with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=autocast):
            recomputed = torch.func.functional_call(Recomputation(mixer), swapped, (recompute,))
        if ctx.by_hand:
            scan_inputs, next_context = recomputed
        else:
            out, next_context, next_state = recomputed
        result = [None] * len(needs)
        if ctx.by_hand:
            # The output projection's backward by hand: the scan's output it needs comes from the scan's backward.
            weight = parameters[ctx.out_weight]
            dy = (dout @ weight.to(dout.dtype)).transpose(1, 2)  # (b, d_inner, l)
            y, grads = selective_scan_backward(dy, A=A, backend=mixer.scan_backend, initial_state=state,
                                               dlast=dnext_state, **scan_inputs)
            result[4], result[6] = grads[2], grads[8]
            if needs[ctx.out_weight]:
                gradient_sum.add(ctx.out_weight, (dout.flatten(0, 1).transpose(0, 1)
                                                  @ y.transpose(1, 2).flatten(0, 1).to(dout.dtype)).to(weight.dtype))
            del y, dy
            names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
            pairs = [(scan_inputs[n], g) for n, g in zip(names, grads) if n in scan_inputs and g is not None]
        else:
            pairs = [(out, dout), (next_state, dnext_state)]
        pairs.append((next_context, dnext_context))
        pairs = [(t, g.to(t.dtype)) for t, g in pairs if g is not None and t is not None and t.requires_grad]
        done = {4, 6, ctx.out_weight} if ctx.by_hand else set()  # A, the state and the output projection: above
        wanted = {i: t for i, t in [*leaves.items(), *parameters.items()] if needs[i] and i not in done}
        found = torch.autograd.grad([t for t, _ in pairs], list(wanted.values()), [g for _, g in pairs],
                                    allow_unused=True) if wanted and pairs else [None] * len(wanted)
        for i, grad in zip(wanted, found):
            if i < first:
                result[i] = grad
            elif grad is not None:
                gradient_sum.add(i, grad)
        if returns_sum:
            for i in list(gradient_sum):
                result[i] = gradient_sum.pop(i)
        return tuple(grad if need else None for grad, need in zip(result, needs))


class PlacePiece(torch.autograd.Function):
    """``output[:, start:start + piece.shape[1]] = piece``, in place, for autograd: the gradient of the piece is that
    slice of the output's gradient (a view), and the output's gradient passes on unchanged, the slice included, since
    the pieces written before never cover it."""

    @staticmethod
    def forward(ctx, output: torch.Tensor, piece: torch.Tensor, start: int) -> torch.Tensor:
        """output (batch, L, D), piece (batch, l, D) -> output, with the piece at positions start to start + l."""
        ctx.span = (start, start + piece.shape[1])
        ctx.mark_dirty(output)
        output[:, start:start + piece.shape[1]] = piece
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        start, end = ctx.span
        return grad_output, grad_output[:, start:end], None


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
