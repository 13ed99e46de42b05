// Mamba-1 selective scan on CPU: forward and backward, float32 and float64 (built by compiled.py).
//
// Plain C ABI, called through ctypes: the build includes no torch headers, so a cold build takes ~5 s instead
// of the ~45 s of a torch/extension.h + pybind module (measured on the 2-core dev machine).
//
// Layouts (every array contiguous; b batch, d channels, l length, n state size, g groups of B/C):
//   u, delta, z, y, du, ddelta, dz : (b, d, l)
//   A                              : (d, n)        dA_part : (b, d, n)  (summed over b by the caller)
//   B, C, dB, dC                   : (b, g, l, n)  time-major per group, so the innermost n-loop is unit stride
//   D, bias                        : (d,)          dD_part, dbias_part : (b, d)
//   last                           : (b, d, n)     ckpt : (b, d, nck, n), the state before each K-step chunk
// Channel i reads group i / (d / g). Work is split over the b*d (batch, channel) rows; each row runs the
// recurrence sequentially over l with the n-loop innermost (one AVX-512 vector for n = 16). The caller
// zero-pads the state so that n is 4, 8, 16, 32, 64 (compile-time, state in registers) or a multiple of 16.
//
// float32 with n = 16 (Mamba's default) has its own AVX-512 forward (row_forward_f32x16): exp as 2^y with a
// degree-5 fit and vscalefps, and the per-step sums <C_t, h_t> reduced 16 steps at a time by one transposing
// butterfly; measured 2.7x faster than the generic loop at d=256, L=4k (CPU time, one thread).
//
// Backward recomputes the states of one K-step chunk at a time from the checkpoint saved by the forward
// (a (K+1) x n buffer per thread), then walks the chunk in reverse; nothing of size (b, d, l, n) is stored.
// dB and dC are sums over the channels of a group: each task (a block of rows) accumulates into private buffers
// covering only the (batch, group) slices its rows touch, reduced at the end (deterministic, no atomics).

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "../cpu_math.h"

namespace {

// Sum of p[0..W), W a power of two, as a tree of vector adds (lo half + hi half, recursively; GCC/Clang vector
// extensions). With a compile-time n the compiler fully unrolls the n-loop before vectorising it, and an
// `omp simd reduction` then becomes W dependent scalar adds (strict FP order), several times slower at n = 16.
template <typename T, int W, typename V, std::size_t... I>
inline T tree_sum_vec(V v, std::index_sequence<I...>) {
  if constexpr (W == 2) {
    return v[0] + v[1];
  } else {
    typedef T H __attribute__((vector_size(sizeof(T) * W / 2)));
    const H lo = __builtin_shufflevector(v, v, I...);
    const H hi = __builtin_shufflevector(v, v, (I + W / 2)...);
    return tree_sum_vec<T, W / 2>(lo + hi, std::make_index_sequence<W / 4>{});
  }
}

template <typename T, int W>
inline T tree_sum(const T* __restrict p) {
  typedef T V __attribute__((vector_size(sizeof(T) * W)));
  V v;
  std::memcpy(&v, p, sizeof v);
  return tree_sum_vec<T, W>(v, std::make_index_sequence<W / 2>{});
}

// Sum of the n per-state terms of one step. The caller pads the state so that n is either the compile-time NT
// or a multiple of 16 (NT = 0); p is clobbered.
template <typename T, int NT>
inline T sum_terms(T* __restrict p, int64_t n) {
  if constexpr (NT > 0) {
    return tree_sum<T, NT>(p);
  } else {
    for (int64_t k = 16; k < n; k += 16) {
      for (int q = 0; q < 16; ++q) p[q] += p[k + q];
    }
    return tree_sum<T, 16>(p);
  }
}

template <typename T>
struct Args {
  const T *u, *delta, *A, *B, *C, *D, *z, *bias;
  int softplus;
  int64_t b, d, l, n, g, K;
};

// dt[t] = softplus(delta[t] + bias) (or without softplus), dtu[t] = dt[t] * u[t], dsp[t] = d dt / d delta.
template <typename T>
void prep_row(const Args<T>& a, int64_t row, T* __restrict dt, T* __restrict dtu, T* __restrict dsp) {
  const T* __restrict dl = a.delta + row * a.l;
  const T* __restrict ul = a.u + row * a.l;
  const T bias = a.bias ? a.bias[row % a.d] : T(0);
  if (a.softplus) {
#pragma omp simd
    for (int64_t t = 0; t < a.l; ++t) {
      T sp, sig;
      softplus_grad(dl[t] + bias, sp, sig);
      dt[t] = sp;
      dtu[t] = sp * ul[t];
      if (dsp) dsp[t] = sig;
    }
  } else {
#pragma omp simd
    for (int64_t t = 0; t < a.l; ++t) {
      dt[t] = dl[t] + bias;
      dtu[t] = dt[t] * ul[t];
    }
  }
}

#ifdef __AVX512F__
// ---- float32, n = 16 forward: one AVX-512 vector per state, 16 steps per block --------------------------------------
// (exp2_f32x16 and sum16_f32x16 are in cpu_math.h)
// The recurrence of one row (float32, n = 16): h_t = exp(dt_t A) h_{t-1} + dtu_t B_t, y_t = <C_t, h_t>. Bs, Cs:
// (l, 16); ck: the state before every K-th step (or null). Leaves the last state in h_out.
inline void row_forward_f32x16(const float* Ac, const float* Bs, const float* Cs, const float* dt, const float* dtu,
                               float* yr, float* ck, int64_t l, int64_t K, float* h_out) {
  const __m512 A2 = _mm512_mul_ps(_mm512_loadu_ps(Ac), _mm512_set1_ps(1.44269504088896341f));  // A log2(e)
  __m512 h = _mm512_setzero_ps();
  int64_t until_ck = 0;  // steps until the next checkpoint
  auto step = [&](int64_t t) {
    if (ck && until_ck-- == 0) {
      _mm512_storeu_ps(ck + (t / K) * 16, h);
      until_ck = K - 1;
    }
    const __m512 a = exp2_f32x16(_mm512_mul_ps(_mm512_set1_ps(dt[t]), A2));
    h = _mm512_fmadd_ps(a, h, _mm512_mul_ps(_mm512_set1_ps(dtu[t]), _mm512_loadu_ps(Bs + t * 16)));
    return _mm512_mul_ps(h, _mm512_loadu_ps(Cs + t * 16));
  };
  int64_t t0 = 0;
  for (; t0 + 16 <= l; t0 += 16) {
    __m512 v[16];
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) v[j] = step(t0 + j);
    _mm512_storeu_ps(yr + t0, sum16_f32x16(v));
  }
  for (int64_t t = t0; t < l; ++t) yr[t] = _mm512_reduce_add_ps(step(t));
  _mm512_storeu_ps(h_out, h);
}
#endif

template <typename T, int NT>
void forward(const Args<T>& a, T* y, T* last, T* ckpt, int nthreads) {
  const int64_t n = NT > 0 ? NT : a.n, l = a.l, K = a.K;
  const int64_t cpg = a.d / a.g, nck = (l + K - 1) / K, rows = a.b * a.d;
  // dt, dtu, h, terms per thread; the stride is padded to whole cache lines plus one so threads share no line
  const int64_t line = 64 / sizeof(T), stride = ((2 * l + 2 * n + line - 1) / line + 1) * line;
  std::vector<T> scratch(static_cast<size_t>(nthreads) * stride);
#pragma omp parallel num_threads(nthreads)
  {
    T* dt = scratch.data() + omp_get_thread_num() * stride;
    T* dtu = dt + l;
    T* __restrict h = dtu + l;
    T* __restrict tbuf = h + n;
#pragma omp for schedule(dynamic, 1)  // rows are long; dynamic copes with cores shared with other processes
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t ch = row % a.d, slice = row / cpg;  // slice = batch * g + group
      const T* __restrict Ac = a.A + ch * n;
      const T* __restrict Bs = a.B + slice * l * n;
      const T* __restrict Cs = a.C + slice * l * n;
      T* __restrict yr = y + row * l;
      T* ck = ckpt ? ckpt + row * nck * n : nullptr;
      prep_row(a, row, dt, dtu, static_cast<T*>(nullptr));
#ifdef __AVX512F__
      if constexpr (std::is_same_v<T, float> && NT == 16) {
        row_forward_f32x16(Ac, Bs, Cs, dt, dtu, yr, ck, l, K, h);
      } else
#endif
      {
        std::fill(h, h + n, T(0));
        for (int64_t t0 = 0; t0 < l; t0 += K) {
          if (ck) std::memcpy(ck + (t0 / K) * n, h, n * sizeof(T));
          for (int64_t t = t0; t < std::min(l, t0 + K); ++t) {
            const T dtv = dt[t], duv = dtu[t];
            const T* __restrict Bt = Bs + t * n;
            const T* __restrict Ct = Cs + t * n;
            T local[NT > 0 ? NT : 1];
            T* __restrict terms = NT > 0 ? local : tbuf;
#pragma omp simd
            for (int64_t k = 0; k < n; ++k) {
              const T hk = fexp(dtv * Ac[k]) * h[k] + duv * Bt[k];
              h[k] = hk;
              terms[k] = hk * Ct[k];
            }
            yr[t] = sum_terms<T, NT>(terms, n);
          }
        }
      }
      if (last) std::memcpy(last + row * n, h, n * sizeof(T));
      const T Dv = a.D ? a.D[ch] : T(0);
      const T* __restrict ul = a.u + row * l;
      if (a.z) {
        const T* __restrict zl = a.z + row * l;
#pragma omp simd
        for (int64_t t = 0; t < l; ++t) yr[t] = (yr[t] + Dv * ul[t]) * zl[t] * sigmoid(zl[t]);
      } else if (a.D) {
#pragma omp simd
        for (int64_t t = 0; t < l; ++t) yr[t] += Dv * ul[t];
      }
    }
  }
}

template <typename T, int NT>
void backward(const Args<T>& a, const T* ckpt, const T* dout, const T* dlast, T* du, T* ddelta, T* dA_part, T* dB,
              T* dC, T* dD_part, T* dz, T* dbias_part, int nthreads) {
  const int64_t n = NT > 0 ? NT : a.n, l = a.l, K = a.K;
  const int64_t cpg = a.d / a.g, nck = (l + K - 1) / K, rows = a.b * a.d, slices = a.b * a.g;
  // Tasks are contiguous blocks of rows, so a task's rows touch slices s0..s1 only and its private dB/dC buffers
  // cover just those (all buffers together: at most tasks + b*g slices). Four tasks per thread, handed out
  // dynamically, keep the threads busy when a core is shared. Everything is allocated here, outside the parallel
  // region, so an allocation failure surfaces as an exception in the caller instead of terminating inside OpenMP.
  const int tasks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(rows, 4 * int64_t(nthreads))));
  const int64_t scratch_len = (a.softplus ? 3 : 2) * l + (2 * K + 6) * n;  // dt, dtu, [dsp], h, a, dh, dA, 3 terms
  std::vector<int64_t> r0(tasks), r1(tasks), s0(tasks), s1(tasks);
  std::vector<std::vector<T>> pB(tasks), pC(tasks), scratch(tasks);
  for (int k = 0; k < tasks; ++k) {
    r0[k] = rows * k / tasks;
    r1[k] = rows * (k + 1) / tasks;
    s0[k] = r0[k] / cpg;
    s1[k] = r1[k] > r0[k] ? (r1[k] - 1) / cpg : s0[k] - 1;
    pB[k].assign((s1[k] - s0[k] + 1) * l * n, T(0));
    pC[k].assign((s1[k] - s0[k] + 1) * l * n, T(0));
    scratch[k].resize(scratch_len);
  }
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
  for (int task = 0; task < tasks; ++task) {
    T* dt = scratch[task].data();
    T* dtu = dt + l;
    T* dsp = a.softplus ? dtu + l : nullptr;
    T* __restrict hb = dtu + (a.softplus ? 2 : 1) * l;  // (K + 1) x n states of one chunk
    T* __restrict ab = hb + (K + 1) * n;                // K x n decays exp(dt * A)
    T* __restrict dh = ab + K * n;
    T* __restrict dAacc = dh + n;
    T* __restrict tbuf = dAacc + n;  // generic-n term buffers: y, dL/d(dt u), dL/d(dt A)
    for (int64_t row = r0[task]; row < r1[task]; ++row) {
      const int64_t ch = row % a.d, slice = row / cpg;
      const T* __restrict Ac = a.A + ch * n;
      const T* __restrict Bs = a.B + slice * l * n;
      const T* __restrict Cs = a.C + slice * l * n;
      T* __restrict dBs = pB[task].data() + (slice - s0[task]) * l * n;
      T* __restrict dCs = pC[task].data() + (slice - s0[task]) * l * n;
      const T* __restrict ul = a.u + row * l;
      const T* __restrict zl = a.z ? a.z + row * l : nullptr;
      const T* __restrict go = dout + row * l;
      const T Dv = a.D ? a.D[ch] : T(0);
      prep_row(a, row, dt, dtu, dsp);
      if (dlast) {
        std::memcpy(dh, dlast + row * n, n * sizeof(T));
      } else {
        std::fill(dh, dh + n, T(0));
      }
      std::fill(dAacc, dAacc + n, T(0));
      T dDacc = 0, dbacc = 0;
      for (int64_t c = nck - 1; c >= 0; --c) {
        const int64_t t0 = c * K, t1 = std::min(l, t0 + K);
        std::memcpy(hb, ckpt + (row * nck + c) * n, n * sizeof(T));
        for (int64_t t = t0; t < t1; ++t) {  // recompute this chunk's states h_{t0-1..t1-1} and decays
          const int64_t j = t - t0;
          const T dtv = dt[t], duv = dtu[t];
          const T* __restrict Bt = Bs + t * n;
#pragma omp simd
          for (int64_t k = 0; k < n; ++k) {
            const T ak = fexp(dtv * Ac[k]);
            ab[j * n + k] = ak;
            hb[(j + 1) * n + k] = ak * hb[j * n + k] + duv * Bt[k];
          }
        }
        for (int64_t t = t1 - 1; t >= t0; --t) {
          const int64_t j = t - t0;
          const T* __restrict hc = hb + (j + 1) * n;  // h_t
          const T* __restrict hp = hb + j * n;        // h_{t-1}
          const T* __restrict at = ab + j * n;
          const T* __restrict Bt = Bs + t * n;
          const T* __restrict Ct = Cs + t * n;
          T* __restrict dBt = dBs + t * n;
          T* __restrict dCt = dCs + t * n;
          T dyv = go[t];
          if (zl) {  // out = y * silu(z): recompute the pre-gate y_t = <C_t, h_t> + D u_t
            T local[NT > 0 ? NT : 1];
            T* __restrict terms = NT > 0 ? local : tbuf;
#pragma omp simd
            for (int64_t k = 0; k < n; ++k) terms[k] = Ct[k] * hc[k];
            const T ypre = sum_terms<T, NT>(terms, n) + Dv * ul[t];
            const T zv = zl[t], sz = sigmoid(zv);
            dz[row * l + t] = dyv * ypre * sz * (T(1) + zv * (T(1) - sz));
            dyv *= zv * sz;
          }
          dDacc += dyv * ul[t];
          const T dtv = dt[t], duv = dtu[t];
          T local_b[NT > 0 ? NT : 1], local_a[NT > 0 ? NT : 1];
          T* __restrict tb = NT > 0 ? local_b : tbuf + n;  // terms of sum_k dL/dh_tk B_tk
          T* __restrict ta = NT > 0 ? local_a : tbuf + 2 * n;  // terms of sum_k dL/d(dt A_k) A_k
#pragma omp simd
          for (int64_t k = 0; k < n; ++k) {
            const T g = dh[k] + dyv * Ct[k];  // dL/dh_t
            dCt[k] += dyv * hc[k];
            dBt[k] += g * duv;
            tb[k] = g * Bt[k];
            const T gl = g * hp[k] * at[k];  // dL/d(dt * A) through a_t = exp(dt * A)
            dAacc[k] += gl * dtv;
            ta[k] = gl * Ac[k];
            dh[k] = g * at[k];  // carried to h_{t-1}
          }
          const T s_b = sum_terms<T, NT>(tb, n), s_a = sum_terms<T, NT>(ta, n);
          du[row * l + t] = dyv * Dv + s_b * dtv;
          const T gdt = s_b * ul[t] + s_a;
          const T gdelta = dsp ? gdt * dsp[t] : gdt;
          ddelta[row * l + t] = gdelta;
          dbacc += gdelta;
        }
      }
      std::memcpy(dA_part + row * n, dAacc, n * sizeof(T));
      if (dD_part) dD_part[row] = dDacc;
      if (dbias_part) dbias_part[row] = dbacc;
    }
  }
  // reduce the private dB/dC buffers, one (slice, t) row of n values at a time
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t r = 0; r < slices * l; ++r) {
    const int64_t s = r / l, t = r % l;
    T* __restrict ob = dB + r * n;
    T* __restrict oc = dC + r * n;
    std::fill(ob, ob + n, T(0));
    std::fill(oc, oc + n, T(0));
    for (int k = 0; k < tasks; ++k) {
      if (s < s0[k] || s > s1[k]) continue;
      const T* __restrict pb = pB[k].data() + ((s - s0[k]) * l + t) * n;
      const T* __restrict pc = pC[k].data() + ((s - s0[k]) * l + t) * n;
#pragma omp simd
      for (int64_t q = 0; q < n; ++q) {
        ob[q] += pb[q];
        oc[q] += pc[q];
      }
    }
  }
}

// Compile-time n for the common state sizes keeps the state in registers; 0 = any multiple of 16.
template <typename T, typename F>
void dispatch_n(int64_t n, F&& f) {
  switch (n) {
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    default: f(std::integral_constant<int, 0>{}); break;
  }
}

template <typename T>
bool bad_args(const Args<T>& a, int nthreads) {
  const bool specialised = a.n == 4 || a.n == 8 || a.n == 16 || a.n == 32 || a.n == 64;
  return a.b < 0 || a.d <= 0 || a.l < 0 || a.n <= 0 || a.g <= 0 || a.d % a.g || a.K <= 0 || nthreads <= 0 ||
         (!specialised && a.n % 16);
}

template <typename T>
int fwd_entry(const Args<T>& a, T* y, T* last, T* ckpt, int nthreads) {
  if (bad_args(a, nthreads)) return 1;
  try {
    dispatch_n<T>(a.n, [&](auto nt) { forward<T, decltype(nt)::value>(a, y, last, ckpt, nthreads); });
  } catch (...) {  // std::bad_alloc for the scratch buffers
    return 3;
  }
  return 0;
}

template <typename T>
int bwd_entry(const Args<T>& a, const T* ckpt, const T* dout, const T* dlast, T* du, T* ddelta, T* dA_part, T* dB,
              T* dC, T* dD_part, T* dz, T* dbias_part, int nthreads) {
  if (bad_args(a, nthreads)) return 1;
  if (a.z && !dz) return 2;
  try {
    dispatch_n<T>(a.n, [&](auto nt) {
      backward<T, decltype(nt)::value>(a, ckpt, dout, dlast, du, ddelta, dA_part, dB, dC, dD_part, dz, dbias_part,
                                       nthreads);
    });
  } catch (...) {  // std::bad_alloc for the scratch buffers
    return 3;
  }
  return 0;
}

}  // namespace

#define SSM_DEFINE(SUFFIX, T)                                                                                      \
  extern "C" int ssm_scan_fwd_##SUFFIX(const T* u, const T* delta, const T* A, const T* B, const T* C, const T* D, \
                                       const T* z, const T* bias, int softplus, int64_t b, int64_t d, int64_t l,   \
                                       int64_t n, int64_t g, int64_t K, T* y, T* last, T* ckpt, int nthreads) {    \
    const Args<T> a{u, delta, A, B, C, D, z, bias, softplus, b, d, l, n, g, K};                                    \
    return fwd_entry(a, y, last, ckpt, nthreads);                                                                  \
  }                                                                                                                \
  extern "C" int ssm_scan_bwd_##SUFFIX(const T* u, const T* delta, const T* A, const T* B, const T* C, const T* D, \
                                       const T* z, const T* bias, int softplus, int64_t b, int64_t d, int64_t l,   \
                                       int64_t n, int64_t g, int64_t K, const T* ckpt, const T* dout,              \
                                       const T* dlast, T* du, T* ddelta, T* dA_part, T* dB, T* dC, T* dD_part,     \
                                       T* dz, T* dbias_part, int nthreads) {                                       \
    const Args<T> a{u, delta, A, B, C, D, z, bias, softplus, b, d, l, n, g, K};                                    \
    return bwd_entry(a, ckpt, dout, dlast, du, ddelta, dA_part, dB, dC, dD_part, dz, dbias_part, nthreads);        \
  }

SSM_DEFINE(f32, float)
SSM_DEFINE(f64, double)

// Throughput probe used by the benchmark notes: sum of fexp over a buffer (elements/s of the vectorised exp).
extern "C" double ssm_exp_sum_f32(const float* x, int64_t m, int nthreads) {
  double total = 0;
#pragma omp parallel for num_threads(nthreads) reduction(+ : total) schedule(static)
  for (int64_t i0 = 0; i0 < m; i0 += 4096) {
    const int64_t i1 = std::min(m, i0 + 4096);
    float acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = i0; i < i1; ++i) acc += fexp(x[i]);
    total += acc;
  }
  return total;
}
