// The S4 DPLR generating function on CPU: four Cauchy sums and the Woodbury combination, forward and analytic
// backward, float32 and float64.
//
//     k_q(f) = sum_n w_qn / (t_f - s_f lam_n),   q < 4,  f < F,  n < N        (per channel h, complex)
//     K(f)   = k_0 - s_f k_1 k_2 / (1 + s_f k_3)
//
// Vectorised over W frequencies at a time (one 512-bit vector of real parts, one of imaginary parts) with the n-loop
// inside and the eight accumulators in registers. The reciprocal 1/d is conj(d)/|d|^2: one division per element.
// Nothing of size (N, F) is ever stored; the backward recomputes the reciprocals (PyTorch's complex convention:
// the gradient of a real loss w.r.t. z is dL/dRe z + i dL/dIm z, so a holomorphic y = g(z) passes conj(g') back):
//     dw_qn = sum_f G_q(f) conj(r),   gr = sum_q G_q(f) conj(w_qn),   gd = -gr conj(r)^2,
//     dt_f  = sum_n gd,               dlam_n = -sum_f conj(s_f) gd,   dx = Re sum_f conj(om_f) dt_f.
// t_f = om_f x with om = 1 - omega (F) and x = 1 / dt (H, real), formed in registers.
// Layouts (contiguous): planar real / imaginary arrays lam (H, N), w (H, 4, N), om (F), s (F); x (H); K and its
// gradient (H, F) complex, interleaved (re, im) as torch stores complex tensors.

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// t (H, F) = om (F) x (H) is never materialised: om = 1 - omega, x = 1 / dt.
template <typename T>
struct In {
  const T *lr, *li, *wr, *wi, *omr, *omi, *x, *sr, *si;
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

// The four sums k_q (q < 4) at frequencies [f0, f0 + W) of channel h, real and imaginary parts per lane.
template <typename T, typename V>
inline void cauchy_sums(const In<T>& a, int64_t h, int64_t f0, V* kr, V* ki) {
  const int64_t N = a.N;
  const V tr = loadv<T, V>(a.omr + f0) * a.x[h], ti = loadv<T, V>(a.omi + f0) * a.x[h];
  const V sr = loadv<T, V>(a.sr + f0), si = loadv<T, V>(a.si + f0);
  const T* lr = a.lr + h * N;
  const T* li = a.li + h * N;
  const T* wr = a.wr + h * 4 * N;
  const T* wi = a.wi + h * 4 * N;
  for (int q = 0; q < 4; ++q) kr[q] = ki[q] = V{};
  for (int64_t n = 0; n < N; ++n) {
    const V dr = tr - (sr * lr[n] - si * li[n]);
    const V di = ti - (sr * li[n] + si * lr[n]);
    const V inv = recip(dr * dr + di * di);
    const V rr = dr * inv, ri = -di * inv;
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const T cr = wr[q * N + n], ci = wi[q * N + n];
      kr[q] += rr * cr - ri * ci;
      ki[q] += ri * cr + rr * ci;
    }
  }
}

template <typename V>
inline void cmul(V ar, V ai, V br, V bi, V& r, V& i) {
  r = ar * br - ai * bi;
  i = ar * bi + ai * br;
}

template <typename V>
inline void cdiv(V ar, V ai, V br, V bi, V& r, V& i) {
  const V inv = 1 / (br * br + bi * bi);
  r = (ar * br + ai * bi) * inv;
  i = (ai * br - ar * bi) * inv;
}

// Woodbury with the pole removed: K = k0 - s k1 k2 / (1 + s k3) (dplr.py, module docstring step 3), written
// interleaved (re, im) into K (H, F) complex. The caller pads F to a multiple of W (padded lanes: t = 1, s = 0).
template <typename T>
void forward(const In<T>& a, T* K, int nthreads) {
  constexpr int W = 64 / sizeof(T);
  typedef T V __attribute__((vector_size(64)));
  const int64_t H = a.H, F = a.F, fb = F / W;
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t task = 0; task < H * fb; ++task) {
    const int64_t h = task / fb, f0 = (task % fb) * W;
    V kr[4], ki[4];
    cauchy_sums<T, V>(a, h, f0, kr, ki);
    const V sr = loadv<T, V>(a.sr + f0), si = loadv<T, V>(a.si + f0);
    V ar, ai, nr, ni, dr, di, qr, qi;
    cmul(sr, si, kr[1], ki[1], ar, ai);
    cmul(ar, ai, kr[2], ki[2], nr, ni);  // s k1 k2
    cmul(sr, si, kr[3], ki[3], dr, di);
    cdiv(nr, ni, dr + 1, di, qr, qi);
    const V outr = kr[0] - qr, outi = ki[0] - qi;
    T* out = K + 2 * (h * F + f0);
    for (int i = 0; i < W; ++i) {
      out[2 * i] = outr[i];
      out[2 * i + 1] = outi[i];
    }
  }
}

// Backward of forward(): the sums are recomputed per frequency block, the upstream gradient dK is mapped to the
// sums' gradients G_q = conj(dK/dk_q) dK (dK/dk0 = 1, dK/dk1 = -Q k2, dK/dk2 = -Q k1, dK/dk3 = Q^2 k1 k2 with
// Q = s / (1 + s k3)), then the reciprocals are recomputed once more for the per-n gradients (file comment).
template <typename T>
void backward(const In<T>& a, const T* gK, T* dwr, T* dwi, T* dlr, T* dli, T* dx, int nthreads) {
  constexpr int W = 64 / sizeof(T);
  typedef T V __attribute__((vector_size(64)));
  const int64_t H = a.H, N = a.N, F = a.F;
  // per thread: lane-wise accumulators of dw (4 complex) and dlam (1 complex) for every n, reduced at the end
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
    V gx = {};  // dL/dx = Re sum_f conj(om_f) dL/dt_f
    for (int64_t f0 = 0; f0 < F; f0 += W) {
      const V omr = loadv<T, V>(a.omr + f0), omi = loadv<T, V>(a.omi + f0);
      const V tr = omr * a.x[h], ti = omi * a.x[h];
      const V sr = loadv<T, V>(a.sr + f0), si = loadv<T, V>(a.si + f0);
      V kr[4], ki[4], gr, gi;
      cauchy_sums<T, V>(a, h, f0, kr, ki);
      const T* g = gK + 2 * (h * F + f0);
      for (int i = 0; i < W; ++i) {
        gr[i] = g[2 * i];
        gi[i] = g[2 * i + 1];
      }
      V Qr, Qi, pr_, pi_, Gr[4], Gi[4];
      cmul(sr, si, kr[3], ki[3], pr_, pi_);
      cdiv(sr, si, pr_ + 1, pi_, Qr, Qi);  // Q = s / (1 + s k3)
      V d1r, d1i, d2r, d2i, d3r, d3i, q2r, q2i, k12r, k12i;
      cmul(Qr, Qi, kr[2], ki[2], d1r, d1i);  // -dK/dk1
      cmul(Qr, Qi, kr[1], ki[1], d2r, d2i);  // -dK/dk2
      cmul(Qr, Qi, Qr, Qi, q2r, q2i);
      cmul(kr[1], ki[1], kr[2], ki[2], k12r, k12i);
      cmul(q2r, q2i, k12r, k12i, d3r, d3i);  // dK/dk3
      Gr[0] = gr;
      Gi[0] = gi;
      cmul(-d1r, d1i, gr, gi, Gr[1], Gi[1]);  // conj(-Q k2) g
      cmul(-d2r, d2i, gr, gi, Gr[2], Gi[2]);
      cmul(d3r, -d3i, gr, gi, Gr[3], Gi[3]);
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
      gx += omr * gtr + omi * gti;
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
    T sx = 0;
    for (int i = 0; i < W; ++i) sx += gx[i];
    dx[h] = sx;
  }
}

template <typename T>
bool bad(const In<T>& a, int nthreads) {
  return a.H < 0 || a.N < 0 || a.F < 0 || a.F % (64 / sizeof(T)) || nthreads <= 0;
}

}  // namespace

#define CAUCHY_DEFINE(SUFFIX, T)                                                                                   \
  extern "C" int cauchy_fwd_##SUFFIX(const T* lr, const T* li, const T* wr, const T* wi, const T* omr,             \
                                     const T* omi, const T* x, const T* sr, const T* si, int64_t H, int64_t N,     \
                                     int64_t F, T* K, int nthreads) {                                              \
    const In<T> a{lr, li, wr, wi, omr, omi, x, sr, si, H, N, F};                                                   \
    if (bad(a, nthreads)) return 1;                                                                                \
    forward(a, K, nthreads);                                                                                       \
    return 0;                                                                                                      \
  }                                                                                                                \
  extern "C" int cauchy_bwd_##SUFFIX(const T* lr, const T* li, const T* wr, const T* wi, const T* omr,             \
                                     const T* omi, const T* x, const T* sr, const T* si, int64_t H, int64_t N,     \
                                     int64_t F, const T* gK, T* dwr, T* dwi, T* dlr, T* dli, T* dx,                \
                                     int nthreads) {                                                               \
    const In<T> a{lr, li, wr, wi, omr, omi, x, sr, si, H, N, F};                                                   \
    if (bad(a, nthreads)) return 1;                                                                                \
    try {                                                                                                          \
      backward(a, gK, dwr, dwi, dlr, dli, dx, nthreads);                                                           \
    } catch (...) {                                                                                                \
      return 3;                                                                                                    \
    }                                                                                                              \
    return 0;                                                                                                      \
  }

CAUCHY_DEFINE(f32, float)
CAUCHY_DEFINE(f64, double)
