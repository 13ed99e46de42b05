// Mamba-1 decode step on CPU: one token through one mixer in one call (built by step.py).
//
// in_proj -> conv step + SiLU -> x_proj -> dt_proj -> softplus(dt + bias) -> state update h = exp(dt A) h + dt x B
// -> y = <C, h> + D x -> y * SiLU(z) -> out_proj. The eager PyTorch step runs ~25 ops for this, each a dispatch of a
// few microseconds, and its batch-1 bfloat16 matmuls are slower than float32 ones on CPU; here every product is a
// matrix-vector sweep over the weights in their stored dtype.
//
// dtypes (T = weights and activations, S = state and arithmetic): double/double, float/float, bf16/float.
// bfloat16 rounds where the PyTorch step holds a bfloat16 tensor (the in_proj outputs, each conv product, sum, biased
// sum and SiLU, the x_proj and dt_proj outputs, y before out_proj, the output), so both compute the same function
// up to float32 summation order.
//
// Layouts (contiguous): hidden, out (b, dm); w_in (2 di, dm); conv_w (di, k); conv_b, dt_bias, D (di);
// w_x (r + 2n, di); w_dt (di, r); A_log (di, n); w_out (dm, di); conv_state (b, di, k), oldest input first;
// ssm_state (b, di, n). conv_state and ssm_state are updated in place.

#include <immintrin.h>
#include <omp.h>

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../cpu_math.h"

namespace {

struct bf16 {
  uint16_t bits;
};

inline float to_s(bf16 x) { return __builtin_bit_cast(float, static_cast<uint32_t>(x.bits) << 16); }
inline float to_s(float x) { return x; }
inline double to_s(double x) { return x; }

// float -> bfloat16, round to nearest even (NaN kept a NaN), as torch's .to(torch.bfloat16)
inline bf16 to_bf16(float x) {
  uint32_t u = __builtin_bit_cast(uint32_t, x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}

// The value a T tensor would hold: rounded through bfloat16 for bf16, unchanged otherwise.
template <typename T, typename S>
inline S stored(S x) {
  if constexpr (sizeof(T) == 2) {
    return to_s(to_bf16(x));
  } else {
    return x;
  }
}

template <typename T, typename S>
inline void store(T* dst, S x) {
  if constexpr (sizeof(T) == 2) {
    *dst = to_bf16(x);
  } else {
    *dst = x;
  }
}

// y (b, rows) = x (b, K) @ w (rows, K)^T, every product summed in S: the generic (float64) path.
template <typename T, typename S>
void gemv(const T* __restrict w, const S* __restrict x, S* __restrict y, int64_t b, int64_t rows, int64_t K,
          int nthreads) {
#pragma omp parallel for num_threads(nthreads) if (nthreads > 1 && rows * K >= (1 << 16))
  for (int64_t o = 0; o < rows; ++o) {
    const T* wr = w + o * K;
    for (int64_t bi = 0; bi < b; ++bi) {
      const S* xr = x + bi * K;
      S acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t i = 0; i < K; ++i) acc += to_s(wr[i]) * xr[i];
      y[bi * rows + o] = acc;
    }
  }
}

// AVX-512 matvecs for float32 and bfloat16 weights. One sum per row is a chain of dependent FMAs (latency-bound:
// ~4x slower than the loads), so 16 rows run at once, each with its own accumulator, sharing every load of x,
// and their 16 sums come out of one transposing reduction.
// The weights are read exactly once per step: at batch 1 the step is bound by streaming them from cache.
//   float32: 16 weights per FMA.
//   bfloat16: vdpbf16ps, 32 weights per instruction; x is rounded to bfloat16 first, as the PyTorch step's
//   bfloat16 tensors are, so the pairwise products are exact in float32 and only the summation order differs.
// Without AVX512-BF16 the bfloat16 weights are widened to float32 (a shift) and summed by the float32 kernel;
// without AVX-512 (BW for the 16-bit masked loads) every dtype takes the generic loop above.
#if defined(__AVX512F__) && defined(__AVX512BW__)
template <typename W>
struct Lanes;
template <>
struct Lanes<float> {
  static constexpr int64_t width = 16;
  using X = float;
  using Mask = __mmask16;
  static __m512 fma(__m512 acc, const float* w, const float* x, __mmask16 m) {
    return _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w), _mm512_maskz_loadu_ps(m, x), acc);
  }
  static __m512 fma_full(__m512 acc, const float* w, __m512 xv) { return _mm512_fmadd_ps(_mm512_loadu_ps(w), xv, acc); }
  static __m512 load_x(const float* x) { return _mm512_loadu_ps(x); }
};
template <>
struct Lanes<bf16> {
  static constexpr int64_t width = 32;
  using X = bf16;
  using Mask = __mmask32;
#if defined(__AVX512BF16__)
  static __m512 fma(__m512 acc, const bf16* w, const bf16* x, __mmask32 m) {
    return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_maskz_loadu_epi16(m, w), (__m512bh)_mm512_maskz_loadu_epi16(m, x));
  }
  static __m512 fma_full(__m512 acc, const bf16* w, __m512i xv) {
    return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(w), (__m512bh)xv);
  }
#else
  static __m512 widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
  static __m512 fma(__m512 acc, const bf16* w, const bf16* x, __mmask32 m) {
    const __m512i wv = _mm512_maskz_loadu_epi16(m, w), xv = _mm512_maskz_loadu_epi16(m, x);
    acc = _mm512_fmadd_ps(widen(_mm512_castsi512_si256(wv)), widen(_mm512_castsi512_si256(xv)), acc);
    return _mm512_fmadd_ps(widen(_mm512_extracti64x4_epi64(wv, 1)), widen(_mm512_extracti64x4_epi64(xv, 1)), acc);
  }
  static __m512 fma_full(__m512 acc, const bf16* w, __m512i xv) { return fma(acc, w, reinterpret_cast<const bf16*>(&xv), ~0u); }
#endif
  static __m512i load_x(const bf16* x) { return _mm512_loadu_si512(x); }
};

template <typename W, int R>
inline void dot_rows(const W* __restrict w, const typename Lanes<W>::X* __restrict x, float* __restrict y,
                     int64_t K) {
  using L = Lanes<W>;
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + L::width <= K; i += L::width) {
    const auto xv = L::load_x(x + i);
    for (int r = 0; r < R; ++r) acc[r] = L::fma_full(acc[r], w + r * K + i, xv);
  }
  if (i < K) {
    const auto m = static_cast<typename L::Mask>((1ull << (K - i)) - 1);
    for (int r = 0; r < R; ++r) acc[r] = L::fma(acc[r], w + r * K + i, x + i, m);
  }
  if constexpr (R == 16) {
    _mm512_storeu_ps(y, sum16_f32x16(acc));  // 16 row sums from one transposing reduction
  } else {
    for (int r = 0; r < R; ++r) y[r] = _mm512_reduce_add_ps(acc[r]);
  }
}

template <typename W>
void gemv_avx512(const W* __restrict w, const float* __restrict x, float* __restrict y, int64_t b, int64_t rows,
                 int64_t K, int nthreads) {
  constexpr int R = 16;
  // bfloat16 weights take x rounded to bfloat16 (the pairs vdpbf16ps multiplies); float32 ones read x as it is
  std::vector<bf16> x_bf16;
  const typename Lanes<W>::X* xs;
  if constexpr (sizeof(W) == 2) {
    x_bf16.resize(b * K);
    for (int64_t i = 0; i < b * K; ++i) x_bf16[i] = to_bf16(x[i]);
    xs = x_bf16.data();
  } else {
    xs = x;
  }
  const int64_t blocks = (rows + R - 1) / R;
#pragma omp parallel for num_threads(nthreads) if (nthreads > 1 && rows * K >= (1 << 16))
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t o0 = blk * R;
    float part[R];
    for (int64_t bi = 0; bi < b; ++bi) {
      const auto* xr = xs + bi * K;
      if (o0 + R <= rows) {
        dot_rows<W, R>(w + o0 * K, xr, part, K);
        for (int r = 0; r < R; ++r) y[bi * rows + o0 + r] = part[r];
      } else {
        for (int64_t o = o0; o < rows; ++o) {
          dot_rows<W, 1>(w + o * K, xr, part, K);
          y[bi * rows + o] = part[0];
        }
      }
    }
  }
}

template <>
void gemv<float, float>(const float* w, const float* x, float* y, int64_t b, int64_t rows, int64_t K, int nthreads) {
  gemv_avx512<float>(w, x, y, b, rows, K, nthreads);
}
template <>
void gemv<bf16, float>(const bf16* w, const float* x, float* y, int64_t b, int64_t rows, int64_t K, int nthreads) {
  gemv_avx512<bf16>(w, x, y, b, rows, K, nthreads);
}
#endif  // __AVX512F__ && __AVX512BW__

// h = exp(dt A) h + dt u B and y = (<C, h> + D u) * gate for every (batch, channel) row; A = -exp(A_log).
// NT > 0 is n known at compile time.
template <typename T, typename S, int NT>
void update_states(const T* A_log, const T* D, const S* dbc, const S* xc, const S* delta, const S* gate, S* ssm_state,
                   S* y, int64_t b, int64_t di, int64_t r, int64_t n_runtime, int nthreads) {
  const int64_t n = NT > 0 ? NT : n_runtime, nx = r + 2 * n;
#pragma omp parallel for num_threads(nthreads) if (nthreads > 1 && b * di * n >= (1 << 14))
  for (int64_t row = 0; row < b * di; ++row) {
    const int64_t bi = row / di, d = row % di;
    const S* __restrict Bv = dbc + bi * nx + r;
    const S* __restrict Cv = Bv + n;
    const S dt = delta[row], u = xc[row], du = dt * u;
    S* __restrict h = ssm_state + row * n;
    const T* __restrict al = A_log + d * n;
    S acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < n; ++j) {
      const S hj = fexp(-dt * fexp(to_s(al[j]))) * h[j] + du * Bv[j];
      h[j] = hj;
      acc += hj * Cv[j];
    }
    y[row] = stored<T>((acc + to_s(D[d]) * u) * gate[row]);
  }
}

#ifdef __AVX512F__
// float32 state, n = 16 (Mamba's default): one vector per row, 16 rows per block so that the 16 sums <C, h> come
// out of one transposing reduction (sum16_f32x16) instead of 16 horizontal ones; exps by exp2_f32x16.
template <typename T>
inline __m512 load16(const T* p) {
  if constexpr (sizeof(T) == 2) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(p))), 16));
  } else {
    return _mm512_loadu_ps(p);
  }
}

template <typename T>
void update_states_f32x16(const T* A_log, const T* D, const float* dbc, const float* xc, const float* delta,
                          const float* gate, float* ssm_state, float* y, int64_t b, int64_t di, int64_t r,
                          int nthreads) {
  constexpr int64_t n = 16;
  const int64_t nx = r + 2 * n, blocks = (di + 15) / 16;
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
#pragma omp parallel for collapse(2) num_threads(nthreads) if (nthreads > 1 && b * di * n >= (1 << 14))
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const __m512 Bv = _mm512_loadu_ps(dbc + bi * nx + r), Cv = _mm512_loadu_ps(dbc + bi * nx + r + n);
      const int64_t d0 = blk * 16, rows = std::min<int64_t>(16, di - d0);
      __m512 v[16];
      for (int64_t j = 0; j < 16; ++j) {
        if (j >= rows) {
          v[j] = _mm512_setzero_ps();
          continue;
        }
        const int64_t row = bi * di + d0 + j;
        const __m512 A2 = _mm512_mul_ps(exp2_f32x16(_mm512_mul_ps(load16(A_log + (d0 + j) * n), log2e)), log2e);
        const __m512 a = exp2_f32x16(_mm512_mul_ps(_mm512_set1_ps(-delta[row]), A2));  // exp(dt A), A = -exp(A_log)
        float* h = ssm_state + row * n;
        const __m512 hv = _mm512_fmadd_ps(a, _mm512_loadu_ps(h), _mm512_mul_ps(_mm512_set1_ps(delta[row] * xc[row]), Bv));
        _mm512_storeu_ps(h, hv);
        v[j] = _mm512_mul_ps(hv, Cv);
      }
      float sums[16];
      _mm512_storeu_ps(sums, sum16_f32x16(v));
      for (int64_t j = 0; j < rows; ++j) {
        const int64_t row = bi * di + d0 + j;
        y[row] = stored<T>((sums[j] + to_s(D[d0 + j]) * xc[row]) * gate[row]);
      }
    }
  }
}
#endif

template <typename T, typename S>
int step(const T* hidden, const T* w_in, const T* conv_w, const T* conv_b, const T* w_x, const T* w_dt,
         const T* dt_bias, const T* A_log, const T* D, const T* w_out, T* conv_state, S* ssm_state, T* out,
         int64_t b, int64_t dm, int64_t di, int64_t k, int64_t r, int64_t n, int nthreads) {
  if (b <= 0 || dm <= 0 || di <= 0 || k <= 0 || r <= 0 || n <= 0 || nthreads <= 0) return 1;
  const int64_t nx = r + 2 * n;
  // One scratch allocation per call for every intermediate.
  std::vector<S> work(b * (dm + 2 * di + di + nx + r + di + di + di + dm));
  S* h_in = work.data();         // (b, dm)
  S* xz = h_in + b * dm;         // (b, 2 di): x then z
  S* xc = xz + b * 2 * di;       // (b, di) conv output after SiLU
  S* dbc = xc + b * di;          // (b, r + 2n): dt (r), B (n), C (n)
  S* dt_in = dbc + b * nx;       // (b, r): the dt columns of dbc, contiguous for dt_proj
  S* delta = dt_in + b * r;      // (b, di)
  S* gate = delta + b * di;      // (b, di) SiLU(z)
  S* y = gate + b * di;          // (b, di)
  S* o = y + b * di;             // (b, dm)
  for (int64_t i = 0; i < b * dm; ++i) h_in[i] = to_s(hidden[i]);

  gemv<T, S>(w_in, h_in, xz, b, 2 * di, dm, nthreads);
  for (int64_t i = 0; i < b * 2 * di; ++i) xz[i] = stored<T>(xz[i]);

  // conv step. The windows (di, k) are contiguous, so shifting every window left by one is one memmove of the
  // whole state (each window's last slot takes the next window's oldest input, overwritten by x right after).
  // Rounded as the PyTorch step's (conv_state * weight).sum(-1) + bias, SiLU: each product, the sum, the biased
  // sum and the SiLU are T values (a no-op unless T is bfloat16).
  for (int64_t bi = 0; bi < b; ++bi) {
    T* win = conv_state + bi * di * k;
    std::memmove(win, win + 1, (di * k - 1) * sizeof(T));
    const S* xr = xz + bi * 2 * di;
    for (int64_t d = 0; d < di; ++d) store(win + d * k + k - 1, xr[d]);
    S* out_r = xc + bi * di;
#pragma omp simd
    for (int64_t d = 0; d < di; ++d) {
      S acc = 0;
      for (int64_t j = 0; j < k; ++j) acc += stored<T>(to_s(win[d * k + j]) * to_s(conv_w[d * k + j]));
      const S v = stored<T>(stored<T>(acc) + to_s(conv_b[d]));
      out_r[d] = stored<T>(v * sigmoid(v));
    }
  }

  gemv<T, S>(w_x, xc, dbc, b, nx, di, nthreads);
  for (int64_t i = 0; i < b * nx; ++i) dbc[i] = stored<T>(dbc[i]);
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t j = 0; j < r; ++j) dt_in[bi * r + j] = dbc[bi * nx + j];
  gemv<T, S>(w_dt, dt_in, delta, b, di, r, nthreads);

  // softplus(dt + bias) and SiLU(z) for every channel first: vector loops across channels, where per-channel
  // scalar calls inside the state loop cost more than the state update itself
  for (int64_t bi = 0; bi < b; ++bi) {
    S* dl = delta + bi * di;
    const S* zr = xz + bi * 2 * di + di;
    S* gr = gate + bi * di;
#pragma omp simd
    for (int64_t d = 0; d < di; ++d) {
      S sp, unused;
      softplus_grad(stored<T>(dl[d]) + to_s(dt_bias[d]), sp, unused);
      dl[d] = sp;
      gr[d] = zr[d] * sigmoid(zr[d]);
    }
  }
  bool done = false;
#ifdef __AVX512F__
  if constexpr (std::is_same_v<S, float>) {
    if (n == 16) {
      update_states_f32x16<T>(A_log, D, dbc, xc, delta, gate, ssm_state, y, b, di, r, nthreads);
      done = true;
    }
  }
#endif
  if (!done && n == 16) {
    update_states<T, S, 16>(A_log, D, dbc, xc, delta, gate, ssm_state, y, b, di, r, 16, nthreads);
  } else if (!done) {
    update_states<T, S, 0>(A_log, D, dbc, xc, delta, gate, ssm_state, y, b, di, r, n, nthreads);
  }

  gemv<T, S>(w_out, y, o, b, dm, di, nthreads);
  for (int64_t i = 0; i < b * dm; ++i) store(out + i, o[i]);
  return 0;
}

}  // namespace

// weights: the 9 parameter pointers in MambaStepWeights order; dims: b, dm, di, k, r, n. Packed into two arrays so
// that a call from Python converts 7 arguments instead of 20 (ctypes' conversion is a visible part of a 30 us step).
#define SSMBENCH_STEP(SUFFIX, T, S)                                                                                  \
  extern "C" int mamba_step_##SUFFIX(const T* hidden, const void* const* weights, T* conv_state, S* ssm_state,     \
                                     T* out, const int64_t* dims, int nthreads) {                                 \
    const T* const* w = reinterpret_cast<const T* const*>(weights);                                               \
    return step<T, S>(hidden, w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], conv_state, ssm_state, out,   \
                      dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], nthreads);                             \
  }

SSMBENCH_STEP(f64, double, double)
SSMBENCH_STEP(f32, float, float)
SSMBENCH_STEP(bf16, bf16, float)
