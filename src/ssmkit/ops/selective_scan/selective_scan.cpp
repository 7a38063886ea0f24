// Mamba-1 selective scan on the CPU (built at first use by cpp.py; math in README.md).
//
// Layout: the caller's own. u, dt, z, y and their gradients are (B, L, D); B and C are
// (B, L, G, N); states are (B, D, N); dt is the step Delta after bias and softplus (done by the
// caller in PyTorch). The caller allocates every output and passes raw pointers through a plain C
// ABI (ctypes): the only torch header needed is ATen/Parallel.h, which keeps the one-time build to
// seconds instead of the minute that torch/extension.h costs.
//
// Vectorization runs across a block of W channels (16 or 64), the N loop inside: every step reads
// one contiguous run of W values of u, dt, z (whole cache lines) and the state is a small (N, W)
// tile in L1, so there is no horizontal sum in the forward and no transposed copy of the inputs. (Walking time one channel at a time with a stride of D floats was slow: every step then
// fetched a cache line to use one value.) A block never straddles two groups.
//
// Forward: one task per (b, g, block). With `ckpt` it also stores the state at the start of every
// chunk of K steps, laid out (B, ceil(L/K), N, D), so the backward can recompute states chunk by
// chunk instead of keeping (B, L, D, N).
// Backward: one task per (b, g, slice of blocks); chunks in reverse, and within a chunk each block
// recomputes its states from the checkpoint, then runs the reverse scan. dB and dC sum over the
// channels of a group: lanes accumulate in a (K, N, W) tile per chunk, summed once per chunk into
// the task's own (L, N) rows, which the caller sums over tasks, so no two threads write the same
// memory.
#include <ATen/Parallel.h>

#include "../kernel_math.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// Channels per block. In the forward a wide block (4 AVX-512 registers of float32 per state n)
// gives the core independent exp chains to overlap and uses 256 bytes of every row it touches, so
// far fewer pages per step (measured 1.6x faster than 16 at L = 16k); narrow blocks keep a task
// for every thread when D / G or the batch is small. The backward keeps four (K, N, W) tiles per
// task, which stay in L2 only when narrow (wide measured slower there).
constexpr int64_t kWide = 64, kNarrow = 16;

using ssmkit::sigmoid;
using ssmkit::vexp;

struct Dims {
  int64_t B, D, L, N, G, K;
  int64_t chunks() const { return (L + K - 1) / K; }
  int64_t per_group() const { return D / G; }
  int64_t blocks(int64_t W) const { return (per_group() + W - 1) / W; }  // per group
  // Wide blocks when they still give every thread a task.
  bool wide() const {
    return per_group() >= kWide && B * G * (per_group() / kWide) >= at::get_num_threads();
  }
};

// Channel block k of group g: channels [d0, d0 + width).
struct Block {
  int64_t d0, width;
  Block(const Dims& s, int64_t g, int64_t k, int64_t W)
      : d0(g * s.per_group() + k * W), width(std::min(W, s.per_group() - k * W)) {}
};

// Lanes past the block's width stay zero: with u = dt = 0 and A = 0 they compute zeros.
template <typename T>
inline void load_lanes(T* dst, const T* src, const Block& blk) {
  std::memcpy(dst, src + blk.d0, blk.width * sizeof(T));
}

template <typename T>
inline void store_lanes(T* dst, const T* src, const Block& blk) {
  std::memcpy(dst + blk.d0, src, blk.width * sizeof(T));
}

// A rows of the block as an (N, W) tile.
template <int64_t W, typename T>
void load_A(T* At, const T* A, const Dims& s, const Block& blk) {
  std::fill(At, At + s.N * W, T(0));
  for (int64_t w = 0; w < blk.width; ++w)
    for (int64_t n = 0; n < s.N; ++n) At[n * W + w] = A[(blk.d0 + w) * s.N + n];
}

// A (B, D, N) state row of batch b <-> an (N, W) tile.
template <int64_t W, typename T>
void state_to_tile(T* tile, const T* state, const Dims& s, int64_t b, const Block& blk) {
  std::fill(tile, tile + s.N * W, T(0));
  if (!state) return;
  for (int64_t w = 0; w < blk.width; ++w)
    for (int64_t n = 0; n < s.N; ++n) tile[n * W + w] = state[(b * s.D + blk.d0 + w) * s.N + n];
}

template <int64_t W, typename T>
void tile_to_state(T* state, const T* tile, const Dims& s, int64_t b, const Block& blk) {
  for (int64_t w = 0; w < blk.width; ++w)
    for (int64_t n = 0; n < s.N; ++n) state[(b * s.D + blk.d0 + w) * s.N + n] = tile[n * W + w];
}

// Checkpoint c of batch b, (B, chunks, N, D) <-> an (N, W) tile.
template <typename P>
P ckpt_row(P ckpt, const Dims& s, int64_t b, int64_t c, int64_t n) {
  return ckpt + ((b * s.chunks() + c) * s.N + n) * s.D;
}

template <int64_t W, typename T>
void forward_impl(const Dims s, const T* u, const T* dt, const T* A, const T* Bm, const T* Cm,
                  const T* Dv, const T* z, const T* h0, T* y, T* hL, T* ckpt) {
  const int64_t N = s.N, D = s.D, G = s.G, nb = s.blocks(W);
  at::parallel_for(0, s.B * G * nb, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> h(N * W), At(N * W);
    alignas(64) T uu[W], dd[W], zz[W], du[W], acc[W], Dw[W];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (G * nb), g = (task / nb) % G;
      const Block blk(s, g, task % nb, W);
      load_A<W>(At.data(), A, s, blk);
      state_to_tile<W>(h.data(), h0, s, b, blk);
      std::fill(uu, uu + W, T(0));
      std::fill(dd, dd + W, T(0));
      std::fill(zz, zz + W, T(0));
      std::fill(Dw, Dw + W, T(0));
      if (Dv) load_lanes(Dw, Dv, blk);
      for (int64_t t = 0; t < s.L; ++t) {
        if (ckpt && t % s.K == 0)
          for (int64_t n = 0; n < N; ++n) store_lanes(ckpt_row(ckpt, s, b, t / s.K, n), &h[n * W], blk);
        const int64_t row = (b * s.L + t) * D;
        load_lanes(uu, u + row, blk);
        load_lanes(dd, dt + row, blk);
        const T* B_t = Bm + ((b * s.L + t) * G + g) * N;
        const T* C_t = Cm + ((b * s.L + t) * G + g) * N;
        for (int64_t w = 0; w < W; ++w) {
          du[w] = dd[w] * uu[w];
          acc[w] = Dw[w] * uu[w];
        }
        for (int64_t n = 0; n < N; ++n) {
          const T bn = B_t[n], cn = C_t[n];
          T* hn = &h[n * W];
          const T* an = &At[n * W];
#pragma omp simd
          for (int64_t w = 0; w < W; ++w) {
            hn[w] = vexp(dd[w] * an[w]) * hn[w] + du[w] * bn;
            acc[w] += cn * hn[w];
          }
        }
        if (z) {
          load_lanes(zz, z + row, blk);
#pragma omp simd
          for (int64_t w = 0; w < W; ++w) acc[w] *= zz[w] * sigmoid(zz[w]);
        }
        store_lanes(y + row, acc, blk);
      }
      tile_to_state<W>(hL, h.data(), s, b, blk);
    }
  });
}

template <int64_t W, typename T>
void backward_impl(const Dims s, int64_t slices, const T* u, const T* dt, const T* A, const T* Bm,
                   const T* Cm, const T* Dv, const T* z, const T* ckpt, const T* gy,
                   const T* ghL, T* du, T* ddt, T* dA, T* dB, T* dC, T* dD, T* dz, T* dh0) {
  const int64_t N = s.N, D = s.D, G = s.G, K = s.K, nb = s.blocks(W), NW = s.N * W;
  at::parallel_for(0, s.B * G * slices, 1, [&](int64_t begin, int64_t end) {
    // Per chunk: states (row j = h before step t0 + j), decays, and lane partials of dB, dC.
    std::vector<T> hs((K + 1) * NW), dec(K * NW), dBl(K * NW), dCl(K * NW), At(NW);
    alignas(64) T uu[W], dd[W], zz[W], gg[W], Dw[W], gB[W], gAh[W], out[W], yp[W], sg[W];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (G * slices), g = (task / slices) % G, sl = task % slices;
      const int64_t k_lo = sl * nb / slices, k_hi = (sl + 1) * nb / slices, nk = k_hi - k_lo;
      // Carried across chunks, per block: dL/dh (as it flows into the earlier step), dA, dD.
      std::vector<T> gst(nk * NW), dA_acc(nk * NW, T(0)), dD_acc(nk * W, T(0));
      for (int64_t k = k_lo; k < k_hi; ++k) state_to_tile<W>(&gst[(k - k_lo) * NW], ghL, s, b, Block(s, g, k, W));
      T* dB_r = dB + task * s.L * N;
      T* dC_r = dC + task * s.L * N;
      for (int64_t c = s.chunks() - 1; c >= 0; --c) {
        const int64_t t0 = c * K, t1 = std::min(s.L, t0 + K);
        std::fill(dBl.begin(), dBl.end(), T(0));
        std::fill(dCl.begin(), dCl.end(), T(0));
        for (int64_t k = k_lo; k < k_hi; ++k) {
          const Block blk(s, g, k, W);
          T* gk = &gst[(k - k_lo) * NW];
          T* dAk = &dA_acc[(k - k_lo) * NW];
          T* dDk = &dD_acc[(k - k_lo) * W];
          load_A<W>(At.data(), A, s, blk);
          std::fill(uu, uu + W, T(0));
          std::fill(dd, dd + W, T(0));
          std::fill(zz, zz + W, T(0));
          std::fill(gg, gg + W, T(0));
          std::fill(Dw, Dw + W, T(0));
          if (Dv) load_lanes(Dw, Dv, blk);
          std::fill(hs.begin(), hs.begin() + NW, T(0));
          for (int64_t n = 0; n < N; ++n)
            load_lanes(&hs[n * W], ckpt_row(ckpt, s, b, c, n), blk);
          for (int64_t t = t0; t < t1; ++t) {  // recompute the chunk's states
            const int64_t j = t - t0, row = (b * s.L + t) * D;
            load_lanes(uu, u + row, blk);
            load_lanes(dd, dt + row, blk);
            const T* B_t = Bm + ((b * s.L + t) * G + g) * N;
            for (int64_t n = 0; n < N; ++n) {
              const T bn = B_t[n];
              const T* an = &At[n * W];
              const T* prev = &hs[j * NW + n * W];
              T* next = &hs[(j + 1) * NW + n * W];
              T* e = &dec[j * NW + n * W];
#pragma omp simd
              for (int64_t w = 0; w < W; ++w) {
                e[w] = vexp(dd[w] * an[w]);
                next[w] = e[w] * prev[w] + dd[w] * uu[w] * bn;
              }
            }
          }
          for (int64_t t = t1 - 1; t >= t0; --t) {  // reverse scan
            const int64_t j = t - t0, row = (b * s.L + t) * D;
            load_lanes(uu, u + row, blk);
            load_lanes(dd, dt + row, blk);
            load_lanes(gg, gy + row, blk);
            const T* B_t = Bm + ((b * s.L + t) * G + g) * N;
            const T* C_t = Cm + ((b * s.L + t) * G + g) * N;
            if (z) {
              // y = y' silu(z): the pre-gate y' is recomputed from the state.
              load_lanes(zz, z + row, blk);
              for (int64_t w = 0; w < W; ++w) yp[w] = Dw[w] * uu[w];
              for (int64_t n = 0; n < N; ++n) {
                const T cn = C_t[n];
                const T* cur = &hs[(j + 1) * NW + n * W];
#pragma omp simd
                for (int64_t w = 0; w < W; ++w) yp[w] += cn * cur[w];
              }
#pragma omp simd
              for (int64_t w = 0; w < W; ++w) {
                sg[w] = sigmoid(zz[w]);
                out[w] = gg[w] * yp[w] * sg[w] * (T(1) + zz[w] * (T(1) - sg[w]));
                gg[w] *= zz[w] * sg[w];
              }
              store_lanes(dz + row, out, blk);
            }
            for (int64_t w = 0; w < W; ++w) {
              dDk[w] += gg[w] * uu[w];
              gB[w] = 0;
              gAh[w] = 0;
            }
            for (int64_t n = 0; n < N; ++n) {
              const T bn = B_t[n], cn = C_t[n];
              const T* an = &At[n * W];
              const T* prev = &hs[j * NW + n * W];
              const T* cur = &hs[(j + 1) * NW + n * W];
              const T* e = &dec[j * NW + n * W];
              T* gn = &gk[n * W];
              T* dAn = &dAk[n * W];
              T* dBn = &dBl[j * NW + n * W];
              T* dCn = &dCl[j * NW + n * W];
#pragma omp simd
              for (int64_t w = 0; w < W; ++w) {
                const T gt = gn[w] + gg[w] * cn;  // dL/dh_t, this step's output included
                const T eh = e[w] * prev[w];
                dCn[w] += gg[w] * cur[w];
                dBn[w] += gt * dd[w] * uu[w];
                gB[w] += gt * bn;
                gAh[w] += gt * an[w] * eh;
                dAn[w] += gt * dd[w] * eh;
                gn[w] = gt * e[w];  // flows to h_{t-1} through the decay
              }
            }
            for (int64_t w = 0; w < W; ++w) out[w] = gg[w] * Dw[w] + dd[w] * gB[w];
            store_lanes(du + row, out, blk);
            for (int64_t w = 0; w < W; ++w) out[w] = uu[w] * gB[w] + gAh[w];
            store_lanes(ddt + row, out, blk);
          }
        }
        for (int64_t t = t0; t < t1; ++t)  // sum the lanes: this task's share of dB_t, dC_t
          for (int64_t n = 0; n < N; ++n) {
            T sb = 0, sc = 0;
            const T* pb = &dBl[(t - t0) * NW + n * W];
            const T* pc = &dCl[(t - t0) * NW + n * W];
            for (int64_t w = 0; w < W; ++w) {
              sb += pb[w];
              sc += pc[w];
            }
            dB_r[t * N + n] = sb;
            dC_r[t * N + n] = sc;
          }
      }
      for (int64_t k = k_lo; k < k_hi; ++k) {
        const Block blk(s, g, k, W);
        tile_to_state<W>(dh0, &gst[(k - k_lo) * NW], s, b, blk);
        tile_to_state<W>(dA, &dA_acc[(k - k_lo) * NW], s, b, blk);
        if (dD) store_lanes(dD + b * D, &dD_acc[(k - k_lo) * W], blk);
      }
    }
  });
}

}  // namespace

// Plain C entry points; null pointers mean "absent" (no D, no z, zero initial state, no
// checkpoints, no gradient of the final state). dA, dD are per batch row, (B, D, N) and (B, D);
// dB, dC are per task, (B, G, slices, L, N); the caller sums them.
#define SSMKIT_SS_EXPORTS(T, SUFFIX)                                                            \
  extern "C" void ssmkit_ss_forward_##SUFFIX(                                                   \
      int64_t B, int64_t D, int64_t L, int64_t N, int64_t G, int64_t K, const T* u,             \
      const T* dt, const T* A, const T* Bm, const T* Cm, const T* Dv, const T* z, const T* h0,  \
      T* y, T* hL, T* ckpt) {                                                                   \
    const Dims s{B, D, L, N, G, K};                                                             \
    if (s.wide())                                                                               \
      forward_impl<kWide>(s, u, dt, A, Bm, Cm, Dv, z, h0, y, hL, ckpt);                         \
    else                                                                                        \
      forward_impl<kNarrow>(s, u, dt, A, Bm, Cm, Dv, z, h0, y, hL, ckpt);                       \
  }                                                                                             \
  extern "C" void ssmkit_ss_backward_##SUFFIX(                                                  \
      int64_t B, int64_t D, int64_t L, int64_t N, int64_t G, int64_t K, int64_t slices,         \
      const T* u, const T* dt, const T* A, const T* Bm, const T* Cm, const T* Dv, const T* z,   \
      const T* ckpt, const T* gy, const T* ghL, T* du, T* ddt, T* dA, T* dB, T* dC, T* dD,      \
      T* dz, T* dh0) {                                                                          \
    backward_impl<kNarrow>(Dims{B, D, L, N, G, K}, slices, u, dt, A, Bm, Cm, Dv, z, ckpt, gy,  \
                           ghL, du, ddt, dA, dB, dC, dD, dz, dh0);                              \
  }

SSMKIT_SS_EXPORTS(float, f32)
SSMKIT_SS_EXPORTS(double, f64)
