// One token of gated linear attention with the state updated in place: the recurrence of step.py
// for one sequence and a range of heads, used by the fused decode (models/decode.cpp). Per head h,
// S (K, V):
//
//   S[k, :] = exp(log_decay[h, k]) S[k, :] + k_t[k] v_t[:]        o[:] = scale sum_k q[k] S[k, :]
//
// q, k_t, log_decay: (H, K); v_t, o: (H, V); S: (H, K, V); log_decay null: no decay.
#pragma once

#include <cstdint>

#include "../kernel_math.h"

namespace ssmkit {

inline void linear_attention_step_inplace(int64_t h0, int64_t h1, int64_t K, int64_t V,
                                          const float* q, const float* k, const float* v,
                                          const float* log_decay, float scale, float* S,
                                          float* o) {
  for (int64_t h = h0; h < h1; ++h) {
    float* oh = o + h * V;
    const float* vh = v + h * V;
    for (int64_t j = 0; j < V; ++j) oh[j] = 0.0f;
    for (int64_t i = 0; i < K; ++i) {
      float* row = S + (h * K + i) * V;
      const float a = log_decay ? vexp(log_decay[h * K + i]) : 1.0f;
      const float ki = k[h * K + i], qi = q[h * K + i];
      for (int64_t j = 0; j < V; ++j) {
        const float s = a * row[j] + ki * vh[j];
        row[j] = s;
        oh[j] += qi * s;
      }
    }
    for (int64_t j = 0; j < V; ++j) oh[j] *= scale;
  }
}

}  // namespace ssmkit
