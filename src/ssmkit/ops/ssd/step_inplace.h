// One token of the Mamba-2 SSD recurrence with the state updated in place: the recurrence of
// step.py for one sequence and a range of heads, used by the fused decode (models/decode.cpp).
// Head h reads group g = h / (H / G); its state is (P, N):
//
//   s[h, p, n] = exp(dt[h] A[h]) s[h, p, n] + dt[h] x[h, p] B[g, n]
//   y[h, p]    = sum_n s[h, p, n] C[g, n] + D[h] x[h, p]
//
// x, y: (H, P); dt, A, Dv: (H,); B, C: (G, N); s: (H, P, N); Dv may be null.
#pragma once

#include <cstdint>

#include "../kernel_math.h"

namespace ssmkit {

inline void ssd_step_inplace(int64_t h0, int64_t h1, int64_t H, int64_t P, int64_t N, int64_t G,
                             const float* x, const float* dt, const float* A, const float* B,
                             const float* C, const float* Dv, float* s, float* y) {
  for (int64_t h = h0; h < h1; ++h) {
    const int64_t g = h / (H / G);
    const float* Bg = B + g * N;
    const float* Cg = C + g * N;
    const float decay = vexp(dt[h] * A[h]);
    for (int64_t p = 0; p < P; ++p) {
      float* sp = s + (h * P + p) * N;
      const float dx = dt[h] * x[h * P + p];
      float part[kLanes] = {};  // independent partial sums: the n loop vectorizes
      int64_t n = 0;
      for (; n + kLanes <= N; n += kLanes)
        for (int64_t j = 0; j < kLanes; ++j) {
          const float v = decay * sp[n + j] + dx * Bg[n + j];
          sp[n + j] = v;
          part[j] += v * Cg[n + j];
        }
      for (; n < N; ++n) {
        const float v = decay * sp[n] + dx * Bg[n];
        sp[n] = v;
        part[0] += v * Cg[n];
      }
      const float acc = lane_sum(part);
      y[h * P + p] = Dv ? acc + Dv[h] * x[h * P + p] : acc;
    }
  }
}

}  // namespace ssmkit
