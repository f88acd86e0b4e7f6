// Fused selective scan for the CPU: forward and backward of mamba-ssm's `selective_scan_fn` (real A, B and C
// shared by all channels of a batch element), in plain C++17 with no PyTorch headers so that it compiles in about a
// second on the user's machine. Python (ops/cpu.py) builds it on first use and calls it through ctypes.
//
// Layout (all float32, C-contiguous):
//   u, delta, z, out, du, ddelta, dz, dout : (batch, dim, L)
//   A, dA                                  : (dim, N)
//   Bt, Ct, dBt, dCt                       : (batch, L, N)   (B and C transposed so that B_t[n] is contiguous)
//   D, delta_bias, dD, ddelta_bias         : (dim,)
//   states                                 : (batch, dim, n_chunks, N), the state after each chunk of `chunk` steps
//   dlast                                  : (batch, dim, N), gradient of the last state (may be null)
//   h0, dh0                                : (batch, dim, N), the state before the first step and its gradient
//                                            (may be null: a zero initial state, no gradient wanted)
//
// Work is split into units that do not depend on the thread count (one (batch, channel) pair in the forward, one
// (batch, group of kGroup channels) in the backward); every reduction across units happens afterwards in a fixed
// order. The results are therefore bitwise identical whatever the number of threads.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <thread>
#include <vector>

namespace {

// Channels per backward work unit: each unit owns one (L, N) slab of partial dB and dC sums.
constexpr int64_t kGroup = 32;

inline float bits_to_float(int32_t i) {
    float f;
    std::memcpy(&f, &i, sizeof(f));
    return f;
}

// exp(x) without libm, so that loops calling it vectorise: Cody-Waite reduction x = k ln2 + r (|r| <= ln2 / 2),
// Cephes' degree-6 polynomial for e^r (relative error ~1e-7), 2^k assembled from exponent bits. Results below
// exp(-87.3) (the normal float range) are 0; inputs above 88.3 are clamped, so the result stays finite.
inline float vexp(float x) {
    const float xc = std::min(std::max(x, -87.3f), 88.3f);
    const float k = std::floor(xc * 1.44269504088896341f + 0.5f);
    float r = xc - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const float scale = bits_to_float((static_cast<int32_t>(k) + 127) << 23);
    return x < -87.3f ? 0.0f : p * scale;
}

inline float vsigmoid(float x) { return 1.0f / (1.0f + vexp(-x)); }

// softplus(x) = max(x, 0) + log1p(exp(-|x|)); log1p(y), y in [0, 1], from 2 atanh(s) with s = y / (2 + y) <= 1/3.
inline float vsoftplus(float x) {
    const float y = vexp(-std::fabs(x));
    const float s = y / (2.0f + y);
    const float s2 = s * s;
    float p = 1.0f / 13.0f;
    p = p * s2 + 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    return std::max(x, 0.0f) + 2.0f * s * p;
}

struct Params {
    const float* __restrict u;
    const float* __restrict delta;
    const float* __restrict A;
    const float* __restrict Bt;
    const float* __restrict Ct;
    const float* __restrict D;
    const float* __restrict z;
    const float* __restrict delta_bias;
    const float* __restrict h0;
    bool softplus;
    int64_t batch, dim, L, N, chunk, n_chunks;
};

// Per-thread buffers for one chunk of one channel.
struct Scratch {
    std::vector<float> dt, dtu, dsp, y, dy, a, H, DH, h, dA;
    void resize(int64_t K, int64_t N) {
        dt.resize(K); dtu.resize(K); dsp.resize(K); y.resize(K); dy.resize(K);
        a.resize(K * N); H.resize((K + 1) * N); DH.resize(K * N); h.resize(N); dA.resize(N);
    }
};

// Runs f(i, scratch) for i in [0, n) on `n_threads` threads taking units from a shared counter. Which thread runs a
// unit never changes what the unit computes.
template <class F>
bool parallel_for(int64_t n, int n_threads, int64_t K, int64_t N, F&& f) {
    if (n <= 0) return true;
    const int64_t t = std::max<int64_t>(1, std::min<int64_t>(n_threads, n));
    std::atomic<int64_t> next{0};
    std::atomic<bool> ok{true};
    auto worker = [&]() {
        try {
            Scratch s;
            s.resize(K, N);
            for (;;) {
                const int64_t i = next.fetch_add(1);
                if (i >= n || !ok.load()) break;
                f(i, s);
            }
        } catch (...) {
            ok = false;
        }
    };
    std::vector<std::thread> pool;
    try {
        for (int64_t i = 1; i < t; ++i) pool.emplace_back(worker);
    } catch (...) {
        // Could not start more threads: the ones running (and this one) do all the work, with the same result.
    }
    worker();
    for (auto& th : pool) th.join();
    return ok.load();
}

// Per-step inputs of one chunk: dt = softplus(delta + bias) (or delta + bias), dt * u, and softplus' = sigmoid.
inline void chunk_dt(const Params& p, const float* __restrict u, const float* __restrict delta, float bias, int64_t n,
                     float* __restrict dt, float* __restrict dtu, float* __restrict dsp) {
    if (p.softplus) {
        for (int64_t i = 0; i < n; ++i) {
            const float x = delta[i] + bias;
            dt[i] = vsoftplus(x);
            dsp[i] = vsigmoid(x);
        }
    } else {
        for (int64_t i = 0; i < n; ++i) dt[i] = delta[i] + bias;
    }
    for (int64_t i = 0; i < n; ++i) dtu[i] = dt[i] * u[i];
}

template <int NC>
void forward_channel(const Params& p, int64_t b, int64_t d, float* __restrict out_all, float* __restrict states_all,
                     Scratch& s) {
    const int64_t N = NC > 0 ? NC : p.N;
    const int64_t L = p.L, K = p.chunk, row = (b * p.dim + d) * L;
    const float* __restrict u = p.u + row;
    const float* __restrict delta = p.delta + row;
    const float* __restrict z = p.z ? p.z + row : nullptr;
    const float* __restrict A = p.A + d * N;
    const float* __restrict Bt = p.Bt + b * L * N;
    const float* __restrict Ct = p.Ct + b * L * N;
    const float Dd = p.D ? p.D[d] : 0.0f;
    const float bias = p.delta_bias ? p.delta_bias[d] : 0.0f;
    float* __restrict out = out_all + row;
    float* __restrict states = states_all + (b * p.dim + d) * p.n_chunks * N;
    float hbuf[NC > 0 ? NC : 1];
    float* __restrict h = NC > 0 ? hbuf : s.h.data();
    float* __restrict dt = s.dt.data();
    float* __restrict dtu = s.dtu.data();
    float* __restrict y = s.y.data();
    for (int64_t k = 0; k < N; ++k) h[k] = p.h0 ? p.h0[(b * p.dim + d) * N + k] : 0.0f;

    for (int64_t c = 0; c < p.n_chunks; ++c) {
        const int64_t t0 = c * K, n = std::min(K, L - t0);
        chunk_dt(p, u + t0, delta + t0, bias, n, dt, dtu, s.dsp.data());
        for (int64_t i = 0; i < n; ++i) {
            const float* __restrict Bi = Bt + (t0 + i) * N;
            const float* __restrict Ci = Ct + (t0 + i) * N;
            const float dti = dt[i], dtui = dtu[i];
            float acc = 0.0f;
            for (int64_t k = 0; k < N; ++k) {
                h[k] = vexp(dti * A[k]) * h[k] + dtui * Bi[k];
                acc += h[k] * Ci[k];
            }
            y[i] = acc;
        }
        if (z) {
            for (int64_t i = 0; i < n; ++i) {
                const float zi = z[t0 + i];
                out[t0 + i] = (y[i] + Dd * u[t0 + i]) * (zi * vsigmoid(zi));
            }
        } else {
            for (int64_t i = 0; i < n; ++i) out[t0 + i] = y[i] + Dd * u[t0 + i];
        }
        std::memcpy(states + c * N, h, N * sizeof(float));
    }
}

struct Grads {
    const float* __restrict dout;
    const float* __restrict dlast;
    const float* __restrict states;
    float* __restrict du;
    float* __restrict ddelta;
    float* __restrict dz;
    float* __restrict dB_slab;   // (batch, n_groups, L, N)
    float* __restrict dC_slab;   // (batch, n_groups, L, N)
    float* __restrict dA_part;   // (batch, dim, N)
    float* __restrict dD_part;   // (batch, dim)
    float* __restrict dbias_part;  // (batch, dim)
    float* __restrict dh0;         // (batch, dim, N) or null
    float* __restrict out;         // (batch, dim, L) or null: the forward's output, recomputed on the way
};

template <int NC>
void backward_channel(const Params& p, const Grads& g, int64_t b, int64_t d, float* __restrict dBs,
                      float* __restrict dCs, Scratch& s) {
    const int64_t N = NC > 0 ? NC : p.N;
    const int64_t L = p.L, K = p.chunk, row = (b * p.dim + d) * L;
    const float* __restrict u = p.u + row;
    const float* __restrict delta = p.delta + row;
    const float* __restrict z = p.z ? p.z + row : nullptr;
    const float* __restrict dout = g.dout + row;
    const float* __restrict A = p.A + d * N;
    const float* __restrict Bt = p.Bt + b * L * N;
    const float* __restrict Ct = p.Ct + b * L * N;
    const float* __restrict states = g.states + (b * p.dim + d) * p.n_chunks * N;
    const float Dd = p.D ? p.D[d] : 0.0f;
    const float bias = p.delta_bias ? p.delta_bias[d] : 0.0f;
    float* __restrict du = g.du + row;
    float* __restrict ddelta = g.ddelta + row;
    float* __restrict dz = g.dz ? g.dz + row : nullptr;
    float* __restrict out = g.out ? g.out + row : nullptr;
    float dhbuf[NC > 0 ? NC : 1], dAbuf[NC > 0 ? NC : 1];
    float* __restrict dh = NC > 0 ? dhbuf : s.h.data();
    float* __restrict dA = NC > 0 ? dAbuf : s.dA.data();
    float* __restrict dt = s.dt.data();
    float* __restrict dtu = s.dtu.data();
    float* __restrict dsp = s.dsp.data();
    float* __restrict y = s.y.data();
    float* __restrict dy = s.dy.data();
    float* __restrict a = s.a.data();
    float* __restrict H = s.H.data();   // H[i + 1] = state after step t0 + i; H[0] = state entering the chunk
    float* __restrict DH = s.DH.data();
    for (int64_t k = 0; k < N; ++k) {
        dh[k] = g.dlast ? g.dlast[(b * p.dim + d) * N + k] : 0.0f;
        dA[k] = 0.0f;
    }
    double dD_acc = 0.0, dbias_acc = 0.0;

    for (int64_t c = p.n_chunks - 1; c >= 0; --c) {
        const int64_t t0 = c * K, n = std::min(K, L - t0);
        chunk_dt(p, u + t0, delta + t0, bias, n, dt, dtu, dsp);
        // Recompute the chunk's states from the saved boundary state.
        const float* __restrict entering =
            c > 0 ? states + (c - 1) * N : (p.h0 ? p.h0 + (b * p.dim + d) * N : nullptr);
        for (int64_t k = 0; k < N; ++k) H[k] = entering ? entering[k] : 0.0f;
        for (int64_t i = 0; i < n; ++i) {
            const float* __restrict Bi = Bt + (t0 + i) * N;
            const float* __restrict Ci = Ct + (t0 + i) * N;
            const float* __restrict Hp = H + i * N;
            float* __restrict Hi = H + (i + 1) * N;
            float* __restrict ai = a + i * N;
            const float dti = dt[i], dtui = dtu[i];
            float acc = 0.0f;
            for (int64_t k = 0; k < N; ++k) {
                ai[k] = vexp(dti * A[k]);
                Hi[k] = ai[k] * Hp[k] + dtui * Bi[k];
                acc += Hi[k] * Ci[k];
            }
            y[i] = acc;
        }
        // Gate and skip: out = (y + D u) * silu(z).
        if (z) {
            for (int64_t i = 0; i < n; ++i) {
                const float zi = z[t0 + i], sg = vsigmoid(zi), go = dout[t0 + i], yd = y[i] + Dd * u[t0 + i];
                dy[i] = go * zi * sg;
                dz[t0 + i] = go * yd * sg * (1.0f + zi * (1.0f - sg));
            }
            // A loop of its own, recomputing the gate: a store behind a test in the loop above kept it from being
            // vectorised (the backward of 512 steps took 11.2 ms instead of 10.1).
            if (out) {
                for (int64_t i = 0; i < n; ++i) {
                    const float zi = z[t0 + i];
                    out[t0 + i] = (y[i] + Dd * u[t0 + i]) * (zi * vsigmoid(zi));
                }
            }
        } else {
            for (int64_t i = 0; i < n; ++i) dy[i] = dout[t0 + i];
            if (out) {
                for (int64_t i = 0; i < n; ++i) out[t0 + i] = y[i] + Dd * u[t0 + i];
            }
        }
        for (int64_t i = 0; i < n; ++i) dD_acc += static_cast<double>(dy[i] * u[t0 + i]);
        // Reverse recurrence: DH_t = dy_t C_t + a_{t+1} DH_{t+1}.
        for (int64_t i = n - 1; i >= 0; --i) {
            const float* __restrict Ci = Ct + (t0 + i) * N;
            const float* __restrict ai = a + i * N;
            float* __restrict DHi = DH + i * N;
            const float dyi = dy[i];
            for (int64_t k = 0; k < N; ++k) {
                const float v = dh[k] + dyi * Ci[k];
                DHi[k] = v;
                dh[k] = v * ai[k];
            }
        }
        // Everything else is independent per step.
        for (int64_t i = 0; i < n; ++i) {
            const float* __restrict Bi = Bt + (t0 + i) * N;
            const float* __restrict Hp = H + i * N;
            const float* __restrict Hi = H + (i + 1) * N;
            const float* __restrict ai = a + i * N;
            const float* __restrict DHi = DH + i * N;
            float* __restrict dBi = dBs + (t0 + i) * N;
            float* __restrict dCi = dCs + (t0 + i) * N;
            const float dti = dt[i], dtui = dtu[i], dyi = dy[i];
            float r1 = 0.0f, r2 = 0.0f;
            for (int64_t k = 0; k < N; ++k) {
                const float q = DHi[k] * ai[k] * Hp[k];  // dL/d(dt A_k) for this step
                dA[k] += q * dti;
                r1 += q * A[k];
                r2 += DHi[k] * Bi[k];
                dBi[k] += DHi[k] * dtui;
                dCi[k] += dyi * Hi[k];
            }
            const float ui = u[t0 + i];
            du[t0 + i] = dyi * Dd + dti * r2;
            const float ddt = r1 + ui * r2;
            ddelta[t0 + i] = p.softplus ? ddt * dsp[i] : ddt;
        }
        for (int64_t i = 0; i < n; ++i) dbias_acc += static_cast<double>(ddelta[t0 + i]);
    }
    // After the first step's reverse update dh is the gradient of the state entering the sequence.
    if (g.dh0) std::memcpy(g.dh0 + (b * p.dim + d) * N, dh, N * sizeof(float));
    std::memcpy(g.dA_part + (b * p.dim + d) * N, dA, N * sizeof(float));
    g.dD_part[b * p.dim + d] = static_cast<float>(dD_acc);
    g.dbias_part[b * p.dim + d] = static_cast<float>(dbias_acc);
}

template <int NC>
bool forward_all(const Params& p, float* out, float* states, int n_threads) {
    return parallel_for(p.batch * p.dim, n_threads, p.chunk, p.N, [&](int64_t i, Scratch& s) {
        forward_channel<NC>(p, i / p.dim, i % p.dim, out, states, s);
    });
}

template <int NC>
bool backward_all(const Params& p, const Grads& g, int64_t n_groups, int n_threads) {
    const int64_t slab = p.L * p.N;
    return parallel_for(p.batch * n_groups, n_threads, p.chunk, p.N, [&](int64_t i, Scratch& s) {
        const int64_t b = i / n_groups, grp = i % n_groups;
        float* dBs = g.dB_slab + i * slab;
        float* dCs = g.dC_slab + i * slab;
        std::fill(dBs, dBs + slab, 0.0f);
        std::fill(dCs, dCs + slab, 0.0f);
        const int64_t d_end = std::min(p.dim, (grp + 1) * kGroup);
        for (int64_t d = grp * kGroup; d < d_end; ++d) backward_channel<NC>(p, g, b, d, dBs, dCs, s);
    });
}

}  // namespace

extern "C" {

// Returns 0 on success, 1 when a worker failed (out of memory).
int mambavl_scan_fwd(const float* u, const float* delta, const float* A, const float* Bt, const float* Ct,
                     const float* D, const float* z, const float* delta_bias, const float* h0, int softplus,
                     int64_t batch, int64_t dim, int64_t L, int64_t N, int64_t chunk, float* out, float* states,
                     int n_threads) {
    const Params p{u, delta, A, Bt, Ct, D, z, delta_bias, h0, softplus != 0, batch, dim, L, N, chunk,
                   (L + chunk - 1) / chunk};
    bool ok;
    switch (N) {
        case 16: ok = forward_all<16>(p, out, states, n_threads); break;
        case 8: ok = forward_all<8>(p, out, states, n_threads); break;
        default: ok = forward_all<0>(p, out, states, n_threads); break;
    }
    return ok ? 0 : 1;
}

int mambavl_scan_bwd(const float* u, const float* delta, const float* A, const float* Bt, const float* Ct,
                     const float* D, const float* z, const float* delta_bias, const float* h0, int softplus,
                     int64_t batch, int64_t dim, int64_t L, int64_t N, int64_t chunk, const float* states,
                     const float* dout, const float* dlast, float* du, float* ddelta, float* dA, float* dBt,
                     float* dCt, float* dD, float* dz, float* ddelta_bias, float* dh0, float* out, int n_threads) {
    const Params p{u, delta, A, Bt, Ct, D, z, delta_bias, h0, softplus != 0, batch, dim, L, N, chunk,
                   (L + chunk - 1) / chunk};
    const int64_t n_groups = (dim + kGroup - 1) / kGroup;
    std::vector<float> dB_slab, dC_slab, dA_part, dD_part, dbias_part;
    try {
        dB_slab.resize(batch * n_groups * L * N);
        dC_slab.resize(batch * n_groups * L * N);
        dA_part.resize(batch * dim * N);
        dD_part.resize(batch * dim);
        dbias_part.resize(batch * dim);
    } catch (...) {
        return 1;
    }
    const Grads g{dout, dlast, states, du, ddelta, z ? dz : nullptr, dB_slab.data(), dC_slab.data(),
                  dA_part.data(), dD_part.data(), dbias_part.data(), dh0, out};
    bool ok;
    switch (N) {
        case 16: ok = backward_all<16>(p, g, n_groups, n_threads); break;
        case 8: ok = backward_all<8>(p, g, n_groups, n_threads); break;
        default: ok = backward_all<0>(p, g, n_groups, n_threads); break;
    }
    if (!ok) return 1;
    // Sum the per-group slabs in group order, in parallel over (batch, block of steps).
    constexpr int64_t kSteps = 64;
    const int64_t n_blocks = (L + kSteps - 1) / kSteps, slab = L * N;
    ok = parallel_for(batch * n_blocks, n_threads, 1, 1, [&](int64_t i, Scratch&) {
        const int64_t b = i / n_blocks, j0 = (i % n_blocks) * kSteps * N, j1 = std::min(slab, j0 + kSteps * N);
        // Same summation order for every element (group 0, 1, ...), written so that the inner loops vectorise.
        float* __restrict ob = dBt + b * slab;
        float* __restrict oc = dCt + b * slab;
        const float* __restrict sb0 = dB_slab.data() + b * n_groups * slab;
        const float* __restrict sc0 = dC_slab.data() + b * n_groups * slab;
        for (int64_t j = j0; j < j1; ++j) {
            ob[j] = sb0[j];
            oc[j] = sc0[j];
        }
        for (int64_t grp = 1; grp < n_groups; ++grp) {
            const float* __restrict sb = sb0 + grp * slab;
            const float* __restrict sc = sc0 + grp * slab;
            for (int64_t j = j0; j < j1; ++j) {
                ob[j] += sb[j];
                oc[j] += sc[j];
            }
        }
    });
    if (!ok) return 1;
    // Parameter gradients: per-(batch, channel) partials summed over the batch in order.
    for (int64_t d = 0; d < dim; ++d) {
        for (int64_t k = 0; k < N; ++k) {
            float s = 0.0f;
            for (int64_t b = 0; b < batch; ++b) s += dA_part[(b * dim + d) * N + k];
            dA[d * N + k] = s;
        }
        float sd = 0.0f, sb = 0.0f;
        for (int64_t b = 0; b < batch; ++b) {
            sd += dD_part[b * dim + d];
            sb += dbias_part[b * dim + d];
        }
        if (dD) dD[d] = sd;
        if (ddelta_bias) ddelta_bias[d] = sb;
    }
    return 0;
}

}  // extern "C"
