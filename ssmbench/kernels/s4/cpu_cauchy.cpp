// The S4 DPLR generating function on CPU: the four Woodbury Cauchy sums over conjugate pairs and the Woodbury
// combination, forward and analytic backward, float32 and float64.
//
// Every sum runs over both members of each conjugate pair (lam, conj(lam)) with conjugate coefficients (v, conj(v)),
// so a pair's two terms share one denominator (dplr.py, module docstring, step 4):
//
//     v/(t - s lam) + conj(v)/(t - s conj(lam)) = (a t - b s) / D,     a = 2 Re v, b = 2 Re(v conj(lam)),
//     D = t^2 - 2 rho s t + mu s^2,                                     rho = Re lam, mu = |lam|^2,
//
// hence  k_q(f) = t_f U_q(f) - s_f V_q(f)  with  U_q = sum_n a_qn R_n,  V_q = sum_n b_qn R_n,  R_n = 1 / D_n(f),
// and    K(f)   = k_0 - s k_1 k_2 / (1 + s k_3).
//
// One complex reciprocal per pair and frequency (half the reciprocals of the per-member form) and real coefficients:
// the eight accumulations are real-by-complex, 2 FMAs each. t_f = om_f x with om = 1 - omega (F) and x = 1 / dt (H)
// is formed in registers. Vectorised over W frequencies (one 512-bit vector of real parts, one of imaginary parts)
// with the pair loop inside and the sixteen accumulators in registers. Nothing of size (N, F) is ever stored; the
// backward recomputes the reciprocals. PyTorch's complex convention: the gradient of a real loss w.r.t. z is
// dL/dRe z + i dL/dIm z, so a holomorphic y = g(z) passes conj(g') back, and a real coefficient c of y = c z gets
// Re(G_y conj(z)).
// Layouts (contiguous): coef (H, N, 10) real = [a_0..a_3, b_0..b_3, rho, mu] per pair; x (H); planar real / imaginary
// om (F), s (F); K and its gradient (H, F) complex, interleaved (re, im) as torch stores complex tensors.

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int NCOEF = 10;  // a_0..a_3, b_0..b_3, rho, mu

// One 512-bit vector of T (GCC vector extension). Declared outside the templates: a vector_size attribute on a
// dependent typedef is dropped when the type is passed on as a class template argument.
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(64)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(64)));
};
template <typename T>
using Vec = typename VecOf<T>::type;

template <typename T>
struct In {
  const T *coef, *x, *omr, *omi, *sr, *si;
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

// Per-block frequency terms of channel h: t = om x, and the three products the pair denominator needs.
template <typename T>
struct Freq {
  using V = Vec<T>;
  V tr, ti, sr, si, t2r, t2i, str, sti, s2r, s2i;
};

template <typename T, typename V>
inline Freq<T> freq(const In<T>& a, int64_t h, int64_t f0) {
  Freq<T> q;
  q.tr = loadv<T, V>(a.omr + f0) * a.x[h];
  q.ti = loadv<T, V>(a.omi + f0) * a.x[h];
  q.sr = loadv<T, V>(a.sr + f0);
  q.si = loadv<T, V>(a.si + f0);
  cmul(q.tr, q.ti, q.tr, q.ti, q.t2r, q.t2i);
  cmul(q.sr, q.si, q.tr, q.ti, q.str, q.sti);
  cmul(q.sr, q.si, q.sr, q.si, q.s2r, q.s2i);
  return q;
}

// R = 1 / D for the pair with coefficients c (c[8] = rho, c[9] = mu).
template <typename T, typename V>
inline void pair_recip(const Freq<T>& q, const T* c, V& rr, V& ri) {
  const T m2rho = -2 * c[8], mu = c[9];
  const V dr = q.t2r + m2rho * q.str + mu * q.s2r;
  const V di = q.t2i + m2rho * q.sti + mu * q.s2i;
  const V inv = recip(dr * dr + di * di);
  rr = dr * inv;
  ri = -di * inv;
}

// U_q, V_q (q < 4) at frequencies [f0, f0 + W) of channel h, real and imaginary parts per lane.
template <typename T, typename V>
inline void pair_sums(const In<T>& a, const Freq<T>& q, int64_t h, V* ur, V* ui, V* vr, V* vi) {
  const T* coef = a.coef + h * a.N * NCOEF;
  for (int j = 0; j < 4; ++j) ur[j] = ui[j] = vr[j] = vi[j] = V{};
  for (int64_t n = 0; n < a.N; ++n) {
    const T* c = coef + n * NCOEF;
    V rr, ri;
    pair_recip<T, V>(q, c, rr, ri);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      ur[j] += c[j] * rr;
      ui[j] += c[j] * ri;
      vr[j] += c[4 + j] * rr;
      vi[j] += c[4 + j] * ri;
    }
  }
}

// k_j = t U_j - s V_j
template <typename T, typename V>
inline void sums_to_k(const Freq<T>& q, const V* ur, const V* ui, const V* vr, const V* vi, V* kr, V* ki) {
  for (int j = 0; j < 4; ++j) {
    V ar, ai, br, bi;
    cmul(q.tr, q.ti, ur[j], ui[j], ar, ai);
    cmul(q.sr, q.si, vr[j], vi[j], br, bi);
    kr[j] = ar - br;
    ki[j] = ai - bi;
  }
}

// Woodbury with the pole removed: K = k0 - s k1 k2 / (1 + s k3) (dplr.py, module docstring step 3), written
// interleaved (re, im) into K (H, Fo) complex. The caller pads F to a multiple of W (padded lanes: om = 1, s = 0);
// only the Fo <= F real frequencies are written, so K is the contiguous tensor the inverse FFT reads.
template <typename T>
void forward(const In<T>& a, T* K, int64_t Fo, int nthreads) {
  constexpr int W = 64 / sizeof(T);
  using V = Vec<T>;
  const int64_t H = a.H, F = a.F, fb = F / W;
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t task = 0; task < H * fb; ++task) {
    const int64_t h = task / fb, f0 = (task % fb) * W;
    const Freq<T> q = freq<T, V>(a, h, f0);
    V ur[4], ui[4], vr[4], vi[4], kr[4], ki[4];
    pair_sums<T, V>(a, q, h, ur, ui, vr, vi);
    sums_to_k(q, ur, ui, vr, vi, kr, ki);
    V ar, ai, nr, ni, dr, di, qr, qi;
    cmul(q.sr, q.si, kr[1], ki[1], ar, ai);
    cmul(ar, ai, kr[2], ki[2], nr, ni);  // s k1 k2
    cmul(q.sr, q.si, kr[3], ki[3], dr, di);
    cdiv(nr, ni, dr + 1, di, qr, qi);
    const V outr = kr[0] - qr, outi = ki[0] - qi;
    T* out = K + 2 * (h * Fo + f0);
    const int lanes = static_cast<int>(std::min<int64_t>(W, Fo - f0));
    for (int i = 0; i < lanes; ++i) {
      out[2 * i] = outr[i];
      out[2 * i + 1] = outi[i];
    }
  }
}

// Backward of forward(). Per frequency block the sums are recomputed, the upstream gradient g = dL/dK is mapped to
// the sums' gradients G_j = conj(dK/dk_j) g (dK/dk0 = 1, dK/dk1 = -Q k2, dK/dk2 = -Q k1, dK/dk3 = Q^2 k1 k2 with
// Q = s / (1 + s k3)), then to GU_j = conj(t) G_j, GV_j = -conj(s) G_j; a second pass over the pairs recomputes R:
//     da_jn += Re(GU_j conj(R)),  db_jn += Re(GV_j conj(R)),  GR = sum_j a_j GU_j + b_j GV_j,  GD = -conj(R^2) GR,
//     drho_n += -2 Re(GD conj(s t)),  dmu_n += Re(GD conj(s^2)),
//     Gt = sum_j conj(U_j) G_j + sum_n conj(2t - 2 rho_n s) GD_n,  dx = Re sum_f conj(om_f) Gt_f.
template <typename T>
void backward(const In<T>& a, const T* gK, T* dcoef, T* dx, int nthreads) {
  constexpr int W = 64 / sizeof(T);
  using V = Vec<T>;
  const int64_t H = a.H, N = a.N, F = a.F;
  // per thread: lane-wise accumulators of the NCOEF coefficient gradients of every pair, reduced at the end
  std::vector<T> storage(static_cast<size_t>(nthreads) * (NCOEF * N + 1) * W);
  const uintptr_t base = (reinterpret_cast<uintptr_t>(storage.data()) + 63) & ~uintptr_t(63);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    V* acc = reinterpret_cast<V*>(base) + omp_get_thread_num() * NCOEF * N;
    std::fill(acc, acc + NCOEF * N, V{});
    const T* coef = a.coef + h * N * NCOEF;
    V gx = {};
    for (int64_t f0 = 0; f0 < F; f0 += W) {
      const Freq<T> q = freq<T, V>(a, h, f0);
      V ur[4], ui[4], vr[4], vi[4], kr[4], ki[4], gr, gi;
      pair_sums<T, V>(a, q, h, ur, ui, vr, vi);
      sums_to_k(q, ur, ui, vr, vi, kr, ki);
      const T* g = gK + 2 * (h * F + f0);
      for (int i = 0; i < W; ++i) {
        gr[i] = g[2 * i];
        gi[i] = g[2 * i + 1];
      }
      V Qr, Qi, pr_, pi_, Gr[4], Gi[4];
      cmul(q.sr, q.si, kr[3], ki[3], pr_, pi_);
      cdiv(q.sr, q.si, pr_ + 1, pi_, Qr, Qi);  // Q = s / (1 + s k3)
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
      V gur[4], gui[4], gvr[4], gvi[4], gtr = {}, gti = {};
      for (int j = 0; j < 4; ++j) {
        cmul(q.tr, -q.ti, Gr[j], Gi[j], gur[j], gui[j]);  // conj(t) G
        cmul(-q.sr, q.si, Gr[j], Gi[j], gvr[j], gvi[j]);  // -conj(s) G
        gtr += ur[j] * Gr[j] + ui[j] * Gi[j];             // conj(U) G
        gti += ur[j] * Gi[j] - ui[j] * Gr[j];
      }
      V sdr = {}, sdi = {}, srr = {}, sri = {};  // sum_n GD_n and sum_n rho_n GD_n
      for (int64_t n = 0; n < N; ++n) {
        const T* c = coef + n * NCOEF;
        V rr, ri;
        pair_recip<T, V>(q, c, rr, ri);
        V* an = acc + NCOEF * n;
        V pr = {}, pi = {};  // GR
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
          an[j] += gur[j] * rr + gui[j] * ri;
          an[4 + j] += gvr[j] * rr + gvi[j] * ri;
          pr += c[j] * gur[j] + c[4 + j] * gvr[j];
          pi += c[j] * gui[j] + c[4 + j] * gvi[j];
        }
        const V r2r = rr * rr - ri * ri, r2i = -T(2) * rr * ri;  // conj(R)^2
        const V gdr = -(pr * r2r - pi * r2i), gdi = -(pr * r2i + pi * r2r);
        an[8] += gdr * q.str + gdi * q.sti;  // Re(GD conj(s t)), scaled by -2 at the end
        an[9] += gdr * q.s2r + gdi * q.s2i;  // Re(GD conj(s^2))
        sdr += gdr;
        sdi += gdi;
        srr += c[8] * gdr;
        sri += c[8] * gdi;
      }
      V ar, ai, br, bi;
      cmul(q.tr, -q.ti, sdr, sdi, ar, ai);  // conj(t) sum GD
      cmul(q.sr, -q.si, srr, sri, br, bi);  // conj(s) sum rho GD
      gtr += 2 * (ar - br);
      gti += 2 * (ai - bi);
      gx += loadv<T, V>(a.omr + f0) * gtr + loadv<T, V>(a.omi + f0) * gti;
    }
    auto hsum = [](const V& v) {
      T s = 0;
      for (int i = 0; i < W; ++i) s += v[i];
      return s;
    };
    for (int64_t n = 0; n < N; ++n) {
      const V* an = acc + NCOEF * n;
      T* out = dcoef + (h * N + n) * NCOEF;
      for (int j = 0; j < 9; ++j) out[j] = hsum(an[j]);
      out[8] *= -2;
      out[9] = hsum(an[9]);
    }
    dx[h] = hsum(gx);
  }
}

template <typename T>
bool bad(const In<T>& a, int nthreads) {
  return a.H < 0 || a.N < 0 || a.F < 0 || a.F % (64 / sizeof(T)) || nthreads <= 0;
}

}  // namespace

#define CAUCHY_DEFINE(SUFFIX, T)                                                                                   \
  extern "C" int cauchy_fwd_##SUFFIX(const T* coef, const T* x, const T* omr, const T* omi, const T* sr,           \
                                     const T* si, int64_t H, int64_t N, int64_t F, int64_t Fo, T* K,               \
                                     int nthreads) {                                                               \
    const In<T> a{coef, x, omr, omi, sr, si, H, N, F};                                                             \
    if (bad(a, nthreads) || Fo > F || Fo <= F - 64 / int64_t(sizeof(T))) return 1;                                 \
    forward(a, K, Fo, nthreads);                                                                                   \
    return 0;                                                                                                      \
  }                                                                                                                \
  extern "C" int cauchy_bwd_##SUFFIX(const T* coef, const T* x, const T* omr, const T* omi, const T* sr,           \
                                     const T* si, int64_t H, int64_t N, int64_t F, const T* gK, T* dcoef, T* dx,   \
                                     int nthreads) {                                                               \
    const In<T> a{coef, x, omr, omi, sr, si, H, N, F};                                                             \
    if (bad(a, nthreads)) return 1;                                                                                \
    try {                                                                                                          \
      backward(a, gK, dcoef, dx, nthreads);                                                                        \
    } catch (...) {                                                                                                \
      return 3;                                                                                                    \
    }                                                                                                              \
    return 0;                                                                                                      \
  }

CAUCHY_DEFINE(f32, float)
CAUCHY_DEFINE(f64, double)
