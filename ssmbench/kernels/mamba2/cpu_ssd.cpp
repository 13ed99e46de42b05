// Mamba-2 SSD forward on CPU as a register-blocked recurrence, float32 and float64 (built by compiled.py).
//
// Per head the SSD state matrix is a scalar times the identity, so the recurrence is
//     S_t = a_t S_{t-1} + (dt_t x_t) B_tᵀ,   y_t = S_t C_t,   a_t = exp(dt_t A_h),   S: (p, n)
// which costs 4·p·n FLOPs per step and head (0.54 GFLOP at h=8, p=n=64, L=4k), fewer than the chunked
// algorithm's GEMMs (0.84 GFLOP at Q=64), and it has no decay matrices, no segment sums and no intermediates:
// memory is the inputs and outputs only. What makes it fast is the blocking: one task owns a tile of W head-dim
// lanes (one SIMD vector: 16 floats or 8 doubles) x NB = 16 state rows, kept in 16 vector registers for the
// whole sequence, with B_t[j] and C_t[j] broadcast from memory. The decay is a scalar per step, so the tile
// holds S / P with P = a_1 ... a_t: then S_t / P_t = S_{t-1} / P_{t-1} + (dt_t x_t / P_t) B_tᵀ and
// y_t = P_t (S_t / P_t) C_t, i.e. 2 FMAs per state row and step (the update and the output, into four
// independent accumulators) instead of a multiply and 2 FMAs. When P leaves [tiny, huge] the tile is multiplied
// by P and P restarts at 1, so 1 / P never overflows; a decay that underflows to 0 zeroes the state exactly. The n/NB row blocks of one (head,
// lane block) run one after the other and accumulate into y, so no two threads write the same y element.
//
// Layouts (contiguous): x, z, y : (b, l, h, p);  dt : (b, l, h) (already dt_bias + softplus);  A : (h,);
// B, C : (b, l, g, n);  D : (h,) or (h, p) (d_per_p);  S0, final : (b, h, p, n). Head i reads group i / (h/g).
// The caller pads p to a multiple of W and n to a multiple of NB (zeros: padded lanes and rows stay 0).
// Epilogue per (head, lane block): y = (y + D x) * silu(z) when D / z are given. With a checkpoint buffer the
// forward also stores the state at the start of every chunk of Q steps, which the chunked backward (backward.py)
// starts from: the rows are in registers at that moment, so this costs one store of n x W values per chunk.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../cpu_math.h"  // fexp

namespace {

constexpr int NB = 16;  // state rows per register tile
constexpr int64_t TB = 32;  // time steps per block (see forward)
constexpr int64_t SPAN = 256;  // time steps per span (see forward)

// Bounds of the scale P of the state: 1 / P and the rescaled inputs u / P must stay far from overflow.
template <typename T>
struct Limits;
template <>
struct Limits<float> {
  static constexpr float tiny = 1e-18f, huge = 1e18f;
};
template <>
struct Limits<double> {
  static constexpr double tiny = 1e-150, huge = 1e150;
};

template <typename T>
struct Args {
  const T *x, *dt, *A, *B, *C, *D, *z, *S0;
  int d_per_p;
  int64_t b, l, h, p, g, n;
};

// One register tile (NB state rows x W lanes) over the steps [t0, t1): S holds the true state on entry and exit.
// x, y point at step 0 of this tile's lanes (stride xs per step); B, C at step 0 of its state rows (stride bs).
template <typename T, typename V>
inline void tile_steps(V* __restrict Sm, const T* __restrict dec, const T* __restrict dts, const T* __restrict xb,
                       T* __restrict yb, const T* __restrict Bb, const T* __restrict Cb, int64_t xs, int64_t bs,
                       int64_t t0, int64_t t1, bool first) {
  V S[NB];
#pragma GCC unroll 16
  for (int j = 0; j < NB; ++j) S[j] = Sm[j];
  T P = 1;  // the true state is P * S (see the file comment)
  for (int64_t t = t0; t < t1; ++t) {
    const T Pn = P * dec[t];
    if (Pn >= Limits<T>::tiny && Pn <= Limits<T>::huge) {
      P = Pn;
    } else {  // rescale before 1 / P overflows (also when the decay underflows to 0, or A > 0 grows P)
#pragma GCC unroll 16
      for (int j = 0; j < NB; ++j) S[j] *= Pn;
      P = 1;
    }
    V xv;
    std::memcpy(&xv, xb + t * xs, sizeof xv);
    const V u = xv * (dts[t] / P);
    const T* __restrict Bt = Bb + t * bs;
    const T* __restrict Ct = Cb + t * bs;
    V acc[4] = {};
#pragma GCC unroll 16
    for (int j = 0; j < NB; ++j) {
      S[j] += u * Bt[j];
      acc[j & 3] += S[j] * Ct[j];
    }
    V out = ((acc[0] + acc[1]) + (acc[2] + acc[3])) * P;
    if (!first) {
      V prev;
      std::memcpy(&prev, yb + t * xs, sizeof prev);
      out += prev;
    }
    std::memcpy(yb + t * xs, &out, sizeof out);
  }
#pragma GCC unroll 16
  for (int j = 0; j < NB; ++j) Sm[j] = S[j] * P;
}

// ckpt (optional): the state at the start of every chunk of Q steps, (b, ceil(l / Q), h, n, p), for the backward.
template <typename T>
void forward(const Args<T>& a, T* y, T* final, T* ckpt, int64_t Q, int nthreads) {
  constexpr int W = 64 / sizeof(T);  // lanes of one 512-bit vector
  typedef T V __attribute__((vector_size(64)));
  const int64_t l = a.l, h = a.h, p = a.p, n = a.n, g = a.g;
  const int64_t pblocks = p / W, tasks = a.b * h * pblocks, rpg = h / g;
  const int64_t xs = h * p, bs = g * n;  // strides of one time step in x, y, z and in B, C
  const int64_t nck = ckpt ? (l + Q - 1) / Q : 0;
  // Each thread owns a fixed range of (batch, head, lane block) tasks and walks the sequence in spans of SPAN
  // steps, running all of its tasks over one span before the next: the span's B and C rows (shared by every head
  // of a group) are then read from L2 once per thread, not once per task, and each task's n x W state waits in
  // a per-thread buffer between spans. No barrier: threads only read shared inputs and write their own rows.
  const int64_t per_thread = (tasks + nthreads - 1) / nthreads;
  const int64_t vecs = per_thread * n + (2 * SPAN + W - 1) / W;
  std::vector<T> scratch(static_cast<size_t>(nthreads * (vecs + 1) + 1) * W);
  const uintptr_t base = (reinterpret_cast<uintptr_t>(scratch.data()) + 63) & ~uintptr_t(63);
#pragma omp parallel num_threads(nthreads)
  {
    const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
    const int64_t k0 = tasks * tid / nth, k1 = tasks * (tid + 1) / nth;
    V* states = reinterpret_cast<V*>(base) + tid * (vecs + 1);
    T* __restrict dec = reinterpret_cast<T*>(states + per_thread * n);
    T* __restrict dts = dec + SPAN;
    auto where = [&](int64_t task, int64_t& bi, int64_t& hi, int64_t& p0) {
      bi = task / (h * pblocks);
      hi = (task / pblocks) % h;
      p0 = (task % pblocks) * W;
    };
    for (int64_t task = k0; task < k1; ++task) {  // initial states
      int64_t bi, hi, p0;
      where(task, bi, hi, p0);
      V* S = states + (task - k0) * n;
      for (int64_t k = 0; k < n; ++k) {
        for (int i = 0; i < W; ++i) S[k][i] = a.S0 ? a.S0[((bi * h + hi) * p + p0 + i) * n + k] : T(0);
      }
    }
    for (int64_t s0 = 0; s0 < l; s0 += SPAN) {
      const int64_t s1 = std::min(l, s0 + SPAN);
      for (int64_t task = k0; task < k1; ++task) {
        int64_t bi, hi, p0;
        where(task, bi, hi, p0);
        const int64_t gi = hi / rpg;
        const T Ah = a.A[hi];
        for (int64_t t = s0; t < s1; ++t) dts[t - s0] = a.dt[(bi * l + t) * h + hi];
#pragma omp simd
        for (int64_t t = 0; t < s1 - s0; ++t) dec[t] = fexp(dts[t] * Ah);
        const T* __restrict xb = a.x + (bi * l * h + hi) * p + p0;
        T* __restrict yb = y + (bi * l * h + hi) * p + p0;
        const T* __restrict Bb = a.B + (bi * l * g + gi) * n;
        const T* __restrict Cb = a.C + (bi * l * g + gi) * n;
        V* S = states + (task - k0) * n;
        // Time blocks of TB steps, every row block within one: the block's x, y, B, C lines stay in L1 across
        // the n / NB row blocks.
        // With checkpoints, time blocks also end at chunk boundaries, where the state (all n rows) is stored.
        for (int64_t t0 = s0, t1; t0 < s1; t0 = t1) {
          t1 = std::min(s1, t0 + TB);
          if (ckpt) {
            if (t0 % Q == 0) {
              T* __restrict ck = ckpt + ((bi * nck + t0 / Q) * h + hi) * n * p + p0;
              for (int64_t k = 0; k < n; ++k) std::memcpy(ck + k * p, S + k, sizeof(V));
            }
            t1 = std::min(t1, (t0 / Q + 1) * Q);
          }
          for (int64_t n0 = 0; n0 < n; n0 += NB) {
            tile_steps<T, V>(S + n0, dec - s0, dts - s0, xb, yb, Bb + n0, Cb + n0, xs, bs, t0, t1, n0 == 0);
          }
        }
        if (a.D || a.z) {  // epilogue: y = (y + D x) * silu(z)
          V dv = {};
          for (int i = 0; i < W; ++i) dv[i] = a.D ? a.D[a.d_per_p ? hi * p + p0 + i : hi] : T(0);
          const T* __restrict zb = a.z ? a.z + (bi * l * h + hi) * p + p0 : nullptr;
          for (int64_t t = s0; t < s1; ++t) {
            T* __restrict yt = yb + t * xs;
            const T* __restrict xt = xb + t * xs;
#pragma omp simd
            for (int i = 0; i < W; ++i) {
              T v = yt[i] + dv[i] * xt[i];
              if (zb) {
                const T zv = zb[t * xs + i];
                v = v * zv / (T(1) + fexp(-zv));
              }
              yt[i] = v;
            }
          }
        }
      }
    }
    for (int64_t task = k0; task < k1; ++task) {  // final states
      int64_t bi, hi, p0;
      where(task, bi, hi, p0);
      const V* S = states + (task - k0) * n;
      for (int64_t k = 0; k < n; ++k) {
        for (int i = 0; i < W; ++i) final[((bi * h + hi) * p + p0 + i) * n + k] = S[k][i];
      }
    }
  }
}

template <typename T>
int fwd_entry(const Args<T>& a, T* y, T* final, T* ckpt, int64_t Q, int nthreads) {
  constexpr int W = 64 / sizeof(T);
  if (a.b < 0 || a.l < 0 || a.h <= 0 || a.g <= 0 || a.h % a.g || a.p % W || a.n % NB || a.p <= 0 || a.n <= 0 ||
      nthreads <= 0 || (ckpt && Q <= 0)) {
    return 1;
  }
  try {
    forward<T>(a, y, final, ckpt, Q, nthreads);
  } catch (...) {  // std::bad_alloc for the scratch buffers
    return 3;
  }
  return 0;
}

}  // namespace

#define SSD_DEFINE(SUFFIX, T)                                                                                      \
  extern "C" int ssd_fwd_##SUFFIX(const T* x, const T* dt, const T* A, const T* B, const T* C, const T* D,         \
                                  int d_per_p, const T* z, const T* S0, int64_t b, int64_t l, int64_t h,           \
                                  int64_t p, int64_t g, int64_t n, T* y, T* final, T* ckpt, int64_t Q,             \
                                  int nthreads) {                                                                  \
    const Args<T> a{x, dt, A, B, C, D, z, S0, d_per_p, b, l, h, p, g, n};                                          \
    return fwd_entry(a, y, final, ckpt, Q, nthreads);                                                              \
  }

SSD_DEFINE(f32, float)
SSD_DEFINE(f64, double)
