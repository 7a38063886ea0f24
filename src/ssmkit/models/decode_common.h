// The pieces of the fused decode that every mixer uses (decode.cpp includes this once): the
// layer table `Layer` and weight matrices `Mat` that decode.py fills through ctypes, the
// matrix-vector products over float32 / bf16 / int8 weights, RMSNorm, the short conv step, the
// embedding lookup and the scratch each layer needs.
//
// The matrix-vector products keep kLanes partial sums for each of kRows weight rows, so each row
// streams through once and the batch rows reuse it from L1; measured at ~2.5x the bandwidth of
// MKL's sgemv on the 50,280 x 768 LM head (one thread).
#pragma once

#include <ATen/Parallel.h>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../ops/kernel_math.h"

namespace ssmkit::decode {

constexpr int64_t kMamba = 1, kMamba2 = 2, kGLA = 3, kHGRN2 = 4, kLinearAttention = 5, kRetNet = 6;
constexpr int64_t kF32 = 0, kBF16 = 1, kI8 = 2;  // Mat::fmt

struct Mat {
  const void* w;       // (O, I) of fmt
  const float* scale;  // int8: (O,), w[o, :] * scale[o] is the row; else null
  int64_t fmt;
};

struct Layer {
  int64_t kind;                 // kMamba, kMamba2, kGLA, kHGRN2, kLinearAttention or kRetNet
  int64_t E, N, R, K, H, P, G;  // R: mamba's dt_rank; H, P, G: mamba2's heads, head dim, groups
  int64_t n_in;                 // in_proj's outputs: 2E (mamba) or E + C + H (mamba2)
  int64_t C;                    // conv channels: E (mamba) or E + 2GN (mamba2)
  double norm_eps, inner_eps;   // the block's RMSNorm; mamba2's gated RMSNorm
  double dt_lo, dt_hi;          // mamba2's clamp of the step
  const float* norm_w;          // (D,)
  Mat in_w;                     // (n_in, D)
  const float* in_b;            // (n_in,) | null
  const float* conv_w;          // (C, K)
  const float* conv_b;          // (C,) | null
  Mat x_w;                      // mamba: x_proj (R + 2N, E)
  Mat dt_w;                     // mamba: dt_proj (E, R)
  const float* dt_b;            // mamba: dt_proj's bias (E,); mamba2: dt_bias (H,)
  const float* A;               // mamba: -exp(A_log) (E, N); mamba2: (H,)
  const float* Dv;              // (E,) or (H,) | null
  const float* gnorm_w;         // mamba2: the gated norm's weight (E,)
  Mat out_w;                    // (D, E)
  const float* out_b;           // (D,) | null
  float* conv_state;            // (B, K - 1, C)
  float* ssm_state;             // (B, E, N), (B, H, P, N) or GLA's (B, H, Kh, Vh)
  // GLA (layers/gla.py): H heads of key size Kh and value size Vh, a decay gate of rank `rank`
  int64_t Kh, Vh, rank;
  double inv_tau;               // 1 / gate_temperature
  Mat q_w, k_w, v_w;            // (H Kh, D), (H Kh, D), (H Vh, D)
  Mat g1_w, g2_w;               // (rank, D), (H Kh, rank)
  const float* g2_b;            // (H Kh,)
  Mat r_w;                      // (H Vh, D) | w null: no output gate
  const float* r_b;             // (H Vh,) | null
  const float* onorm_w;         // the per-head RMSNorm's weight (Vh,); eps: inner_eps
  Mat o_w;                      // (D, H Vh)
  // HGRN2 (layers/hgrn2.py) uses H, Kh = Vh, q_w, v_w (its i_proj), o_w, inner_eps, and:
  Mat f_w;                      // the forget gate's logits (D, D)
  double beta;                  // the forget gate's lower bound
  double q_scale;               // 1 or Kh^-1/2
  const float* norm_all_w;      // the RMSNorm over all D outputs (D,)
  // linear attention (layers/linear_attention.py) uses H, Kh = Vh, q_w, k_w, v_w, o_w, inner_eps
  // (the denominator's eps), and the projections' biases (each null without):
  const float *q_b, *k_b, *v_b, *o_b;
  // RetNet (layers/retnet.py) uses H, Kh, Vh, q/k/v/o (weights, biases), r_w / r_b (its g_proj),
  // q_scale (Kh^-1/2), inner_eps (the norm's eps), onorm_w, and:
  const double* inv_freq;       // RoPE's frequencies (Kh / 2,), float64 as the layer computes them
  const float* log_decay_hk;    // log gamma_h repeated over each head's Kh keys (H, Kh)
  float* offset;                // (B,) tokens seen: the position, advanced by one per step
  int64_t group_norm;           // 1: LayerNorm per head then onorm_w (H Vh) and gn_b; 0: RMSNorm per head
  const float* gn_b;            // (H Vh,)
};

constexpr int64_t kRows = 4;  // weight rows per dot-product block

// kLanes weights from memory as float32.
inline f32xL load_weights(const float* p) { return load_lanes(p); }

// The narrow formats widen in registers: one AVX-512 instruction each where the build has it
// (the vector-extension form below compiled to per-lane inserts with GCC 13 and ran 3-4x slower).
inline f32xL load_weights(const uint16_t* p) {  // bfloat16: the upper 16 bits of a float32
#ifdef __AVX512F__
  const __m512i bits = _mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16);
  return reinterpret_cast<f32xL>(_mm512_castsi512_ps(bits));
#else
  typedef uint16_t u16xL __attribute__((vector_size(kLanes * 2)));
  typedef uint32_t u32xL __attribute__((vector_size(kLanes * 4)));
  u16xL h;
  std::memcpy(&h, p, sizeof(h));
  const u32xL bits = __builtin_convertvector(h, u32xL) << 16;
  f32xL v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
#endif
}

inline f32xL load_weights(const int8_t* p) {
#ifdef __AVX512F__
  const __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return reinterpret_cast<f32xL>(_mm512_cvtepi32_ps(q));
#else
  typedef int8_t i8xL __attribute__((vector_size(kLanes)));
  i8xL q;
  std::memcpy(&q, p, sizeof(q));
  return __builtin_convertvector(q, f32xL);
#endif
}

inline float weight(const float* p) { return *p; }
inline float weight(const uint16_t* p) {
  const uint32_t bits = static_cast<uint32_t>(*p) << 16;
  float v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}
inline float weight(const int8_t* p) { return static_cast<float>(*p); }

// out[r] = W[r, :] . x for R rows of W (row stride I).
template <int64_t R, typename T>
inline void dot_rows(const T* W, int64_t I, const float* x, float* out) {
  f32xL acc[R] = {};
  int64_t i = 0;
  constexpr int64_t line = 64 / sizeof(T);  // weights per cache line
  for (; i + kLanes <= I; i += kLanes) {
    const f32xL xv = load_lanes(x + i);
    for (int64_t r = 0; r < R; ++r) {
      // bf16 / int8 rows are consumed 2-4x faster per byte than the hardware prefetcher ramps up
      // on each new block; prefetching the next block's line measured 1.9x (bf16) and 1.6x (int8)
      // on the LM head, and nothing for float32. A prefetch past the end does not fault.
      if (sizeof(T) < sizeof(float) && i % line == 0) __builtin_prefetch(W + (r + R) * I + i);
      acc[r] += load_weights(W + r * I + i) * xv;
    }
  }
  for (int64_t r = 0; r < R; ++r) {
    float s = lane_sum(acc[r]);
    for (int64_t k = i; k < I; ++k) s += weight(W + r * I + k) * x[k];
    out[r] = s;
  }
}

// y (Bsz, O) = x (Bsz, I; row stride ldx) W^T + b, W (O, I). Threads split the rows of W.
template <typename T>
void gemv_t(int64_t Bsz, int64_t O, int64_t I, const T* W, const float* scale, const float* b,
            const float* x, int64_t ldx, float* y) {
  const int64_t blocks = (O + kRows - 1) / kRows;
  const int64_t grain = std::max<int64_t>(1, 16384 / (kRows * I));  // >= 16k weights a task
  at::parallel_for(0, blocks, grain, [&](int64_t k0, int64_t k1) {
    float out[kRows];
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t o = k * kRows, rows = std::min(kRows, O - o);
      for (int64_t bb = 0; bb < Bsz; ++bb) {
        if (rows == kRows) {
          dot_rows<kRows>(W + o * I, I, x + bb * ldx, out);
        } else {
          for (int64_t r = 0; r < rows; ++r) dot_rows<1>(W + (o + r) * I, I, x + bb * ldx, out + r);
        }
        for (int64_t r = 0; r < rows; ++r) {
          const float v = scale ? out[r] * scale[o + r] : out[r];
          y[bb * O + o + r] = b ? v + b[o + r] : v;
        }
      }
    }
  });
}

void gemv(int64_t Bsz, int64_t O, int64_t I, const Mat& W, const float* b, const float* x,
          int64_t ldx, float* y) {
  if (W.fmt == kBF16)
    gemv_t(Bsz, O, I, static_cast<const uint16_t*>(W.w), nullptr, b, x, ldx, y);
  else if (W.fmt == kI8)
    gemv_t(Bsz, O, I, static_cast<const int8_t*>(W.w), W.scale, b, x, ldx, y);
  else
    gemv_t(Bsz, O, I, static_cast<const float*>(W.w), nullptr, b, x, ldx, y);
}

// y (n,) = x * rsqrt(mean(x^2) + eps) * w, as torch's rms_norm.
void rms_norm(int64_t n, const float* x, const float* w, double eps, float* y) {
  float part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) part[j] += x[i + j] * x[i + j];
  float ss = lane_sum(part);
  for (; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + static_cast<float>(eps));
  for (int64_t k = 0; k < n; ++k) y[k] = x[k] * inv * w[k];
}

// One token of the causal depthwise conv for one sequence, then SiLU: out (C,) from the window
// [state (K-1, C), x (C,)]; the state shifts by one token in place.
void conv_step_silu(int64_t C, int64_t K, const float* x, const float* w, const float* b,
                    float* state, float* out) {
  for (int64_t c = 0; c < C; ++c) out[c] = x[c] * w[c * K + K - 1];
  for (int64_t k = 0; k + 1 < K; ++k)
    for (int64_t c = 0; c < C; ++c) out[c] += state[k * C + c] * w[c * K + k];
  for (int64_t c = 0; c < C; ++c) out[c] = silu(b ? out[c] + b[c] : out[c]);
  if (K > 1) {
    std::memmove(state, state + C, (K - 2) * C * sizeof(float));
    std::memcpy(state + (K - 2) * C, x, C * sizeof(float));
  }
}

// x (D,) = row t of the embedding, times scale (a tied embedding is the LM head's Mat).
void embedding_row(const Mat& E, int64_t t, int64_t D, double scale, float* x) {
  const float s = static_cast<float>(scale);
  if (E.fmt == kBF16) {
    const uint16_t* row = static_cast<const uint16_t*>(E.w) + t * D;
    for (int64_t k = 0; k < D; ++k) x[k] = weight(row + k);
  } else if (E.fmt == kI8) {
    const int8_t* row = static_cast<const int8_t*>(E.w) + t * D;
    for (int64_t k = 0; k < D; ++k) x[k] = weight(row + k) * E.scale[t];
  } else {
    std::memcpy(x, static_cast<const float*>(E.w) + t * D, D * sizeof(float));
  }
  if (scale != 1.0)
    for (int64_t k = 0; k < D; ++k) x[k] *= s;
}

// Floats of scratch one layer needs for a batch of Bsz (the largest over layers is allocated).
int64_t layer_workspace(const Layer& l, int64_t Bsz) {
  if (l.kind == kMamba) return Bsz * (l.n_in + l.C + (l.R + 2 * l.N) + 2 * l.E);
  if (l.kind == kGLA) return Bsz * (3 * l.H * l.Kh + 3 * l.H * l.Vh + l.rank);
  if (l.kind == kHGRN2) return Bsz * (3 * l.H * l.Kh + 2 * l.H * l.Vh);
  if (l.kind == kLinearAttention) return Bsz * (2 * l.H * l.Kh + 3 * l.H * (l.Vh + 1));
  if (l.kind == kRetNet) return Bsz * (2 * l.H * l.Kh + 3 * l.H * l.Vh);
  return Bsz * (l.n_in + l.C + l.H + l.E);
}

}  // namespace ssmkit::decode
