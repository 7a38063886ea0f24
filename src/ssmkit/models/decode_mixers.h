// One token of each mixer the fused decode covers, for a batch: hn (Bsz, D), the block's normalized
// input, -> out (Bsz, D), the states updated in place (decode.cpp includes this once). Each
// follows its layer in layers/<family>.py; the recurrences are the ops' step_inplace.h.
#pragma once

#include "../ops/linear_attention/step_inplace.h"
#include "../ops/selective_scan/step_inplace.h"
#include "../ops/ssd/step_inplace.h"
#include "decode_common.h"

namespace ssmkit::decode {

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

}  // namespace ssmkit::decode
