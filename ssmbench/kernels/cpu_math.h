// Math shared by the C++ CPU kernels: a vectorisable scalar exp, softplus with its derivative, sigmoid, and with
// AVX-512 a 16-lane 2^y and a 16-vector horizontal sum.
//
// Included by source files under ssmbench/kernels/*/; _cpp.py hashes this header into every kernel's build name, so
// a change here rebuilds them all.

#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace {

// exp(x) by Cody-Waite range reduction x = k ln2 + r, |r| <= ln2/2, and a polynomial for exp(r) (Cephes
// expf coefficients; the Taylor series to r^13 for double). Inlined into `omp simd` loops so the compiler
// vectorises it, which libm's scalar exp would prevent; k is rounded with the 1.5 * 2^mantissa trick because
// std::floor only vectorises under -fno-trapping-math. Error about 1-2 ulp; below ln(min normal) it returns 0,
// above the clamp +inf, NaN propagates.
inline float fexp(float x) {
  const float lo = -87.33654f, hi = 88.0f;
  const float xc = x < lo ? lo : (x > hi ? hi : x);
  const float k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest via 1.5 * 2^23
  float r = xc - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float scale = __builtin_bit_cast(float, (static_cast<int32_t>(k) + 127) << 23);
  const float res = p * scale;
  return x < lo ? 0.0f : (x > hi ? INFINITY : res);
}

inline double fexp(double x) {
  const double lo = -708.0, hi = 709.0;
  const double xc = x < lo ? lo : (x > hi ? hi : x);
  const double k = (xc * 1.4426950408889634074 + 6755399441055744.0) - 6755399441055744.0;  // 1.5 * 2^52
  double r = xc - k * 6.93145751953125e-1;
  r = r - k * 1.42860682030941723212e-6;
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r * r + r + 1.0;
  const double scale = __builtin_bit_cast(double, (static_cast<int64_t>(k) + 1023) << 52);
  const double res = p * scale;
  return x < lo ? 0.0 : (x > hi ? INFINITY : res);
}

// softplus(x) and its derivative sigmoid(x), with torch's threshold (x > 20 -> x, derivative 1).
// log1p(e) for e = exp(-|x|) in (0, 1] is 2 atanh(s), s = e / (2 + e) in (0, 1/3]: a short odd series with no
// cancellation, vectorisable unlike libm's log1p.
template <typename T>
inline void softplus_grad(T x, T& sp, T& sig) {
  constexpr int terms = sizeof(T) == 4 ? 8 : 17;  // (1/9)^terms below the unit roundoff
  const T e = fexp(-std::fabs(x));
  const T s = e / (T(2) + e);
  const T s2 = s * s;
  T p = T(1) / T(2 * terms - 1);
  for (int k = terms - 2; k >= 0; --k) p = p * s2 + T(1) / T(2 * k + 1);
  const bool big = x > T(20);
  sp = big ? x : (x > T(0) ? x : T(0)) + T(2) * s * p;
  sig = big ? T(1) : (x >= T(0) ? T(1) : e) / (T(1) + e);
}

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + fexp(-x));
}

#ifdef __AVX512F__
// 2^y for 16 lanes: y = k + f, k = round(y), f in [-1/2, 1/2]; 2^f by a degree-5 near-minimax fit (relative error
// <= 1.9e-7, under 2 float32 ulp; fitted in float64 on Chebyshev and uniform nodes) and 2^k by vscalefps, which
// also saturates to 0 / inf without the range checks of fexp. y is clamped to [-200, 200] first (the NaN-propagating
// operand order) so that +-inf gives 0 / inf rather than inf - inf = NaN.
inline __m512 exp2_f32x16(__m512 y) {
  y = _mm512_min_ps(_mm512_set1_ps(200.0f), _mm512_max_ps(_mm512_set1_ps(-200.0f), y));
  const __m512 k = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(y, k);
  __m512 p = _mm512_set1_ps(0.001326472731307149f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.009671513922512531f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.05550733581185341f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24022242426872253f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6931470036506653f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, k);
}

// out[i] = sum of the 16 lanes of v[i], i < 16: a transposing butterfly (unpack ps, unpack pd, two 128-bit lane
// shuffles) of 45 instructions for 16 sums, instead of a 9-instruction tree per sum.
inline __m512 sum16_f32x16(const __m512* v) {
  __m512 s1[8], s2[4];
  for (int j = 0; j < 8; ++j) {
    s1[j] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * j], v[2 * j + 1]), _mm512_unpackhi_ps(v[2 * j], v[2 * j + 1]));
  }
  for (int j = 0; j < 4; ++j) {
    const __m512d a = _mm512_castps_pd(s1[2 * j]), b = _mm512_castps_pd(s1[2 * j + 1]);
    s2[j] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // s2[j], 128-bit chunk c: the chunk-c partial sums of v[4j .. 4j+3]; fold the four chunks into chunk j
  const __m512 t0 = _mm512_add_ps(_mm512_shuffle_f32x4(s2[0], s2[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(s2[0], s2[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 t1 = _mm512_add_ps(_mm512_shuffle_f32x4(s2[2], s2[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm512_shuffle_f32x4(s2[2], s2[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(t0, t1, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(t0, t1, _MM_SHUFFLE(3, 1, 3, 1)));
}
#endif  // __AVX512F__

}  // namespace
