// CPU kernels for the time loops of the LSTM and the GRU, called from JAX through the XLA FFI (gated/native/__init__.py,
// beside this file, builds, loads and calls them).
//
// XLA:CPU runs a scan as a loop of separate kernels: per step one small matmul plus four to eight launches around it
// (the elementwise fusion, dynamic slices and updates, the counter). These kernels run the whole loop in C++: each
// step is a register-blocked AVX2/FMA matmul fused with the gate arithmetic. The examples of a batch never interact,
// so the batch is split between threads (groups of 4 rows), each running every step on its rows: no barrier, and
// nothing one thread writes is read by another.
//
// Everything is float32, row-major. The LSTM (gates i, f, g, o):
//   forward:  xs (T, B, D), h0 and c0 (B, H), wp (H/8, D+H, 32), bp (H/8, 32), mask (T, B) -> hs, cs (T, B, H): the
//             carries after every step, and, unless its shape is empty, every step's activated gates [i, f, g, o]
//             (T, B, 4H). Panel n of wp holds the columns of [W_x; W_h] for hidden units 8n..8n+7 of the gates i, f,
//             g, o, 8 columns each; bp likewise.
//   backward: one chunk of steps, walked from the last: wq (H/16, 4H, 16) = W_h^T in panels of 16 output units,
//             dh and dc (B, H), dys, cs (c_t), cps (c_{t-1}) (T, B, H), acts (T, B, 4H), mask (T, B) -> dh0, dc0
//             (B, H) and every step's pre-activation gradient (T, B, 4H).
// The GRU's layouts are given above its kernels. The JAX transcription of the same gate arithmetic is
// gated/fused.py's lstm_block/lstm_gates and gru_gates (the native path recomputes a chunk's gates with them under
// remat); tests/test_native.py checks these kernels against gated.run's reference path.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

inline __m256 Exp(__m256 x) {  // Cephes expf: 2^n e^r, r in [-ln2/2, ln2/2]; relative error about 2e-7.
  // Clamped to the float range; min/max return their second operand when one is NaN, so a NaN stays NaN (a
  // diverged run must show as one).
  x = _mm256_min_ps(_mm256_set1_ps(88.3f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

inline __m256 Sigmoid(__m256 x) {  // 1 / (1 + e^-x): an approximate reciprocal and one Newton step (cheaper than div)
  const __m256 d = _mm256_add_ps(_mm256_set1_ps(1.f), Exp(_mm256_sub_ps(_mm256_setzero_ps(), x)));
  const __m256 r = _mm256_rcp_ps(d);
  return _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.f)));
}

inline __m256 Tanh(__m256 x) {  // 2 sigmoid(2x) - 1
  return _mm256_fmsub_ps(Sigmoid(_mm256_add_ps(x, x)), _mm256_set1_ps(2.f), _mm256_set1_ps(1.f));
}

// C[0:4, 0:8 NV] = start + A[0:4, 0:K] @ P[0:K, 0:8 NV]: start is C itself (accumulate), else init (8 NV floats)
// or zero. A has row stride lda, P row stride ldp, C row stride ldc. The loops over rows and registers are unrolled,
// so the 4 NV accumulators stay in registers.
template <int NV>
inline void Tile(const float* a, int64_t lda, int64_t k_len, const float* p, int64_t ldp, bool accumulate,
                 const float* init, float* c, int64_t ldc) {
  __m256 acc[4][NV];
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[r][v] = accumulate ? _mm256_loadu_ps(c + r * ldc + 8 * v)
                             : (init ? _mm256_loadu_ps(init + 8 * v) : _mm256_setzero_ps());
  for (int64_t k = 0; k < k_len; ++k) {
    __m256 w[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) w[v] = _mm256_loadu_ps(p + k * ldp + 8 * v);
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      const __m256 s = _mm256_broadcast_ss(a + r * lda + k);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(s, w[v], acc[r][v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm256_storeu_ps(c + r * ldc + 8 * v, acc[r][v]);
}

// C (rows x 8 NV, row stride ldc) = [C if accumulate, else init or 0] + A (rows x K) @ P (K x 8 NV, row stride ldp).
// Four rows at a time (the last 1 to 3 through zero-padded copies); K in blocks of 128 so that a block of the panel
// stays in L1 across the rows.
template <int NV>
void Gemm(int64_t rows, const float* a, int64_t lda, int64_t k_len, const float* p, int64_t ldp, bool accumulate,
          const float* init, float* c, int64_t ldc) {
  constexpr int64_t kBlock = 128, kWidth = 8 * NV;
  const int64_t full = rows / 4 * 4, rest = rows - full;
  for (int64_t k0 = 0; k0 < k_len; k0 += kBlock) {
    const int64_t kn = std::min(kBlock, k_len - k0);
    const bool acc = accumulate || k0 > 0;
    for (int64_t r = 0; r < full; r += 4)
      Tile<NV>(a + r * lda + k0, lda, kn, p + k0 * ldp, ldp, acc, init, c + r * ldc, ldc);
    if (rest) {
      float a_pad[4 * kBlock] = {}, c_pad[4 * kWidth] = {};
      for (int64_t r = 0; r < rest; ++r) {
        std::copy_n(a + (full + r) * lda + k0, kn, a_pad + r * kBlock);
        std::copy_n(c + (full + r) * ldc, kWidth, c_pad + r * kWidth);
      }
      Tile<NV>(a_pad, kBlock, kn, p + k0 * ldp, ldp, acc, init, c_pad, kWidth);
      for (int64_t r = 0; r < rest; ++r) std::copy_n(c_pad + r * kWidth, kWidth, c + (full + r) * ldc);
    }
  }
}

// Runs fn(first_row, end_row) on up to `threads` threads (the caller is one), the batch split in groups of 4 rows.
// The examples of a batch never interact, so each thread runs the whole time loop on its rows: no barrier, and
// nothing written by one thread is read by another.
// Four gate vectors of 8 units to their places in a row of every step's [4H] gates, H apart.
inline void StoreGates(float* at, int64_t H, __m256 a, __m256 b, __m256 c, __m256 d) {
  _mm256_storeu_ps(at, a), _mm256_storeu_ps(at + H, b), _mm256_storeu_ps(at + 2 * H, c);
  _mm256_storeu_ps(at + 3 * H, d);
}

template <typename F>
void ForRows(int64_t threads, int64_t rows, F fn) {
  const int64_t groups = (rows + 3) / 4, n = std::max<int64_t>(1, std::min(threads, groups));
  auto range = [&](int64_t t) { return std::make_pair(std::min(rows, 4 * (groups * t / n)), std::min(rows, 4 * (groups * (t + 1) / n))); };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < n; ++t) pool.emplace_back([&, t] { auto [a, b] = range(t); fn(a, b); });
  auto [a, b] = range(0);
  fn(a, b);
  for (auto& th : pool) th.join();
}

// The backward passes' walk through time: for t from T - 1 down, unit(t B + b, b H + u, u, m, 1 - m, d) for every
// row b and block of 8 units u (m the step's mask, d where the block's pre-activation gradients go in the step's
// row of dp, (T, B, G)), then dh_{t-1} += dp_t[:, :K] @ W_h^T, 16 output units at a time (w: W_h^T in panels of 16,
// (H/16, K, 16)). unit leaves in dh what reaches h_{t-1} other than through the matmul.
template <typename Unit>
void BackwardThroughTime(int64_t threads, int64_t T, int64_t B, int64_t H, int64_t G, int64_t K, const float* m,
                         const float* w, float* dh, float* dp, Unit unit) {
  ForRows(threads, B, [&](int64_t first, int64_t end) {
    const int64_t rows = end - first;
    for (int64_t t = T - 1; t >= 0; --t) {
      float* dpre = dp + (t * B + first) * G;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t b = first + r;
        const float mt = m[t * B + b];
        const __m256 mv = _mm256_set1_ps(mt), rest = _mm256_set1_ps(1.f - mt);
        for (int64_t u = 0; u < H; u += 8) unit(t * B + b, b * H + u, u, mv, rest, dpre + r * G + u);
      }
      for (int64_t ob = 0; ob < H / 16; ++ob)
        Gemm<2>(rows, dpre, G, K, w + ob * K * 16, 16, true, nullptr, dh + first * H + 16 * ob, H);
    }
  });
}

ffi::Error LstmForwardImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0,
                           ffi::Buffer<ffi::F32> wp, ffi::Buffer<ffi::F32> bp, ffi::Buffer<ffi::F32> mask,
                           ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> cs,
                           ffi::ResultBuffer<ffi::F32> acts, int64_t threads) {
  auto xd = xs.dimensions(), hd = h0.dimensions(), wd = wp.dimensions();
  if (xd.size() != 3 || hd.size() != 2 || wd.size() != 3) return ffi::Error::InvalidArgument("lstm_forward: ranks");
  const int64_t T = xd[0], B = xd[1], D = xd[2], H = hd[1], K = D + H, NB = H / 8;
  if (hd[0] != B || H % 16 != 0 || wd[0] != NB || wd[1] != K || wd[2] != 32)
    return ffi::Error::InvalidArgument("lstm_forward: shapes");
  const float *x = xs.typed_data(), *h_init = h0.typed_data(), *c_init = c0.typed_data();
  const float *w = wp.typed_data(), *bias = bp.typed_data(), *m = mask.typed_data();
  float *h_out = hs->typed_data(), *c_out = cs->typed_data();
  float* a_out = acts->element_count() ? acts->typed_data() : nullptr;  // empty: the gates are not kept
  ForRows(threads, B, [&](int64_t first, int64_t end) {
    const int64_t rows = end - first;
    std::vector<float> gates(rows * 32);
    for (int64_t t = 0; t < T; ++t) {
      const float* h_prev = (t ? h_out + (t - 1) * B * H : h_init) + first * H;
      const float* c_prev = (t ? c_out + (t - 1) * B * H : c_init) + first * H;
      float* h_new = h_out + t * B * H + first * H;
      float* c_new = c_out + t * B * H + first * H;
      float* a_new = a_out ? a_out + (t * B + first) * 4 * H : nullptr;
      const float* x_t = x + (t * B + first) * D;
      for (int64_t nb = 0; nb < NB; ++nb) {
        const float* panel = w + nb * K * 32;
        for (int half = 0; half < 2; ++half) {
          float* z = gates.data() + 16 * half;
          Gemm<2>(rows, x_t, D, D, panel + 16 * half, 32, false, bias + nb * 32 + 16 * half, z, 32);
          Gemm<2>(rows, h_prev, H, H, panel + D * 32 + 16 * half, 32, true, nullptr, z, 32);
        }
        for (int64_t r = 0; r < rows; ++r) {
          const float* z = gates.data() + r * 32;
          const int64_t u = r * H + nb * 8;
          __m256 i = Sigmoid(_mm256_loadu_ps(z)), f = Sigmoid(_mm256_loadu_ps(z + 8));
          __m256 g = Tanh(_mm256_loadu_ps(z + 16)), o = Sigmoid(_mm256_loadu_ps(z + 24));
          __m256 cp = _mm256_loadu_ps(c_prev + u), hp = _mm256_loadu_ps(h_prev + u);
          __m256 c = _mm256_fmadd_ps(f, cp, _mm256_mul_ps(i, g));
          __m256 h = _mm256_mul_ps(o, Tanh(c));
          __m256 keep = _mm256_cmp_ps(_mm256_broadcast_ss(m + t * B + first + r), _mm256_setzero_ps(), _CMP_GT_OQ);
          _mm256_storeu_ps(c_new + u, _mm256_blendv_ps(cp, c, keep));
          _mm256_storeu_ps(h_new + u, _mm256_blendv_ps(hp, h, keep));
          if (a_new) StoreGates(a_new + r * 4 * H + nb * 8, H, i, f, g, o);
        }
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error LstmBackwardImpl(ffi::Buffer<ffi::F32> wq, ffi::Buffer<ffi::F32> dh_last, ffi::Buffer<ffi::F32> dc_last,
                            ffi::Buffer<ffi::F32> dys, ffi::Buffer<ffi::F32> acts, ffi::Buffer<ffi::F32> cs,
                            ffi::Buffer<ffi::F32> cps, ffi::Buffer<ffi::F32> mask, ffi::ResultBuffer<ffi::F32> dh0,
                            ffi::ResultBuffer<ffi::F32> dc0, ffi::ResultBuffer<ffi::F32> dpres, int64_t threads) {
  auto yd = dys.dimensions(), wd = wq.dimensions();
  if (yd.size() != 3 || wd.size() != 3) return ffi::Error::InvalidArgument("lstm_backward: ranks");
  const int64_t T = yd[0], B = yd[1], H = yd[2], G = 4 * H, K = G;
  if (H % 16 != 0 || wd[0] != H / 16 || wd[1] != G || wd[2] != 16)
    return ffi::Error::InvalidArgument("lstm_backward: shapes");
  const float *w = wq.typed_data(), *dy = dys.typed_data(), *ac = acts.typed_data(), *cc = cs.typed_data();
  const float *cp = cps.typed_data(), *m = mask.typed_data();
  float *dh = dh0->typed_data(), *dc = dc0->typed_data(), *dp = dpres->typed_data();
  std::copy_n(dh_last.typed_data(), B * H, dh);
  std::copy_n(dc_last.typed_data(), B * H, dc);
  const __m256 one = _mm256_set1_ps(1.f);
  BackwardThroughTime(threads, T, B, H, G, K, m, w, dh, dp,
                      [&](int64_t tb, int64_t j, int64_t u, __m256 mv, __m256 rest, float* d) {
    const int64_t s = tb * H + u;
    const float* a = ac + tb * G + u;
    const __m256 i = _mm256_loadu_ps(a), f = _mm256_loadu_ps(a + H), g = _mm256_loadu_ps(a + 2 * H);
    const __m256 o = _mm256_loadu_ps(a + 3 * H), tc = Tanh(_mm256_loadu_ps(cc + s));
    const __m256 dh_old = _mm256_loadu_ps(dh + j), dc_old = _mm256_loadu_ps(dc + j);
    // dh_t (total) and dc_t (total): what reaches the step's outputs, through the carry and through y_t.
    const __m256 dhn = _mm256_mul_ps(mv, _mm256_add_ps(dh_old, _mm256_loadu_ps(dy + s)));
    const __m256 dcn = _mm256_fmadd_ps(_mm256_mul_ps(dhn, o), _mm256_fnmadd_ps(tc, tc, one), _mm256_mul_ps(mv, dc_old));
    // pre-activation gradients: sigmoid' = a (1 - a), tanh' = 1 - a^2.
    _mm256_storeu_ps(d, _mm256_mul_ps(_mm256_mul_ps(dcn, g), _mm256_fnmadd_ps(i, i, i)));
    _mm256_storeu_ps(d + H, _mm256_mul_ps(_mm256_mul_ps(dcn, _mm256_loadu_ps(cp + s)), _mm256_fnmadd_ps(f, f, f)));
    _mm256_storeu_ps(d + 2 * H, _mm256_mul_ps(_mm256_mul_ps(dcn, i), _mm256_fnmadd_ps(g, g, one)));
    _mm256_storeu_ps(d + 3 * H, _mm256_mul_ps(_mm256_mul_ps(dhn, tc), _mm256_fnmadd_ps(o, o, o)));
    _mm256_storeu_ps(dc + j, _mm256_fmadd_ps(dcn, f, _mm256_mul_ps(rest, dc_old)));
    _mm256_storeu_ps(dh + j, _mm256_mul_ps(rest, dh_old));  // what a padded step passes on; the matmul adds
  });
  return ffi::Error::Success();
}

// GRU, reset="after": r = sigmoid(x W_xr + h W_hr + b_r), z likewise, hn = h W_hn + b_hn,
// n = tanh(x W_xn + b_n + r hn), h' = n + keep (h - n) with keep = z ("keep") or 1 - z ("write").
//   forward:  xs (T, B, D), h0 (B, H), wxp (H/8, D, 24), whp (H/8, H, 24), bp (H/8, 48), mask (T, B)
//             -> hs (T, B, H) and, unless empty, every step's [r, z, n, hn] (T, B, 4H). Panel n of wxp holds the
//             columns of W_x for hidden units 8n..8n+7 of r, z, n, 8 each; whp likewise for W_h; bp row n holds
//             [b_r, b_z, b_n] and [0, 0, b_hn] for those units.
//   backward: wq (H/16, 3H, 16) = W_h^T in panels of 16 output units, dh (B, H), dys, hps (h_{t-1}) (T, B, H),
//             gates (T, B, 4H), mask (T, B) -> dh0 (B, H) and every step's [d_r, d_z, d_hn, d_n] (T, B, 4H): the
//             gradients of the pre-activations of r and z, of hn, and of the candidate's input side.
ffi::Error GruForwardImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> wxp,
                          ffi::Buffer<ffi::F32> whp, ffi::Buffer<ffi::F32> bp, ffi::Buffer<ffi::F32> mask,
                          ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> gates, int64_t threads,
                          bool keep_z) {
  auto xd = xs.dimensions(), hd = h0.dimensions(), wxd = wxp.dimensions(), whd = whp.dimensions();
  if (xd.size() != 3 || hd.size() != 2 || wxd.size() != 3 || whd.size() != 3)
    return ffi::Error::InvalidArgument("gru_forward: ranks");
  const int64_t T = xd[0], B = xd[1], D = xd[2], H = hd[1], NB = H / 8;
  if (hd[0] != B || H % 16 != 0 || wxd[0] != NB || wxd[1] != D || wxd[2] != 24 || whd[0] != NB || whd[1] != H ||
      whd[2] != 24)
    return ffi::Error::InvalidArgument("gru_forward: shapes");
  const float *x = xs.typed_data(), *h_init = h0.typed_data(), *wx = wxp.typed_data(), *wh = whp.typed_data();
  const float *bias = bp.typed_data(), *m = mask.typed_data();
  float* h_out = hs->typed_data();
  float* g_out = gates->element_count() ? gates->typed_data() : nullptr;
  const __m256 one = _mm256_set1_ps(1.f);
  ForRows(threads, B, [&](int64_t first, int64_t end) {
    const int64_t rows = end - first;
    std::vector<float> cx(rows * 24), ch(rows * 24);
    for (int64_t t = 0; t < T; ++t) {
      const float* h_prev = (t ? h_out + (t - 1) * B * H : h_init) + first * H;
      float* h_new = h_out + t * B * H + first * H;
      float* g_new = g_out ? g_out + (t * B + first) * 4 * H : nullptr;
      const float* x_t = x + (t * B + first) * D;
      for (int64_t nb = 0; nb < NB; ++nb) {
        Gemm<3>(rows, x_t, D, D, wx + nb * D * 24, 24, false, bias + nb * 48, cx.data(), 24);
        Gemm<3>(rows, h_prev, H, H, wh + nb * H * 24, 24, false, bias + nb * 48 + 24, ch.data(), 24);
        for (int64_t r = 0; r < rows; ++r) {
          const float *zx = cx.data() + r * 24, *zh = ch.data() + r * 24;
          const int64_t u = r * H + nb * 8;
          const __m256 rg = Sigmoid(_mm256_add_ps(_mm256_loadu_ps(zx), _mm256_loadu_ps(zh)));
          const __m256 zg = Sigmoid(_mm256_add_ps(_mm256_loadu_ps(zx + 8), _mm256_loadu_ps(zh + 8)));
          const __m256 hn = _mm256_loadu_ps(zh + 16);
          const __m256 n = Tanh(_mm256_fmadd_ps(rg, hn, _mm256_loadu_ps(zx + 16)));
          const __m256 keep = keep_z ? zg : _mm256_sub_ps(one, zg);
          const __m256 hp = _mm256_loadu_ps(h_prev + u);
          const __m256 h = _mm256_fmadd_ps(keep, _mm256_sub_ps(hp, n), n);
          const __m256 valid = _mm256_cmp_ps(_mm256_broadcast_ss(m + t * B + first + r), _mm256_setzero_ps(), _CMP_GT_OQ);
          _mm256_storeu_ps(h_new + u, _mm256_blendv_ps(hp, h, valid));
          if (g_new) StoreGates(g_new + r * 4 * H + nb * 8, H, rg, zg, n, hn);
        }
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error GruBackwardImpl(ffi::Buffer<ffi::F32> wq, ffi::Buffer<ffi::F32> dh_last, ffi::Buffer<ffi::F32> dys,
                           ffi::Buffer<ffi::F32> gates, ffi::Buffer<ffi::F32> hps, ffi::Buffer<ffi::F32> mask,
                           ffi::ResultBuffer<ffi::F32> dh0, ffi::ResultBuffer<ffi::F32> dpres, int64_t threads,
                           bool keep_z) {
  auto yd = dys.dimensions(), wd = wq.dimensions();
  if (yd.size() != 3 || wd.size() != 3) return ffi::Error::InvalidArgument("gru_backward: ranks");
  const int64_t T = yd[0], B = yd[1], H = yd[2], G = 4 * H, K = 3 * H;  // dh_{t-1} reads [d_r, d_z, d_hn]
  if (H % 16 != 0 || wd[0] != H / 16 || wd[1] != 3 * H || wd[2] != 16)
    return ffi::Error::InvalidArgument("gru_backward: shapes");
  const float *w = wq.typed_data(), *dy = dys.typed_data(), *gg = gates.typed_data(), *hp = hps.typed_data();
  const float* m = mask.typed_data();
  float *dh = dh0->typed_data(), *dp = dpres->typed_data();
  std::copy_n(dh_last.typed_data(), B * H, dh);
  const __m256 one = _mm256_set1_ps(1.f), sign = _mm256_set1_ps(keep_z ? 1.f : -1.f);
  BackwardThroughTime(threads, T, B, H, G, K, m, w, dh, dp,
                      [&](int64_t tb, int64_t j, int64_t u, __m256 mv, __m256 rest, float* d) {
    const int64_t s = tb * H + u;
    const float* g = gg + tb * G + u;
    const __m256 rg = _mm256_loadu_ps(g), zg = _mm256_loadu_ps(g + H), n = _mm256_loadu_ps(g + 2 * H);
    const __m256 hn = _mm256_loadu_ps(g + 3 * H), keep = keep_z ? zg : _mm256_sub_ps(one, zg);
    const __m256 dh_old = _mm256_loadu_ps(dh + j);
    const __m256 dhn = _mm256_mul_ps(mv, _mm256_add_ps(dh_old, _mm256_loadu_ps(dy + s)));
    // d n_pre = dh (1 - keep) (1 - n^2); d hn = d n_pre r; d r_pre = d n_pre hn r (1 - r);
    // d z_pre = +-dh (h_{t-1} - n) z (1 - z), + for "keep".
    const __m256 dn = _mm256_mul_ps(_mm256_mul_ps(dhn, _mm256_sub_ps(one, keep)), _mm256_fnmadd_ps(n, n, one));
    const __m256 dz = _mm256_mul_ps(_mm256_mul_ps(dhn, _mm256_sub_ps(_mm256_loadu_ps(hp + s), n)),
                                    _mm256_mul_ps(sign, _mm256_fnmadd_ps(zg, zg, zg)));
    _mm256_storeu_ps(d, _mm256_mul_ps(_mm256_mul_ps(dn, hn), _mm256_fnmadd_ps(rg, rg, rg)));
    _mm256_storeu_ps(d + H, dz);
    _mm256_storeu_ps(d + 2 * H, _mm256_mul_ps(dn, rg));
    _mm256_storeu_ps(d + 3 * H, dn);
    // what reaches h_{t-1} directly: through the gate (keep) and, on a padded step, the carry; the matmul adds
    _mm256_storeu_ps(dh + j, _mm256_fmadd_ps(dhn, keep, _mm256_mul_ps(rest, dh_old)));
  });
  return ffi::Error::Success();
}

}  // namespace

// The handlers, each binding its float32 buffers in the order of its Impl's arguments, then its attributes.
using F32 = ffi::Buffer<ffi::F32>;

XLA_FFI_DEFINE_HANDLER_SYMBOL(GatedLstmForward, LstmForwardImpl,  // xs, h0, c0, wp, bp, mask -> hs, cs, acts
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Attr<int64_t>("threads"));
// wq, dh_last, dc_last, dys, acts, cs, cps, mask -> dh0, dc0, dpres
XLA_FFI_DEFINE_HANDLER_SYMBOL(GatedLstmBackward, LstmBackwardImpl,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Attr<int64_t>("threads"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(GatedGruForward, GruForwardImpl,  // xs, h0, wxp, whp, bp, mask -> hs, gates
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Attr<int64_t>("threads").Attr<bool>("keep_z"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(GatedGruBackward, GruBackwardImpl,  // wq, dh_last, dys, gates, hps, mask -> dh0, dpres
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Attr<int64_t>("threads").Attr<bool>("keep_z"));

extern "C" int gated_cpu_supported() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
