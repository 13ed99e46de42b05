// The four Cauchy sums of the S4 DPLR kernel on CPU, forward and analytic backward, float32 and float64.
//
//     k_q(f) = sum_n w_qn / (t_f - s_f lam_n),   q < 4,  f < F,  n < N        (per channel h, complex)
//
// Vectorised over W frequencies at a time (one 512-bit vector of real parts, one of imaginary parts) with the n-loop
// inside and the eight accumulators in registers. The reciprocal 1/d is conj(d)/|d|^2: one division per element.
// Nothing of size (N, F) is ever stored; the backward recomputes the reciprocals (PyTorch's complex convention:
// the gradient of a real loss w.r.t. z is dL/dRe z + i dL/dIm z, so a holomorphic y = g(z) passes conj(g') back):
//     dw_qn = sum_f G_q(f) conj(r),   gr = sum_q G_q(f) conj(w_qn),   gd = -gr conj(r)^2,
//     dt_f  = sum_n gd,               dlam_n = -sum_f conj(s_f) gd.
// Layouts (planar real / imaginary arrays, contiguous): lam (H, N); w (H, 4, N); t (H, F); s (F); k, G (H, 4, F).

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

template <typename T>
struct In {
  const T *lr, *li, *wr, *wi, *tr, *ti, *sr, *si;
  int64_t H, N, F;
};

// 1 / q for q > 0. float32 with AVX-512: the 14-bit hardware estimate and one Newton step (relative error ~2^-27,
// below float32 rounding) instead of a division, which would cost more than the rest of the element's work.
template <typename V>
inline V recip(V q) {
#ifdef __AVX512F__
  if constexpr (sizeof(q[0]) == 4) {
    const V x = reinterpret_cast<V>(_mm512_rcp14_ps(reinterpret_cast<__m512>(q)));
    return x * (2.0f - q * x);
  }
#endif
  return 1 / q;
}

template <typename T, typename V>
inline V loadv(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Frequencies [f0, f0 + W) of channel h; the caller pads F to a multiple of W (padded lanes read zeros, t = 1).
template <typename T>
void forward(const In<T>& a, T* kr, T* ki, int nthreads) {
  constexpr int W = 64 / sizeof(T);
  typedef T V __attribute__((vector_size(64)));
  const int64_t H = a.H, N = a.N, F = a.F, fb = F / W;
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t task = 0; task < H * fb; ++task) {
    const int64_t h = task / fb, f0 = (task % fb) * W;
    const V tr = loadv<T, V>(a.tr + h * F + f0), ti = loadv<T, V>(a.ti + h * F + f0);
    const V sr = loadv<T, V>(a.sr + f0), si = loadv<T, V>(a.si + f0);
    V accr[4] = {}, acci[4] = {};
    const T* lr = a.lr + h * N;
    const T* li = a.li + h * N;
    const T* wr = a.wr + h * 4 * N;
    const T* wi = a.wi + h * 4 * N;
    for (int64_t n = 0; n < N; ++n) {
      const V dr = tr - (sr * lr[n] - si * li[n]);
      const V di = ti - (sr * li[n] + si * lr[n]);
      const V inv = recip(dr * dr + di * di);
      const V rr = dr * inv, ri = -di * inv;
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        const T cr = wr[q * N + n], ci = wi[q * N + n];
        accr[q] += rr * cr - ri * ci;
        acci[q] += ri * cr + rr * ci;
      }
    }
    for (int q = 0; q < 4; ++q) {
      std::memcpy(kr + (h * 4 + q) * F + f0, &accr[q], sizeof(V));
      std::memcpy(ki + (h * 4 + q) * F + f0, &acci[q], sizeof(V));
    }
  }
}

template <typename T>
void backward(const In<T>& a, const T* gr_, const T* gi_, T* dwr, T* dwi, T* dlr, T* dli, T* dtr, T* dti,
              int nthreads) {
  constexpr int W = 64 / sizeof(T);
  typedef T V __attribute__((vector_size(64)));
  const int64_t H = a.H, N = a.N, F = a.F, fb = F / W;
  // per thread: lane-wise accumulators of dw (4 complex) and dlam (1 complex) for every n, reduced at the end
  std::vector<V*> bufs(nthreads);
  std::vector<T> storage(static_cast<size_t>(nthreads) * (10 * N + 1) * W);
  const uintptr_t base = (reinterpret_cast<uintptr_t>(storage.data()) + 63) & ~uintptr_t(63);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    V* acc = reinterpret_cast<V*>(base) + omp_get_thread_num() * 10 * N;  // [n][dw_r x4, dw_i x4, dl_r, dl_i]
    std::fill(acc, acc + 10 * N, V{});
    const T* lr = a.lr + h * N;
    const T* li = a.li + h * N;
    const T* wr = a.wr + h * 4 * N;
    const T* wi = a.wi + h * 4 * N;
    for (int64_t f0 = 0; f0 < F; f0 += W) {
      const V tr = loadv<T, V>(a.tr + h * F + f0), ti = loadv<T, V>(a.ti + h * F + f0);
      const V sr = loadv<T, V>(a.sr + f0), si = loadv<T, V>(a.si + f0);
      V Gr[4], Gi[4];
      for (int q = 0; q < 4; ++q) {
        Gr[q] = loadv<T, V>(gr_ + (h * 4 + q) * F + f0);
        Gi[q] = loadv<T, V>(gi_ + (h * 4 + q) * F + f0);
      }
      V gtr = {}, gti = {};
      for (int64_t n = 0; n < N; ++n) {
        const V dr = tr - (sr * lr[n] - si * li[n]);
        const V di = ti - (sr * li[n] + si * lr[n]);
        const V inv = recip(dr * dr + di * di);
        const V rr = dr * inv, ri = -di * inv;  // r = 1 / d
        V* an = acc + 10 * n;
        V pr = {}, pi = {};  // gr = sum_q G_q conj(w_q)
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) {
          const T cr = wr[q * N + n], ci = wi[q * N + n];
          pr += Gr[q] * cr + Gi[q] * ci;
          pi += Gi[q] * cr - Gr[q] * ci;
          an[q] += Gr[q] * rr + Gi[q] * ri;      // Re(G conj(r))
          an[4 + q] += Gi[q] * rr - Gr[q] * ri;  // Im(G conj(r))
        }
        const V r2r = rr * rr - ri * ri, r2i = -T(2) * rr * ri;  // conj(r)^2 = conj(r^2)
        const V gdr = -(pr * r2r - pi * r2i), gdi = -(pr * r2i + pi * r2r);
        gtr += gdr;
        gti += gdi;
        an[8] -= sr * gdr + si * gdi;  // -conj(s) gd
        an[9] -= sr * gdi - si * gdr;
      }
      std::memcpy(dtr + h * F + f0, &gtr, sizeof(V));
      std::memcpy(dti + h * F + f0, &gti, sizeof(V));
    }
    for (int64_t n = 0; n < N; ++n) {
      const V* an = acc + 10 * n;
      auto hsum = [](const V& v) {
        T s = 0;
        for (int i = 0; i < W; ++i) s += v[i];
        return s;
      };
      for (int q = 0; q < 4; ++q) {
        dwr[(h * 4 + q) * N + n] = hsum(an[q]);
        dwi[(h * 4 + q) * N + n] = hsum(an[4 + q]);
      }
      dlr[h * N + n] = hsum(an[8]);
      dli[h * N + n] = hsum(an[9]);
    }
  }
}

template <typename T>
bool bad(const In<T>& a, int nthreads) {
  return a.H < 0 || a.N < 0 || a.F < 0 || a.F % (64 / sizeof(T)) || nthreads <= 0;
}

}  // namespace

#define CAUCHY_DEFINE(SUFFIX, T)                                                                                   \
  extern "C" int cauchy_fwd_##SUFFIX(const T* lr, const T* li, const T* wr, const T* wi, const T* tr, const T* ti, \
                                     const T* sr, const T* si, int64_t H, int64_t N, int64_t F, T* kr, T* ki,      \
                                     int nthreads) {                                                               \
    const In<T> a{lr, li, wr, wi, tr, ti, sr, si, H, N, F};                                                        \
    if (bad(a, nthreads)) return 1;                                                                                \
    forward(a, kr, ki, nthreads);                                                                                  \
    return 0;                                                                                                      \
  }                                                                                                                \
  extern "C" int cauchy_bwd_##SUFFIX(const T* lr, const T* li, const T* wr, const T* wi, const T* tr, const T* ti, \
                                     const T* sr, const T* si, int64_t H, int64_t N, int64_t F, const T* gr,       \
                                     const T* gi, T* dwr, T* dwi, T* dlr, T* dli, T* dtr, T* dti, int nthreads) {  \
    const In<T> a{lr, li, wr, wi, tr, ti, sr, si, H, N, F};                                                        \
    if (bad(a, nthreads)) return 1;                                                                                \
    try {                                                                                                          \
      backward(a, gr, gi, dwr, dwi, dlr, dli, dtr, dti, nthreads);                                                 \
    } catch (...) {                                                                                                \
      return 3;                                                                                                    \
    }                                                                                                              \
    return 0;                                                                                                      \
  }

CAUCHY_DEFINE(f32, float)
CAUCHY_DEFINE(f64, double)
