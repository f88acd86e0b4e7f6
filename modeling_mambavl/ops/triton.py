"""The ``triton`` backend: the project's own Triton selective scan, forward and backward, with a float32 state.

mamba-ssm's CUDA kernel needs a CUDA toolchain at install time that most users lack; Triton ships as a wheel (it comes
with PyTorch's CUDA builds), so this backend gives GPU users a fused scan with a plain ``pip install``. ``auto``
picks it on CUDA tensors when mamba-ssm is not importable.

Layout of the work. One program handles one batch element and ``BLOCK_D`` channels (``BLOCK_D_BWD`` in the
backward), with all ``N`` states (padded to a power of two). It walks the sequence in tiles of ``BLOCK_T`` steps;
inside a tile the linear recurrence ``h_t = a_t h_{t-1} + x_t`` (``a_t = exp(dt_t A)``, ``x_t = dt_t B_t u_t``) is
solved on a (BLOCK_D, N, BLOCK_T) register tile by ``tl.associative_scan`` with the operator
``(a1, x1) . (a2, x2) = (a1 a2, a2 x1 + x2)``, and tiles are chained through the carried state. Like the ``cpu``
backend, the forward saves only the state at the end of every tile, (batch, d_inner, ceil(L / BLOCK_T), N) float32,
never a (batch, d_inner, L, N) tensor.

The backward walks the tiles in reverse. For each tile it recomputes the states from the saved one (the states
after each step for ``dC``, and before each step for ``dA`` / ``dΔ``), then solves the adjoint recurrence
``g_t = dy_t C_t + a_{t+1} g_{t+1}`` (``g`` after the last step = the gradient of the last state) with the same scan
on the time-reversed tile. Reductions across programs (``dA``, ``dD``, ``dΔ bias`` over the batch, ``dB`` / ``dC``
over channel blocks) are written as per-program partial sums and added up by PyTorch afterwards, in a fixed order:
no atomics, so results are bitwise reproducible.

Everything inside the kernels is float32 whatever the input dtype; ``out`` is stored in u's dtype and the gradients
are cast to the inputs' dtypes. Triton is imported inside ``try``: this module imports without it, and
``unavailable_reason()`` says why the backend cannot run.

Testing without a GPU: with ``TRITON_INTERPRET=1`` in the environment *when this module is imported*, Triton runs the
kernels in its NumPy interpreter, and the backend also accepts CPU tensors (slowly: for tests at small sizes only).
"""

from __future__ import annotations

import os

import torch

try:  # optional dependency: a wheel on Linux, usually installed with PyTorch's CUDA builds
    import triton
    import triton.language as tl

    _IMPORT_ERROR: str | None = None
except Exception as e:  # ImportError, or a broken install
    triton = tl = None
    _IMPORT_ERROR = f"triton cannot be imported ({type(e).__name__}: {e}); install it with `pip install triton`"

# Read once, as Triton itself decides at decoration time whether a kernel is compiled or interpreted.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")
DEVICE_TYPES: tuple[str, ...] = ("cuda", "cpu") if INTERPRETED else ("cuda",)
SUPPORTS_INITIAL_STATE = True
# No backward that recomputes the output: selective_scan_backward runs the forward with autograd instead.
backward_with_output = None

# Steps per tile; the forward saves the state after every tile.
BLOCK_T = 8 if INTERPRETED else 32
# Channels per program: a tile holds BLOCK_D x N x BLOCK_T floats and the backward keeps about fifteen such tiles
# live, so it takes fewer channels than the forward to stay in registers. The interpreter runs small tiles (its scan
# is a Python loop over elements).
BLOCK_D = 2 if INTERPRETED else 8
BLOCK_D_BWD = 2 if INTERPRETED else 4


def unavailable_reason() -> str | None:
    """``None`` when the kernel can run here, else why not."""
    if triton is None:
        return _IMPORT_ERROR
    if not INTERPRETED and not torch.cuda.is_available():
        return ("no CUDA device is available (torch.cuda.is_available() is False); to run the Triton kernels on the "
                "CPU for testing, set TRITON_INTERPRET=1 before importing modeling_mambavl")
    return None


def _n_tiles(length: int) -> int:
    return max((length + BLOCK_T - 1) // BLOCK_T, 1)


def saved_like(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus) -> list[torch.Tensor]:
    """Empty tensors shaped like what ``forward`` saves (for fake / meta tensors)."""
    b, d, length = u.shape
    return [u.new_empty((b, d, _n_tiles(length), A.shape[1]), dtype=torch.float32)]


if triton is not None:

    @triton.jit
    def _combine(a_left, x_left, a_right, x_right):
        # (a_left, x_left) is the earlier element: h -> a_right (a_left h + x_left) + x_right
        return a_left * a_right, a_right * x_left + x_right

    @triton.jit
    def _softplus(x):
        # torch.nn.functional.softplus with its default threshold 20
        return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))

    @triton.jit
    def _load_tile(ptr, stride_row, stride_t, rows, t, mask):
        """(len(rows), len(t)) float32 tile of a (rows, L) slice; masked entries are 0."""
        return tl.load(ptr + rows[:, None] * stride_row + t[None, :] * stride_t, mask=mask, other=0.0).to(tl.float32)

    @triton.jit
    def _scan_fwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, out_ptr, states_ptr,
        dim, length, nstate, n_tiles,
        su_b, su_d, su_t, sdl_b, sdl_d, sdl_t, sA_d, sA_n, sB_b, sB_n, sB_t, sC_b, sC_n, sC_t,
        sz_b, sz_d, sz_t, so_b, so_d, so_t,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        HAS_H0: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
    ):
        pid_b = tl.program_id(0)
        offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, BLOCK_N)
        steps = tl.arange(0, BLOCK_T)
        d_ok = offs_d < dim
        n_ok = offs_n < nstate
        # Padded states get A = 0 and B = C = 0: a = 1, x = 0, no output.
        A = tl.load(A_ptr + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n, mask=d_ok[:, None] & n_ok[None, :],
                    other=0.0).to(tl.float32)
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=d_ok, other=0.0).to(tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=d_ok, other=0.0).to(tl.float32)
        u_base = u_ptr + pid_b * su_b
        dl_base = delta_ptr + pid_b * sdl_b
        B_base = B_ptr + pid_b * sB_b
        C_base = C_ptr + pid_b * sC_b
        h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
        if HAS_H0:  # (batch, dim, N) contiguous float32
            h = tl.load(h0_ptr + (pid_b * dim + offs_d)[:, None] * nstate + offs_n[None, :],
                        mask=d_ok[:, None] & n_ok[None, :], other=0.0)
        for c in range(n_tiles):
            t = c * BLOCK_T + steps
            t_ok = t < length
            m_dt = d_ok[:, None] & t_ok[None, :]
            m_nt = n_ok[:, None] & t_ok[None, :]
            u = _load_tile(u_base, su_d, su_t, offs_d, t, m_dt)
            dt = _load_tile(dl_base, sdl_d, sdl_t, offs_d, t, m_dt)
            if HAS_BIAS:
                dt += bias[:, None]
            if SOFTPLUS:
                dt = _softplus(dt)
            dt = tl.where(m_dt, dt, 0.0)  # past the end: a = 1, x = 0
            Bt = _load_tile(B_base, sB_n, sB_t, offs_n, t, m_nt)
            Ct = _load_tile(C_base, sC_n, sC_t, offs_n, t, m_nt)
            a = tl.exp(dt[:, None, :] * A[:, :, None])  # (BLOCK_D, BLOCK_N, BLOCK_T)
            x = (dt * u)[:, None, :] * Bt[None, :, :]
            a_cum, x_cum = tl.associative_scan((a, x), 2, _combine)
            hs = x_cum + a_cum * h[:, :, None]  # state after each step
            y = tl.sum(hs * Ct[None, :, :], axis=1)
            if HAS_D:
                y += Dv[:, None] * u
            if HAS_Z:
                zt = _load_tile(z_ptr + pid_b * sz_b, sz_d, sz_t, offs_d, t, m_dt)
                y = y * zt * tl.sigmoid(zt)
            tl.store(out_ptr + pid_b * so_b + offs_d[:, None] * so_d + t[None, :] * so_t, y, mask=m_dt)
            last = (steps == BLOCK_T - 1)[None, None, :]
            h = tl.sum(tl.where(last, hs, 0.0), axis=2)
            state_rows = (pid_b * dim + offs_d) * n_tiles + c
            tl.store(states_ptr + state_rows[:, None] * nstate + offs_n[None, :], h,
                     mask=d_ok[:, None] & n_ok[None, :])

    @triton.jit
    def _scan_bwd_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, states_ptr, dout_ptr, dlast_ptr,
        du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr, dh0_ptr,
        dim, length, nstate, n_tiles, n_dblocks,
        su_b, su_d, su_t, sdl_b, sdl_d, sdl_t, sA_d, sA_n, sB_b, sB_n, sB_t, sC_b, sC_n, sC_t,
        sz_b, sz_d, sz_t, sg_b, sg_d, sg_t,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
        HAS_DLAST: tl.constexpr, HAS_H0: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_T: tl.constexpr,
    ):
        pid_b = tl.program_id(0)
        pid_d = tl.program_id(1)
        offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, BLOCK_N)
        steps = tl.arange(0, BLOCK_T)
        d_ok = offs_d < dim
        n_ok = offs_n < nstate
        dn_ok = d_ok[:, None] & n_ok[None, :]
        A = tl.load(A_ptr + offs_d[:, None] * sA_d + offs_n[None, :] * sA_n, mask=dn_ok, other=0.0).to(tl.float32)
        Dv = tl.zeros((BLOCK_D,), dtype=tl.float32)
        if HAS_D:
            Dv = tl.load(D_ptr + offs_d, mask=d_ok, other=0.0).to(tl.float32)
        bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
        if HAS_BIAS:
            bias = tl.load(bias_ptr + offs_d, mask=d_ok, other=0.0).to(tl.float32)
        u_base = u_ptr + pid_b * su_b
        dl_base = delta_ptr + pid_b * sdl_b
        B_base = B_ptr + pid_b * sB_b
        C_base = C_ptr + pid_b * sC_b
        state_rows = (pid_b * dim + offs_d) * n_tiles
        # Adjoint of the state after the last step.
        g_next = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
        if HAS_DLAST:
            g_next = tl.load(dlast_ptr + (pid_b * dim + offs_d)[:, None] * nstate + offs_n[None, :], mask=dn_ok,
                             other=0.0)
        dA_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
        dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
        # a_{t+1} for the last step of the current tile: the first decay of the tile after it (1 past the end).
        a_after = tl.full((BLOCK_D, BLOCK_N), 1.0, dtype=tl.float32)
        for i in range(n_tiles):
            c = n_tiles - 1 - i
            t = c * BLOCK_T + steps
            t_ok = t < length
            m_dt = d_ok[:, None] & t_ok[None, :]
            m_nt = n_ok[:, None] & t_ok[None, :]
            # The state before the tile: saved after the previous tile (the initial state, or zero, before the first).
            h0 = tl.load(states_ptr + (state_rows + c - 1)[:, None] * nstate + offs_n[None, :],
                         mask=dn_ok & (c > 0), other=0.0)
            if HAS_H0:
                h0 += tl.load(h0_ptr + (pid_b * dim + offs_d)[:, None] * nstate + offs_n[None, :],
                              mask=dn_ok & (c == 0), other=0.0)
            u = _load_tile(u_base, su_d, su_t, offs_d, t, m_dt)
            pre = _load_tile(dl_base, sdl_d, sdl_t, offs_d, t, m_dt) + bias[:, None]
            dt = pre
            if SOFTPLUS:
                dt = _softplus(pre)
            dt = tl.where(m_dt, dt, 0.0)
            Bt = _load_tile(B_base, sB_n, sB_t, offs_n, t, m_nt)
            Ct = _load_tile(C_base, sC_n, sC_t, offs_n, t, m_nt)
            a = tl.exp(dt[:, None, :] * A[:, :, None])
            x = (dt * u)[:, None, :] * Bt[None, :, :]
            a_cum, x_cum = tl.associative_scan((a, x), 2, _combine)
            hs = x_cum + a_cum * h0[:, :, None]  # after each step
            # Before each step: the same scan over the tile shifted by one step (identity first).
            first = (steps == 0)[None, None, :]
            t_prev = t - 1
            m_prev = d_ok[:, None] & (t_prev >= c * BLOCK_T)[None, :] & (t_prev < length)[None, :]
            u_p = _load_tile(u_base, su_d, su_t, offs_d, t_prev, m_prev)
            pre_p = _load_tile(dl_base, sdl_d, sdl_t, offs_d, t_prev, m_prev) + bias[:, None]
            dt_p = pre_p
            if SOFTPLUS:
                dt_p = _softplus(pre_p)
            dt_p = tl.where(m_prev, dt_p, 0.0)
            B_p = _load_tile(B_base, sB_n, sB_t, offs_n, t_prev,
                             n_ok[:, None] & (t_prev >= c * BLOCK_T)[None, :] & (t_prev < length)[None, :])
            a_p = tl.where(first, 1.0, tl.exp(dt_p[:, None, :] * A[:, :, None]))
            x_p = (dt_p * u_p)[:, None, :] * B_p[None, :, :]
            ap_cum, xp_cum = tl.associative_scan((a_p, x_p), 2, _combine)
            hs_prev = xp_cum + ap_cum * h0[:, :, None]

            dout = _load_tile(dout_ptr + pid_b * sg_b, sg_d, sg_t, offs_d, t, m_dt)
            y = tl.sum(hs * Ct[None, :, :], axis=1) + Dv[:, None] * u
            dy = dout
            if HAS_Z:
                zt = _load_tile(z_ptr + pid_b * sz_b, sz_d, sz_t, offs_d, t, m_dt)
                sig = tl.sigmoid(zt)
                dy = dout * zt * sig
                dz = dout * y * sig * (1.0 + zt * (1.0 - sig))
                tl.store(dz_ptr + pid_b * sg_b + offs_d[:, None] * sg_d + t[None, :] * sg_t, dz, mask=m_dt)

            # Adjoint recurrence g_t = dy_t C_t + a_{t+1} g_{t+1}, solved on the time-reversed tile.
            t_next = t + 1
            m_next = d_ok[:, None] & (t_next < length)[None, :]
            pre_n = _load_tile(dl_base, sdl_d, sdl_t, offs_d, t_next, m_next) + bias[:, None]
            dt_n = pre_n
            if SOFTPLUS:
                dt_n = _softplus(pre_n)
            dt_n = tl.where(m_next, dt_n, 0.0)
            last = (steps == BLOCK_T - 1)[None, None, :]
            # Inside the tile a_{t+1} comes from the next step; for the tile's last step from the tile after it.
            a_n = tl.where(last, a_after[:, :, None], tl.exp(dt_n[:, None, :] * A[:, :, None]))
            gx = dy[:, None, :] * Ct[None, :, :]
            a_rev, x_rev = tl.associative_scan((tl.flip(a_n, 2), tl.flip(gx, 2)), 2, _combine)
            g = tl.flip(x_rev, 2) + tl.flip(a_rev, 2) * g_next[:, :, None]

            # Gradients of this tile.
            dtu = dt * u
            ddt = tl.sum(g * (Bt[None, :, :] * u[:, None, :] + hs_prev * a * A[:, :, None]), axis=1)
            ddt = tl.where(m_dt, ddt, 0.0)
            du = tl.sum(g * Bt[None, :, :], axis=1) * dt + dy * Dv[:, None]
            dpre = ddt
            if SOFTPLUS:
                dpre = ddt * tl.sigmoid(pre)
            dpre = tl.where(m_dt, dpre, 0.0)
            grad_off = pid_b * sg_b + offs_d[:, None] * sg_d + t[None, :] * sg_t
            tl.store(du_ptr + grad_off, du, mask=m_dt)
            tl.store(ddelta_ptr + grad_off, dpre, mask=m_dt)
            dA_acc += tl.sum(g * hs_prev * a * dt[:, None, :], axis=2)
            dD_acc += tl.sum(tl.where(m_dt, dy * u, 0.0), axis=1)
            dbias_acc += tl.sum(dpre, axis=1)
            # dB, dC: partial sums over this program's channels, (batch, n_dblocks, N, L).
            part = ((pid_b * n_dblocks + pid_d) * nstate + offs_n)[:, None] * length + t[None, :]
            tl.store(dB_ptr + part, tl.sum(g * dtu[:, None, :], axis=0), mask=m_nt)
            tl.store(dC_ptr + part, tl.sum(hs * dy[:, None, :], axis=0), mask=m_nt)

            # Carry to the tile before: g and a at this tile's first step.
            first_step = (steps == 0)[None, None, :]
            g_next = tl.sum(tl.where(first_step, g, 0.0), axis=2)
            a_after = tl.sum(tl.where(first_step, a, 0.0), axis=2)

        rows = pid_b * dim + offs_d
        if HAS_H0:  # h_{-1} enters the first step through a_0: its adjoint is a_0 g_0
            tl.store(dh0_ptr + rows[:, None] * nstate + offs_n[None, :], a_after * g_next, mask=dn_ok)
        tl.store(dA_ptr + rows[:, None] * nstate + offs_n[None, :], dA_acc, mask=dn_ok)
        tl.store(dD_ptr + rows, dD_acc, mask=d_ok)
        tl.store(dbias_ptr + rows, dbias_acc, mask=d_ok)


def _block_n(nstate: int) -> int:
    return max(triton.next_power_of_2(nstate), 2)


def _strides3(t: torch.Tensor | None) -> tuple[int, int, int]:
    return (0, 0, 0) if t is None else tuple(t.stride())


def _check_device(u: torch.Tensor) -> None:
    if u.device.type not in DEVICE_TYPES:
        raise RuntimeError(f"selective_scan backend 'triton': tensors on {u.device.type!r}, expected "
                           f"{' / '.join(DEVICE_TYPES)}")


def forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus):
    """Returns ``out`` (b, d, L) in u's dtype, the last state (b, d, N) float32, and ``[states]``, the state after
    every tile of ``BLOCK_T`` steps, (b, d, ceil(L / BLOCK_T), N) float32. ``initial_state``: (b, d, N) or None."""
    _check_device(u)
    b, d, length = u.shape
    n = A.shape[1]
    n_tiles = _n_tiles(length)
    states = torch.zeros((b, d, n_tiles, n), dtype=torch.float32, device=u.device)
    out = torch.empty((b, d, length), dtype=u.dtype, device=u.device)
    h0 = None if initial_state is None else initial_state.float().contiguous()
    if length == 0 or b == 0 or d == 0:
        return out, states[:, :, -1].clone() if h0 is None else h0.clone(), [states]
    dummy = u.new_empty(0)
    grid = (b, triton.cdiv(d, BLOCK_D))
    _scan_fwd_kernel[grid](
        u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
        delta_bias if delta_bias is not None else dummy, h0 if h0 is not None else dummy, out, states,
        d, length, n, n_tiles,
        *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *_strides3(z), *out.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
        HAS_H0=h0 is not None, BLOCK_D=BLOCK_D, BLOCK_N=_block_n(n), BLOCK_T=BLOCK_T,
    )
    return out, states[:, :, -1].clone(memory_format=torch.contiguous_format), [states]


def backward(dout, dlast, u, delta, A, B, C, D, z, delta_bias, initial_state, saved, delta_softplus):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state) in the dtypes of the inputs; ``None`` for absent
    optional inputs. ``dlast`` (b, d, N) is the gradient of the last state, or ``None``."""
    _check_device(u)
    (states,) = saved
    b, d, length = u.shape
    n = A.shape[1]
    dev = u.device
    f32 = {"dtype": torch.float32, "device": dev}
    n_dblocks = triton.cdiv(d, BLOCK_D_BWD) if d else 0
    du = torch.zeros((b, d, length), **f32)
    ddelta = torch.zeros((b, d, length), **f32)
    dz = torch.zeros((b, d, length), **f32) if z is not None else None
    dA_part = torch.zeros((b, d, n), **f32)
    dD_part = torch.zeros((b, d), **f32)
    dbias_part = torch.zeros((b, d), **f32)
    dB_part = torch.zeros((b, n_dblocks, n, length), **f32)
    dC_part = torch.zeros((b, n_dblocks, n, length), **f32)
    h0 = None if initial_state is None else initial_state.float().contiguous()
    dh0 = None
    if h0 is not None:  # with no step to run, the last state is the initial one
        dh0 = dlast.float().clone() if dlast is not None and length == 0 else torch.zeros((b, d, n), **f32)
    if length > 0 and b > 0 and d > 0:
        dout = dout.contiguous()  # read with the strides of the (contiguous) gradient buffers
        dummy = u.new_empty(0)
        grid = (b, n_dblocks)
        _scan_bwd_kernel[grid](
            u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
            delta_bias if delta_bias is not None else dummy, h0 if h0 is not None else dummy, states, dout,
            dlast.float().contiguous() if dlast is not None else dummy,
            du, ddelta, dz if dz is not None else dummy, dA_part, dD_part, dbias_part, dB_part, dC_part,
            dh0 if dh0 is not None else dummy,
            d, length, n, states.shape[2], n_dblocks,
            *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *_strides3(z), *du.stride(),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(delta_softplus), HAS_DLAST=dlast is not None, HAS_H0=h0 is not None,
            BLOCK_D=BLOCK_D_BWD, BLOCK_N=_block_n(n), BLOCK_T=BLOCK_T,
        )

    def back(g, like):
        return None if like is None else g.to(like.dtype)

    return (back(du, u), back(ddelta, delta), back(dA_part.sum(0), A), back(dB_part.sum(1), B),
            back(dC_part.sum(1), C), back(dD_part.sum(0), D), back(dz, z), back(dbias_part.sum(0), delta_bias),
            back(dh0, initial_state))
