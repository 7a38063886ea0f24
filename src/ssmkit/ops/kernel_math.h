// Element-wise math shared by the C++ CPU kernels (ops/*/*.cpp, models/decode.cpp), written so
// that the compiler vectorizes it (no libm call in the hot loops).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace ssmkit {

// exp for float that the compiler can vectorize (no libm call): x = k ln2 + r with |r| <= ln2/2,
// exp(r) by the Cephes degree-6 polynomial (about 1 ulp), 2^k written into the exponent bits.
// exp(0) is exactly 1, so a step with dt = 0 leaves the state bit-for-bit unchanged; results
// below about 1e-38 flush to 0.
inline float vexp(float x) {
  float xc = x < -87.0f ? -87.0f : x;
  xc = xc > 88.0f ? 88.0f : xc;
  float k = xc * 1.44269504088896341f + 12582912.0f;  // adding 1.5 * 2^23 rounds to an integer
  k -= 12582912.0f;
  float r = xc - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.0f ? 0.0f : p * scale;
}

// float64 is for checks, where accuracy matters more than speed.
inline double vexp(double x) { return std::exp(x); }

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + vexp(-x));
}

// log for float > 0 (normal) that the compiler can vectorize: x = m 2^e with m in [sqrt(1/2), sqrt(2)),
// log(m) by the Cephes degree-9 polynomial in m - 1 (about 1 ulp).
inline float vlog(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  float e = static_cast<float>(((bits >> 23) & 0xff) - 126);
  bits = (bits & 0x807fffff) | 0x3f000000;  // m in [0.5, 1)
  float m;
  std::memcpy(&m, &bits, sizeof(m));
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * e - 0.5f * z;
  return m + y + 0.693359375f * e;
}

// log(1 + t) for t >= 0 without losing small t: log(u) t / (u - 1) with u = 1 + t rounded
// (the rounding error of u cancels, Goldberg 1991), t itself when u rounds to 1.
inline float vlog1p(float t) {
  const float u = 1.0f + t;
  const float d = u - 1.0f;
  return d == 0.0f ? t : vlog(u) * (t / d);
}

// softplus as torch computes it: x above the threshold 20.
inline float softplus(float x) { return x > 20.0f ? x : vlog1p(vexp(x)); }

inline float silu(float x) { return x * sigmoid(x); }

// Reductions keep kLanes independent partial sums (one 512-bit register of float32) so they
// vectorize without reassociating (no -ffast-math), then add the lanes. `f32xL` is a GCC / Clang
// vector type: one register with AVX-512, two with AVX2, plain code elsewhere.
constexpr int64_t kLanes = 16;
typedef float f32xL __attribute__((vector_size(kLanes * sizeof(float))));
typedef float f32xH __attribute__((vector_size(kLanes * sizeof(float) / 2)));

inline f32xL load_lanes(const float* p) {
  f32xL v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// The sum of the lanes, by halves (a tree: log2(kLanes) dependent adds, not kLanes).
inline float lane_sum(f32xL v) {
  f32xH lo, hi;
  std::memcpy(&lo, &v, sizeof(lo));
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
  const f32xH h = lo + hi;
  float s = 0.0f;
  for (int64_t j = 0; j < kLanes / 2; ++j) s += h[j];
  return s;
}

inline float lane_sum(const float* part) { return lane_sum(load_lanes(part)); }

}  // namespace ssmkit
