// Fused "LIF layer -> narrow dense layer" for XLA:CPU (XLA FFI custom calls).
//
// Forward  (lif_dense_fwd): for currents I [T, B, N], bias b [N], readout weights W [N, F]
//   U[t] = beta * U[t-1] + (I[t] + b) - theta * 1[U[t-1] > theta]   (reset "subtract")
//   U[t] = beta * U[t-1] + (I[t] + b)                                (reset "none")
//   S[t] = 1[U[t] > theta],   Y[t] = S[t] W                           (U[-1] = 0)
// returns the membranes U [T, B, N] (the backward pass's residual) and Y [T, B, F].
//
// Backward (lif_dense_bwd): for U, the cotangent G of Y [T, B, F] and W, with the reset
// detached (snnTorch's default) the adjoint of the membrane is a linear recurrence,
//   delta[t] = (G[t] W^T) * sigma'(U[t] - theta) + beta * delta[t+1],   delta[T] = 0,
// and dL/dI = delta, dL/db = sum_{t,b} delta, dL/dW = sum_{t,b} S[t]^T G[t].
//
// Each batch row is independent; rows are split into contiguous blocks, one per thread of
// XLA's intra-op pool; per-thread partial sums (db, dW) are added in thread order, so the
// result is deterministic for a given thread count. Python side: spikepipe_jax/snn/fused.py.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Surrogate : int32_t { kFastSigmoid = 0, kArctan = 1, kTriangle = 2, kStraightThrough = 3 };

// Row kernels. Layouts: I, U, delta [T, B, N] (row = t * B + b); Y, G [T, B, F];
// the handlers copy W [N, F] into [N, Fp], zero-padded to Fp = 16 * NV columns (NV vectors per
// neuron, read only for neurons that spiked), and into W^T [F, N] (for G W^T). Spikes are binary, so S W and S^T G are sums
// over the spiking neurons: each row collects their indices first. A part of the batch,
// rows b0..b1, is processed time step by time step (the rows of one step are contiguous in
// memory, and the part's state, (b1 - b0) x N floats, stays in cache).

#if defined(__AVX512F__)
inline __mmask16 TailMask(int64_t n, int64_t N) {
  const int64_t left = N - n;
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

// Appends n0 + j for every set bit j of k to idx (idx needs 16 slots of slack).
inline int64_t AppendIndices(int32_t* idx, int64_t count, __mmask16 k, int64_t n0) {
  const __m512i lanes = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(n0)),
                                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  _mm512_storeu_si512(idx + count, _mm512_maskz_compress_epi32(k, lanes));
  return count + __builtin_popcount(static_cast<unsigned>(k));
}
#endif

// y[0:F] = sum over j < count of w[idx[j], 0:F]  (w rows are NV * 16 floats)
template <int NV>
inline void SumRows(const float* __restrict__ w, const int32_t* __restrict__ idx, int64_t count,
                    int64_t F, float* __restrict__ y) {
  constexpr int64_t Fp = 16 * NV;
#if defined(__AVX512F__)
  __m512 a[NV], c[NV];
  for (int v = 0; v < NV; ++v) a[v] = c[v] = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 1 < count; j += 2) {  // two independent chains
    const float* r0 = w + static_cast<int64_t>(idx[j]) * Fp;
    const float* r1 = w + static_cast<int64_t>(idx[j + 1]) * Fp;
    for (int v = 0; v < NV; ++v) {
      a[v] = _mm512_add_ps(a[v], _mm512_loadu_ps(r0 + 16 * v));
      c[v] = _mm512_add_ps(c[v], _mm512_loadu_ps(r1 + 16 * v));
    }
  }
  if (j < count) {
    const float* r0 = w + static_cast<int64_t>(idx[j]) * Fp;
    for (int v = 0; v < NV; ++v) a[v] = _mm512_add_ps(a[v], _mm512_loadu_ps(r0 + 16 * v));
  }
  alignas(64) float buf[Fp];
  for (int v = 0; v < NV; ++v) _mm512_store_ps(buf + 16 * v, _mm512_add_ps(a[v], c[v]));
  std::copy(buf, buf + F, y);
#else
  float acc[Fp] = {};
  for (int64_t j = 0; j < count; ++j) {
    const float* r = w + static_cast<int64_t>(idx[j]) * Fp;
    for (int64_t f = 0; f < Fp; ++f) acc[f] += r[f];
  }
  std::copy(acc, acc + F, y);
#endif
}

// dw[idx[j], :] += g  for j < count  (g padded to NV * 16 floats)
template <int NV>
inline void AddToRows(float* __restrict__ dw, const int32_t* __restrict__ idx, int64_t count,
                      const float* __restrict__ g) {
  constexpr int64_t Fp = 16 * NV;
#if defined(__AVX512F__)
  __m512 gv[NV];
  for (int v = 0; v < NV; ++v) gv[v] = _mm512_loadu_ps(g + 16 * v);
  for (int64_t j = 0; j < count; ++j) {
    float* r = dw + static_cast<int64_t>(idx[j]) * Fp;
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(r + 16 * v, _mm512_add_ps(_mm512_loadu_ps(r + 16 * v), gv[v]));
  }
#else
  for (int64_t j = 0; j < count; ++j) {
    float* r = dw + static_cast<int64_t>(idx[j]) * Fp;
    for (int64_t f = 0; f < Fp; ++f) r[f] += g[f];
  }
#endif
}

// Writes the indices n with u[n] > theta to idx (N slots) and returns their count.
inline int64_t SpikeIndices(const float* __restrict__ u, int64_t N, float theta, int32_t* __restrict__ idx) {
  int64_t count = 0;
  for (int64_t n = 0; n < N; ++n) {
    idx[count] = static_cast<int32_t>(n);
    count += u[n] > theta;
  }
  return count;
}

template <int NV>
void ForwardRows(const float* __restrict__ cur, const float* __restrict__ bias,
                 const float* __restrict__ w, float* __restrict__ mem, float* __restrict__ out,
                 int64_t T, int64_t B, int64_t N, int64_t F, float beta, float theta,
                 bool subtract, int64_t b0, int64_t b1) {
  std::vector<float> state((b1 - b0) * N, 0.f);
  std::vector<int32_t> idx_v(N + 16);
  int32_t* __restrict__ idx = idx_v.data();
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t row = t * B + b;
      const float* __restrict__ i = cur + row * N;
      float* __restrict__ u = mem + row * N;
      float* __restrict__ m = state.data() + (b - b0) * N;
      int64_t count = 0;
#if defined(__AVX512F__)
      const __m512 vbeta = _mm512_set1_ps(beta), vtheta = _mm512_set1_ps(theta);
      for (int64_t n = 0; n < N; n += 16) {
        const __mmask16 tail = TailMask(n, N);
        const __m512 prev = _mm512_maskz_loadu_ps(tail, m + n);
        const __m512 in = _mm512_add_ps(_mm512_maskz_loadu_ps(tail, i + n), _mm512_maskz_loadu_ps(tail, bias + n));
        __m512 v = _mm512_add_ps(_mm512_mul_ps(vbeta, prev), in);
        if (subtract) v = _mm512_mask_sub_ps(v, _mm512_cmp_ps_mask(prev, vtheta, _CMP_GT_OQ), v, vtheta);
        _mm512_mask_storeu_ps(m + n, tail, v);
        _mm512_mask_storeu_ps(u + n, tail, v);
        count = AppendIndices(idx, count, _mm512_mask_cmp_ps_mask(tail, v, vtheta, _CMP_GT_OQ), n);
      }
#else
      // two passes the compiler vectorises: the membrane update, then the spiking neurons'
      // indices collected without a branch
      for (int64_t n = 0; n < N; ++n) {
        const float r = (subtract && m[n] > theta) ? theta : 0.f;
        const float v = beta * m[n] + (i[n] + bias[n]) - r;
        m[n] = v;
        u[n] = v;
      }
      count = SpikeIndices(u, N, theta, idx);
#endif
      SumRows<NV>(w, idx, count, F, out + row * F);
    }
  }
}

template <int32_t kKind>
inline float SurrogateGrad(float x, float scale, float arctan_c) {
  if constexpr (kKind == kFastSigmoid) {
    const float d = scale * std::fabs(x) + 1.f;
    return 1.f / (d * d);
  } else if constexpr (kKind == kArctan) {
    const float z = arctan_c * x;
    return (scale / 2.f) / (1.f + z * z);
  } else if constexpr (kKind == kTriangle) {
    return x >= 0.f ? -scale : scale;
  } else {
    return 1.f;
  }
}

#if defined(__AVX512F__)
template <int32_t kKind>
inline __m512 SurrogateGradV(__m512 x, float scale, float arctan_c) {
  if constexpr (kKind == kFastSigmoid) {
    const __m512 d = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(scale), _mm512_abs_ps(x)), _mm512_set1_ps(1.f));
    return _mm512_div_ps(_mm512_set1_ps(1.f), _mm512_mul_ps(d, d));
  } else if constexpr (kKind == kArctan) {
    const __m512 z = _mm512_mul_ps(_mm512_set1_ps(arctan_c), x);
    return _mm512_div_ps(_mm512_set1_ps(scale / 2.f), _mm512_add_ps(_mm512_set1_ps(1.f), _mm512_mul_ps(z, z)));
  } else if constexpr (kKind == kTriangle) {
    const __mmask16 ge = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
    return _mm512_mask_blend_ps(ge, _mm512_set1_ps(scale), _mm512_set1_ps(-scale));
  } else {
    return _mm512_set1_ps(1.f);
  }
}
#endif

#if defined(__AVX512F__)
// One time step of R adjacent batch rows (R = 1 or 2; two rows share the loads of W^T).
template <int32_t kKind, int NV, int R>
inline void BackwardStep(const float* const* u, const float* const* gy, float* const* d, float* const* carry,
                         const float* __restrict__ wt, float* __restrict__ db, float* __restrict__ dw,
                         int32_t* __restrict__ idx, int64_t N, int64_t F, float beta, float theta,
                         float scale, float arctan_c) {
  const __m512 vbeta = _mm512_set1_ps(beta), vtheta = _mm512_set1_ps(theta);
  int64_t count[R] = {};
  for (int64_t n = 0; n < N; n += 16) {
    const __mmask16 tail = TailMask(n, N);
    __m512 gs[R];
    for (int r = 0; r < R; ++r) gs[r] = _mm512_setzero_ps();
    for (int64_t f = 0; f < F; ++f) {
      const __m512 w = _mm512_maskz_loadu_ps(tail, wt + f * N + n);
      for (int r = 0; r < R; ++r) gs[r] = _mm512_fmadd_ps(_mm512_set1_ps(gy[r][f]), w, gs[r]);
    }
    __m512 sum = _mm512_maskz_loadu_ps(tail, db + n);
    for (int r = 0; r < R; ++r) {
      const __m512 un = _mm512_maskz_loadu_ps(tail, u[r] + n);
      const __m512 l = _mm512_mul_ps(gs[r], SurrogateGradV<kKind>(_mm512_sub_ps(un, vtheta), scale, arctan_c));
      const __m512 c = _mm512_add_ps(l, _mm512_mul_ps(vbeta, _mm512_maskz_loadu_ps(tail, carry[r] + n)));
      _mm512_mask_storeu_ps(carry[r] + n, tail, c);
      _mm512_mask_storeu_ps(d[r] + n, tail, c);
      sum = _mm512_add_ps(sum, c);
      count[r] = AppendIndices(idx + r * (N + 16), count[r], _mm512_mask_cmp_ps_mask(tail, un, vtheta, _CMP_GT_OQ), n);
    }
    _mm512_mask_storeu_ps(db + n, tail, sum);
  }
  for (int r = 0; r < R; ++r) {
    alignas(64) float gpad[16 * NV] = {};
    std::copy(gy[r], gy[r] + F, gpad);
    AddToRows<NV>(dw, idx + r * (N + 16), count[r], gpad);
  }
}
#endif

template <int32_t kKind, int NV>
void BackwardRows(const float* __restrict__ mem, const float* __restrict__ g,
                  const float* __restrict__ wt, float* __restrict__ delta, float* __restrict__ db,
                  float* __restrict__ dw, int64_t T, int64_t B, int64_t N, int64_t F,
                  float beta, float theta, float scale, int64_t b0, int64_t b1) {
  // (pi / 2) * alpha rounded once to float, as Python's float times a float32 array does
  const float arctan_c = static_cast<float>(1.5707963267948966 * static_cast<double>(scale));
  std::vector<float> carry_v((b1 - b0) * N, 0.f);
  std::vector<int32_t> idx_v(2 * (N + 16));
  int32_t* __restrict__ idx = idx_v.data();
#if !defined(__AVX512F__)
  std::vector<float> gs_v(N);
#endif
  for (int64_t t = T - 1; t >= 0; --t) {
#if defined(__AVX512F__)
    for (int64_t b = b0; b < b1; b += 2) {
      const int64_t row = t * B + b;
      const float* u[2] = {mem + row * N, mem + (row + 1) * N};
      const float* gy[2] = {g + row * F, g + (row + 1) * F};
      float* d[2] = {delta + row * N, delta + (row + 1) * N};
      float* carry[2] = {carry_v.data() + (b - b0) * N, carry_v.data() + (b + 1 - b0) * N};
      if (b + 1 < b1)
        BackwardStep<kKind, NV, 2>(u, gy, d, carry, wt, db, dw, idx, N, F, beta, theta, scale, arctan_c);
      else
        BackwardStep<kKind, NV, 1>(u, gy, d, carry, wt, db, dw, idx, N, F, beta, theta, scale, arctan_c);
    }
#else
    // passes over the row's N neurons that the compiler vectorises: G W^T (one pass per readout
    // unit f, summed in f order), the adjoint recurrence, then the spiking neurons' indices
    alignas(64) float gpad[16 * NV];
    float* __restrict__ gs = gs_v.data();
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t row = t * B + b;
      const float* __restrict__ u = mem + row * N;
      const float* __restrict__ gy = g + row * F;
      float* __restrict__ d = delta + row * N;
      float* __restrict__ carry = carry_v.data() + (b - b0) * N;
      std::fill(gs, gs + N, 0.f);
      for (int64_t f = 0; f < F; ++f) {
        const float gf = gy[f];
        const float* __restrict__ wf = wt + f * N;
        for (int64_t n = 0; n < N; ++n) gs[n] += gf * wf[n];
      }
      for (int64_t n = 0; n < N; ++n) {
        const float c = gs[n] * SurrogateGrad<kKind>(u[n] - theta, scale, arctan_c) + beta * carry[n];
        carry[n] = c;
        d[n] = c;
        db[n] += c;
      }
      const int64_t count = SpikeIndices(u, N, theta, idx);
      std::fill(gpad, gpad + 16 * NV, 0.f);
      std::copy(gy, gy + F, gpad);
      AddToRows<NV>(dw, idx, count, gpad);
    }
#endif
  }
}

// Calls fn(std::integral_constant<int, NV>) for NV = Fp / 16 in 1..4.
template <typename Fn>
void DispatchWidth(int64_t Fp, Fn fn) {
  switch (Fp / 16) {
    case 1: fn(std::integral_constant<int, 1>()); break;
    case 2: fn(std::integral_constant<int, 2>()); break;
    case 3: fn(std::integral_constant<int, 3>()); break;
    default: fn(std::integral_constant<int, 4>()); break;
  }
}

// Checks currents/membranes [T, B, N], readout weights W [N, F] (1 <= F <= 64) and N biases.
ffi::Error CheckShapes(ffi::Span<const int64_t> cur, ffi::Span<const int64_t> w, size_t bias_size) {
  if (cur.size() != 3) return ffi::Error::InvalidArgument("lif_dense: currents must be [T, B, N]");
  const int64_t N = cur[2];
  if (w.size() != 2 || w[0] != N || w[1] < 1 || w[1] > 64)
    return ffi::Error::InvalidArgument("lif_dense: readout weights must be [N, F] with N = " + std::to_string(N) +
                                       " and 1 <= F <= 64");
  if (bias_size != static_cast<size_t>(N))
    return ffi::Error::InvalidArgument("lif_dense: bias must have N = " + std::to_string(N) +
                                       " elements, got " + std::to_string(bias_size));
  return ffi::Error::Success();
}

int64_t PaddedWidth(int64_t F) { return 16 * ((F + 15) / 16); }

ffi::Error LifDenseFwd(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> cur, ffi::Buffer<ffi::F32> bias,
                       ffi::Buffer<ffi::F32> w, float beta, float theta, int32_t subtract,
                       ffi::ResultBuffer<ffi::F32> mem, ffi::ResultBuffer<ffi::F32> out) {
  const auto cd = cur.dimensions();
  if (ffi::Error e = CheckShapes(cd, w.dimensions(), bias.element_count()); e.failure()) return e;
  const int64_t T = cd[0], B = cd[1], N = cd[2], F = w.dimensions()[1], Fp = PaddedWidth(F);
  std::vector<float> wpad(N * Fp, 0.f);  // one zero-padded vector row per neuron
  for (int64_t n = 0; n < N; ++n) std::copy(w.typed_data() + n * F, w.typed_data() + (n + 1) * F, &wpad[n * Fp]);
  const float* pc = cur.typed_data();
  const float* pb = bias.typed_data();
  const float* pw = wpad.data();
  float* pm = mem->typed_data();
  float* po = out->typed_data();
  DispatchWidth(Fp, [&](auto nv) {
    spikepipe::ParallelBlocks(pool, B, spikepipe::NumBlocks(pool, B), [=](int64_t, int64_t b0, int64_t b1) {
      ForwardRows<decltype(nv)::value>(pc, pb, pw, pm, po, T, B, N, F, beta, theta, subtract != 0, b0, b1);
    });
  });
  return ffi::Error::Success();
}

ffi::Error LifDenseBwd(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> mem, ffi::Buffer<ffi::F32> g,
                       ffi::Buffer<ffi::F32> w, float beta, float theta, int32_t surrogate,
                       float scale, ffi::ResultBuffer<ffi::F32> delta,
                       ffi::ResultBuffer<ffi::F32> dbias, ffi::ResultBuffer<ffi::F32> dw) {
  const auto md = mem.dimensions();
  if (ffi::Error e = CheckShapes(md, w.dimensions(), dbias->element_count()); e.failure()) return e;
  const int64_t T = md[0], B = md[1], N = md[2], F = w.dimensions()[1], Fp = PaddedWidth(F);
  if (surrogate < kFastSigmoid || surrogate > kStraightThrough)
    return ffi::Error::InvalidArgument("lif_dense: unknown surrogate code " + std::to_string(surrogate));
  std::vector<float> wt_v(F * N);  // W^T [F, N], for G W^T
  for (int64_t n = 0; n < N; ++n)
    for (int64_t f = 0; f < F; ++f) wt_v[f * N + n] = w.typed_data()[n * F + f];
  const int64_t parts = spikepipe::NumBlocks(pool, B);
  const int64_t stride = N + N * Fp;  // per-part partial sums: [db (N) | dW (N * Fp)]
  std::vector<float> partial(parts * stride, 0.f);
  const float* pm = mem.typed_data();
  const float* pg = g.typed_data();
  const float* pw = wt_v.data();
  float* pd = delta->typed_data();
  float* pp = partial.data();
  DispatchWidth(Fp, [&](auto nv) {
    constexpr int NV = decltype(nv)::value;
    spikepipe::ParallelBlocks(pool, B, parts, [=](int64_t part, int64_t b0, int64_t b1) {
      float* db = pp + part * stride;
      float* dwp = db + N;
      switch (surrogate) {
        case kFastSigmoid:
          BackwardRows<kFastSigmoid, NV>(pm, pg, pw, pd, db, dwp, T, B, N, F, beta, theta, scale, b0, b1);
          break;
        case kArctan:
          BackwardRows<kArctan, NV>(pm, pg, pw, pd, db, dwp, T, B, N, F, beta, theta, scale, b0, b1);
          break;
        case kTriangle:
          BackwardRows<kTriangle, NV>(pm, pg, pw, pd, db, dwp, T, B, N, F, beta, theta, scale, b0, b1);
          break;
        default:
          BackwardRows<kStraightThrough, NV>(pm, pg, pw, pd, db, dwp, T, B, N, F, beta, theta, scale, b0, b1);
      }
    });
  });
  // per-part partial sums added in part order; dW drops the padding columns
  float* out_b = dbias->typed_data();
  float* out_w = dw->typed_data();
  for (int64_t n = 0; n < N; ++n) {
    float acc = 0.f;
    for (int64_t p = 0; p < parts; ++p) acc += pp[p * stride + n];
    out_b[n] = acc;
    for (int64_t f = 0; f < F; ++f) {
      float accw = 0.f;
      for (int64_t p = 0; p < parts; ++p) accw += pp[p * stride + N + n * Fp + f];
      out_w[n * F + f] = accw;
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LifDenseFwdHandler, LifDenseFwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // currents [T, B, N]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // bias [N]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // W [N, F]
                                  .Attr<float>("beta")
                                  .Attr<float>("theta")
                                  .Attr<int32_t>("subtract")
                                  .Ret<ffi::Buffer<ffi::F32>>()   // membranes [T, B, N]
                                  .Ret<ffi::Buffer<ffi::F32>>());  // readout currents [T, B, F]

XLA_FFI_DEFINE_HANDLER_SYMBOL(LifDenseBwdHandler, LifDenseBwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // membranes [T, B, N]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // cotangent of Y [T, B, F]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // W [N, F]
                                  .Attr<float>("beta")
                                  .Attr<float>("theta")
                                  .Attr<int32_t>("surrogate")
                                  .Attr<float>("scale")
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dL/dI [T, B, N]
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dL/db [N]
                                  .Ret<ffi::Buffer<ffi::F32>>());  // dL/dW [N, F]
