// Fused CPU decode of a CausalLM: one call per generated token runs the embedding, every block
// (RMSNorm, mixer, residual) and the final norm and LM head, writing into buffers the caller
// (decode.py) allocated once. States are updated in place; nothing is allocated per token.
//
// Where the time goes at B = 1: reading the weights (every matrix once per token for the whole
// batch). The matrix-vector products below keep kLanes partial sums for each of kRows weight rows,
// so each row streams through once and the batch rows reuse it from L1; measured at ~2.5x the
// bandwidth of MKL's sgemv on the 50,280 x 768 LM head (one thread). Element-wise work and the
// recurrences (ops/*/step_inplace.h) are small beside the weights.
//
// Layout: row-major, PyTorch's own. A layer is described by `Layer` (decode.py writes the same
// fields through ctypes); null pointers mean an absent bias / D / norm. The matrices of the
// projections and the LM head (`Mat`) are float32, bfloat16 (the upper half of a float32) or int8
// with one float32 scale per row (weight-only storage: activations, states and sums stay float32).
#include <ATen/Parallel.h>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../ops/kernel_math.h"
#include "../ops/linear_attention/step_inplace.h"
#include "../ops/selective_scan/step_inplace.h"
#include "../ops/ssd/step_inplace.h"

namespace {

using ssmkit::f32xL;
using ssmkit::kLanes;
using ssmkit::lane_sum;
using ssmkit::load_lanes;
using ssmkit::silu;
using ssmkit::softplus;

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

// hn (Bsz, D) -> out (Bsz, D), the Mamba mixer (layers/mamba.py).
void mamba_layer(const Layer& l, int64_t Bsz, int64_t D, const float* hn, float* out, float* work) {
  const int64_t E = l.E, N = l.N, R = l.R, W = R + 2 * N;
  float* xz = work;               // (Bsz, 2E): x, z
  float* xc = xz + Bsz * l.n_in;  // (Bsz, E)
  float* dbc = xc + Bsz * E;      // (Bsz, R + 2N): delta, B, C
  float* delta = dbc + Bsz * W;   // (Bsz, E)
  float* y = delta + Bsz * E;     // (Bsz, E)
  gemv(Bsz, l.n_in, D, l.in_w, l.in_b, hn, D, xz);
  for (int64_t b = 0; b < Bsz; ++b)
    conv_step_silu(E, l.K, xz + b * l.n_in, l.conv_w, l.conv_b, l.conv_state + b * (l.K - 1) * E,
                   xc + b * E);
  gemv(Bsz, W, E, l.x_w, nullptr, xc, E, dbc);
  gemv(Bsz, E, R, l.dt_w, l.dt_b, dbc, W, delta);
  for (int64_t i = 0; i < Bsz * E; ++i) delta[i] = softplus(delta[i]);
  for (int64_t b = 0; b < Bsz; ++b) {
    const float* row = dbc + b * W;
    ssmkit::selective_scan_step_inplace(E, N, xc + b * E, delta + b * E, l.A, row + R, row + R + N,
                                        l.Dv, xz + b * l.n_in + E, l.ssm_state + b * E * N,
                                        y + b * E);
  }
  gemv(Bsz, D, E, l.out_w, l.out_b, y, E, out);
}

// hn (Bsz, D) -> out (Bsz, D), the Mamba-2 mixer (layers/mamba2.py).
void mamba2_layer(const Layer& l, int64_t Bsz, int64_t D, const float* hn, float* out, float* work) {
  const int64_t E = l.E, C = l.C, H = l.H, P = l.P, N = l.N, G = l.G, GN = G * N;
  float* proj = work;             // (Bsz, E + C + H): z, xBC, dt
  float* xc = proj + Bsz * l.n_in;  // (Bsz, C)
  float* dt = xc + Bsz * C;       // (Bsz, H)
  float* y = dt + Bsz * H;        // (Bsz, E)
  gemv(Bsz, l.n_in, D, l.in_w, l.in_b, hn, D, proj);
  for (int64_t b = 0; b < Bsz; ++b) {
    const float* pb = proj + b * l.n_in;
    float* xb = xc + b * C;
    float* db = dt + b * H;
    float* yb = y + b * E;
    conv_step_silu(C, l.K, pb + E, l.conv_w, l.conv_b, l.conv_state + b * (l.K - 1) * C, xb);
    for (int64_t h = 0; h < H; ++h) {
      const float v = softplus(pb[E + C + h] + l.dt_b[h]);
      db[h] = std::min(std::max(v, static_cast<float>(l.dt_lo)), static_cast<float>(l.dt_hi));
    }
    float* state = l.ssm_state + b * H * P * N;
    at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
      ssmkit::ssd_step_inplace(h0, h1, H, P, N, G, xb, db, l.A, xb + E, xb + E + GN, l.Dv, state, yb);
    });
    // out_proj(RMSNorm_grouped(y * silu(z))), the norm within each of the G groups
    for (int64_t e = 0; e < E; ++e) yb[e] *= silu(pb[e]);
    const int64_t width = E / G;
    for (int64_t g = 0; g < G; ++g)
      rms_norm(width, yb + g * width, l.gnorm_w + g * width, l.inner_eps, yb + g * width);
  }
  gemv(Bsz, D, E, l.out_w, l.out_b, y, E, out);
}

// hn (Bsz, D) -> out (Bsz, D), gated linear attention (layers/gla.py).
void gla_layer(const Layer& l, int64_t Bsz, int64_t D, const float* hn, float* out, float* work) {
  const int64_t H = l.H, HK = l.H * l.Kh, HV = l.H * l.Vh;
  float* q = work;            // (Bsz, HK)
  float* k = q + Bsz * HK;    // (Bsz, HK)
  float* g = k + Bsz * HK;    // (Bsz, HK): the decay gate's logits, then log decay
  float* v = g + Bsz * HK;    // (Bsz, HV)
  float* o = v + Bsz * HV;    // (Bsz, HV)
  float* r = o + Bsz * HV;    // (Bsz, HV)
  float* g1 = r + Bsz * HV;   // (Bsz, rank)
  gemv(Bsz, HK, D, l.q_w, nullptr, hn, D, q);
  gemv(Bsz, HK, D, l.k_w, nullptr, hn, D, k);
  gemv(Bsz, HV, D, l.v_w, nullptr, hn, D, v);
  gemv(Bsz, l.rank, D, l.g1_w, nullptr, hn, D, g1);
  gemv(Bsz, HK, l.rank, l.g2_w, l.g2_b, g1, l.rank, g);
  const float inv_tau = static_cast<float>(l.inv_tau);
  for (int64_t i = 0; i < Bsz * HK; ++i) g[i] = -softplus(-g[i]) * inv_tau;  // logsigmoid / tau
  const float scale = 1.0f / std::sqrt(static_cast<float>(l.Kh));
  for (int64_t b = 0; b < Bsz; ++b) {
    float* state = l.ssm_state + b * HK * l.Vh;
    const int64_t qb = b * HK, vb = b * HV;
    at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
      ssmkit::linear_attention_step_inplace(h0, h1, l.Kh, l.Vh, q + qb, k + qb, v + vb, g + qb, scale,
                                            state, o + vb);
    });
    for (int64_t h = 0; h < H; ++h)
      rms_norm(l.Vh, o + vb + h * l.Vh, l.onorm_w, l.inner_eps, o + vb + h * l.Vh);
  }
  if (l.r_w.w) {
    gemv(Bsz, HV, D, l.r_w, l.r_b, hn, D, r);
    for (int64_t i = 0; i < Bsz * HV; ++i) o[i] *= silu(r[i]);
  }
  gemv(Bsz, D, HV, l.o_w, nullptr, o, HV, out);
}

// hn (Bsz, D) -> out (Bsz, D), HGRN2 (layers/hgrn2.py): f = beta + (1 - beta) sigmoid(z),
// k = 1 - f, q = silu(W_q x), v = W_i x; the linear-attention step; RMSNorm over D; W_o.
void hgrn2_layer(const Layer& l, int64_t Bsz, int64_t D, const float* hn, float* out, float* work) {
  const int64_t H = l.H, HK = l.H * l.Kh, HV = l.H * l.Vh;
  float* q = work;            // (Bsz, HK)
  float* k = q + Bsz * HK;    // (Bsz, HK)
  float* g = k + Bsz * HK;    // (Bsz, HK): the forget gate's logits, then log f
  float* v = g + Bsz * HK;    // (Bsz, HV)
  float* o = v + Bsz * HV;    // (Bsz, HV)
  gemv(Bsz, HK, D, l.f_w, nullptr, hn, D, g);
  gemv(Bsz, HK, D, l.q_w, nullptr, hn, D, q);
  gemv(Bsz, HV, D, l.v_w, nullptr, hn, D, v);
  const float beta = static_cast<float>(l.beta);
  for (int64_t i = 0; i < Bsz * HK; ++i) {
    const float z = g[i];
    q[i] = silu(q[i]);
    k[i] = (1.0f - beta) * ssmkit::sigmoid(-z);  // 1 - f without cancellation
    g[i] = beta == 0.0f ? -softplus(-z) : ssmkit::vlog(beta + (1.0f - beta) * ssmkit::sigmoid(z));
  }
  for (int64_t b = 0; b < Bsz; ++b) {
    float* state = l.ssm_state + b * HK * l.Vh;
    const int64_t qb = b * HK, vb = b * HV;
    at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
      ssmkit::linear_attention_step_inplace(h0, h1, l.Kh, l.Vh, q + qb, k + qb, v + vb, g + qb,
                                            static_cast<float>(l.q_scale), state, o + vb);
    });
    rms_norm(HV, o + vb, l.norm_all_w, l.inner_eps, o + vb);
  }
  gemv(Bsz, D, HV, l.o_w, nullptr, o, HV, out);
}

// hn (Bsz, D) -> out (Bsz, D), linear attention with the elu + 1 feature map and its normalizer
// as an extra value column of ones (layers/linear_attention.py); no decay.
void linear_attention_layer(const Layer& l, int64_t Bsz, int64_t D, const float* hn, float* out,
                            float* work) {
  const int64_t H = l.H, K = l.Kh, V = l.Vh, HK = H * K, HV = H * V, HV1 = H * (V + 1);
  float* q = work;            // (Bsz, HK)
  float* k = q + Bsz * HK;    // (Bsz, HK)
  float* v = k + Bsz * HK;    // (Bsz, HV), then (Bsz, H, V + 1) with the ones column
  float* v1 = v + Bsz * HV1;  // (Bsz, H, V + 1)
  float* o = v1 + Bsz * HV1;  // (Bsz, H, V + 1): numerator, denominator
  gemv(Bsz, HK, D, l.q_w, l.q_b, hn, D, q);
  gemv(Bsz, HK, D, l.k_w, l.k_b, hn, D, k);
  gemv(Bsz, HV, D, l.v_w, l.v_b, hn, D, v);
  for (int64_t i = 0; i < Bsz * HK; ++i) {
    q[i] = q[i] > 0.0f ? q[i] + 1.0f : ssmkit::vexp(q[i]);
    k[i] = k[i] > 0.0f ? k[i] + 1.0f : ssmkit::vexp(k[i]);
  }
  for (int64_t b = 0; b < Bsz; ++b)
    for (int64_t h = 0; h < H; ++h) {
      std::memcpy(v1 + (b * H + h) * (V + 1), v + b * HV + h * V, V * sizeof(float));
      v1[(b * H + h) * (V + 1) + V] = 1.0f;
    }
  for (int64_t b = 0; b < Bsz; ++b) {
    float* state = l.ssm_state + b * HK * (V + 1);
    at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
      ssmkit::linear_attention_step_inplace(h0, h1, K, V + 1, q + b * HK, k + b * HK, v1 + b * HV1,
                                            nullptr, 1.0f, state, o + b * HV1);
    });
    // o (H, V) = numerator / (denominator + eps), written over v (free now)
    const float eps = static_cast<float>(l.inner_eps);
    for (int64_t h = 0; h < H; ++h) {
      const float* oh = o + b * HV1 + h * (V + 1);
      const float den = oh[V] + eps;
      for (int64_t j = 0; j < V; ++j) v[b * HV + h * V + j] = oh[j] / den;
    }
  }
  gemv(Bsz, D, HV, l.o_w, l.o_b, v, HV, out);
}

// x (H, K) rotated in place by RoPE at position pos: pairs (i, i + K/2), angles in float64 then
// cos / sin rounded to float (as layers/attention.py's rope).
void rope_inplace(int64_t H, int64_t K, const double* inv_freq, double pos, float* x) {
  const int64_t half = K / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double ang = pos * inv_freq[i];
    const float c = static_cast<float>(std::cos(ang)), s = static_cast<float>(std::sin(ang));
    for (int64_t h = 0; h < H; ++h) {
      float* xh = x + h * K;
      const float x1 = xh[i], x2 = xh[i + half];
      xh[i] = x1 * c - x2 * s;
      xh[i + half] = x2 * c + x1 * s;
    }
  }
}

// hn (Bsz, D) -> out (Bsz, D), RetNet's multi-scale retention (layers/retnet.py).
void retnet_layer(const Layer& l, int64_t Bsz, int64_t D, const float* hn, float* out, float* work) {
  const int64_t H = l.H, K = l.Kh, V = l.Vh, HK = H * K, HV = H * V;
  float* q = work;            // (Bsz, HK)
  float* k = q + Bsz * HK;    // (Bsz, HK)
  float* v = k + Bsz * HK;    // (Bsz, HV)
  float* o = v + Bsz * HV;    // (Bsz, HV)
  float* g = o + Bsz * HV;    // (Bsz, HV)
  gemv(Bsz, HK, D, l.q_w, l.q_b, hn, D, q);
  gemv(Bsz, HK, D, l.k_w, l.k_b, hn, D, k);
  gemv(Bsz, HV, D, l.v_w, l.v_b, hn, D, v);
  gemv(Bsz, HV, D, l.r_w, l.r_b, hn, D, g);
  for (int64_t b = 0; b < Bsz; ++b) {
    const double pos = std::nearbyint(static_cast<double>(l.offset[b]));
    rope_inplace(H, K, l.inv_freq, pos, q + b * HK);
    rope_inplace(H, K, l.inv_freq, pos, k + b * HK);
    float* state = l.ssm_state + b * HK * V;
    at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
      ssmkit::linear_attention_step_inplace(h0, h1, K, V, q + b * HK, k + b * HK, v + b * HV,
                                            l.log_decay_hk, static_cast<float>(l.q_scale), state,
                                            o + b * HV);
    });
    l.offset[b] += 1.0f;
    const float eps = static_cast<float>(l.inner_eps);
    for (int64_t h = 0; h < H; ++h) {
      float* oh = o + b * HV + h * V;
      if (l.group_norm) {  // LayerNorm over the head's V values, then the per-channel affine map
        float mean = 0.0f, var = 0.0f;
        for (int64_t j = 0; j < V; ++j) mean += oh[j];
        mean /= static_cast<float>(V);
        for (int64_t j = 0; j < V; ++j) var += (oh[j] - mean) * (oh[j] - mean);
        const float inv = 1.0f / std::sqrt(var / static_cast<float>(V) + eps);
        for (int64_t j = 0; j < V; ++j)
          oh[j] = (oh[j] - mean) * inv * l.onorm_w[h * V + j] + l.gn_b[h * V + j];
      } else {
        rms_norm(V, oh, l.onorm_w, l.inner_eps, oh);
      }
    }
  }
  for (int64_t i = 0; i < Bsz * HV; ++i) o[i] *= silu(g[i]);
  gemv(Bsz, D, HV, l.o_w, l.o_b, o, HV, out);
}

}  // namespace

extern "C" int64_t ssmkit_decode_workspace(int64_t n_layers, const Layer* layers, int64_t Bsz,
                                           int64_t D) {
  int64_t most = 0;
  for (int64_t i = 0; i < n_layers; ++i) most = std::max(most, layer_workspace(layers[i], Bsz));
  return most + 2 * Bsz * D;  // + the normalized input and the mixer's output
}

// One token for every row: tokens (Bsz,) -> logits (Bsz, V); x (Bsz, D) holds the residual
// stream. final_w null: no final norm. Returns 0, or 1 + the row of a token outside [0, V).
extern "C" int64_t ssmkit_decode_step_f32(int64_t Bsz, int64_t D, int64_t V, int64_t n_layers,
                                          const Layer* layers, const int64_t* tokens,
                                          const Mat* embedding, double embed_scale,
                                          const float* final_w, double final_eps,
                                          const Mat* head, float* x, float* logits,
                                          float* work) {
  for (int64_t b = 0; b < Bsz; ++b)
    if (tokens[b] < 0 || tokens[b] >= V) return b + 1;
  for (int64_t b = 0; b < Bsz; ++b) embedding_row(*embedding, tokens[b], D, embed_scale, x + b * D);
  float* hn = work;          // (Bsz, D)
  float* out = hn + Bsz * D;  // (Bsz, D)
  float* scratch = out + Bsz * D;
  for (int64_t i = 0; i < n_layers; ++i) {
    const Layer& l = layers[i];
    for (int64_t b = 0; b < Bsz; ++b) rms_norm(D, x + b * D, l.norm_w, l.norm_eps, hn + b * D);
    if (l.kind == kMamba)
      mamba_layer(l, Bsz, D, hn, out, scratch);
    else if (l.kind == kMamba2)
      mamba2_layer(l, Bsz, D, hn, out, scratch);
    else if (l.kind == kGLA)
      gla_layer(l, Bsz, D, hn, out, scratch);
    else if (l.kind == kHGRN2)
      hgrn2_layer(l, Bsz, D, hn, out, scratch);
    else if (l.kind == kLinearAttention)
      linear_attention_layer(l, Bsz, D, hn, out, scratch);
    else
      retnet_layer(l, Bsz, D, hn, out, scratch);
    for (int64_t k = 0; k < Bsz * D; ++k) x[k] += out[k];
  }
  for (int64_t b = 0; b < Bsz; ++b) {
    if (final_w)
      rms_norm(D, x + b * D, final_w, final_eps, hn + b * D);
    else
      std::memcpy(hn + b * D, x + b * D, D * sizeof(float));
  }
  gemv(Bsz, V, D, *head, nullptr, hn, D, logits);
  return 0;
}
