// One token of the Mamba-1 selective scan with the state updated in place: the recurrence of
// step.py for one sequence, used by the fused decode (models/decode.cpp), which owns the buffers.
//
//   h[d, n] = exp(dt[d] A[d, n]) h[d, n] + dt[d] u[d] B[n]
//   y[d]    = (sum_n C[n] h[d, n] + D[d] u[d]) * silu(z[d])
//
// u, dt, z, y: (D,); A, h: (D, N) row-major; B, C: (N,) (one group); Dv and z may be null.
#pragma once

#include <cstdint>

#include "../kernel_math.h"

namespace ssmkit {

inline void selective_scan_step_inplace(int64_t D, int64_t N, const float* u, const float* dt,
                                        const float* A, const float* B, const float* C,
                                        const float* Dv, const float* z, float* h, float* y) {
  for (int64_t d = 0; d < D; ++d) {
    float* hd = h + d * N;
    const float* Ad = A + d * N;
    const float dtd = dt[d], du = dt[d] * u[d];
    float part[kLanes] = {};  // independent partial sums: the n loop vectorizes
    int64_t n = 0;
    for (; n + kLanes <= N; n += kLanes)
      for (int64_t j = 0; j < kLanes; ++j) {
        const float v = vexp(dtd * Ad[n + j]) * hd[n + j] + du * B[n + j];
        hd[n + j] = v;
        part[j] += v * C[n + j];
      }
    for (; n < N; ++n) {
      const float v = vexp(dtd * Ad[n]) * hd[n] + du * B[n];
      hd[n] = v;
      part[0] += v * C[n];
    }
    float acc = lane_sum(part);
    if (Dv) acc += Dv[d] * u[d];
    y[d] = z ? acc * silu(z[d]) : acc;
  }
}

}  // namespace ssmkit
