// col2im for the im2col convolution's input gradient (XLA FFI custom call).
//
// The im2col path (spikepipe_jax/snn/layers.py) computes a convolution as P W with one patch
// row per b x b block of outputs: P[(n, I, J), (u, v, c)] = xp[n, s_b I + u, s_b J + v, c]
// for a p x p patch (p = (b - 1) s + k, s_b = b s) of the zero-padded input xp. Its input
// gradient is the transpose of that gather: dxp[n, s_b I + u, s_b J + v, c] summed over every
// (I, J, u, v) that reads it, of dP = dY W^T. This kernel does that sum for each image in a
// small [Hp, Wp, C] buffer that stays in L1/L2, then writes the un-padded part:
//   dx[n, y, x, c] = dxp[n, y + pad, x + pad, c].
// Images are split into contiguous blocks, one per thread of XLA's intra-op pool. Each output
// element is a sum in a fixed order (I, J, u, v ascending), so the result does not depend on
// the thread count. Python side: spikepipe_jax/snn/layers.py (_im2col_bwd).

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

void FoldImages(const float* __restrict__ dp, float* __restrict__ dx, int64_t nbh, int64_t nbw,
                int64_t p, int64_t c, int64_t sb, int64_t hp, int64_t wp, int64_t h, int64_t w,
                int64_t pad, int64_t n0, int64_t n1) {
  std::vector<float> buf(hp * wp * c);
  float* __restrict__ acc = buf.data();
  const int64_t row = p * p * c;  // one patch row of dP
  for (int64_t n = n0; n < n1; ++n) {
    std::fill(buf.begin(), buf.end(), 0.f);
    const float* __restrict__ src = dp + n * nbh * nbw * row;
    for (int64_t bi = 0; bi < nbh; ++bi) {
      for (int64_t bj = 0; bj < nbw; ++bj, src += row) {
        for (int64_t u = 0; u < p; ++u) {
          // the patch's row u covers p * c contiguous values of dxp's row sb * bi + u
          float* __restrict__ dst = acc + ((sb * bi + u) * wp + sb * bj) * c;
          const float* __restrict__ s = src + u * p * c;
#pragma omp simd
          for (int64_t e = 0; e < p * c; ++e) dst[e] += s[e];
        }
      }
    }
    float* __restrict__ out = dx + n * h * w * c;
    for (int64_t y = 0; y < h; ++y)
      std::copy(acc + ((y + pad) * wp + pad) * c, acc + ((y + pad) * wp + pad + w) * c, out + y * w * c);
  }
}

ffi::Error Col2Im(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dp, int64_t patch, int64_t step,
                  int64_t pad, int64_t hp, int64_t wp, ffi::ResultBuffer<ffi::F32> dx) {
  const auto pd = dp.dimensions();  // [N, nbh, nbw, p * p * C]
  const auto xd = dx->dimensions();  // [N, H, W, C]
  if (pd.size() != 4 || xd.size() != 4 || pd[0] != xd[0])
    return ffi::Error::InvalidArgument("col2im: expected dP [N, nbh, nbw, p*p*C] and dx [N, H, W, C]");
  const int64_t n = xd[0], h = xd[1], w = xd[2], c = xd[3], nbh = pd[1], nbw = pd[2];
  if (patch < 1 || step < 1 || pd[3] != patch * patch * c)
    return ffi::Error::InvalidArgument("col2im: patch rows of " + std::to_string(pd[3]) + " values do not hold " +
                                       std::to_string(patch) + " x " + std::to_string(patch) + " x " +
                                       std::to_string(c));
  if (step * (nbh - 1) + patch > hp || step * (nbw - 1) + patch > wp || pad < 0 || h + pad > hp ||
      w + pad > wp)
    return ffi::Error::InvalidArgument("col2im: patches or the input do not fit the padded input " +
                                       std::to_string(hp) + " x " + std::to_string(wp));
  const float* src = dp.typed_data();
  float* out = dx->typed_data();
  spikepipe::ParallelBlocks(pool, n, spikepipe::NumBlocks(pool, n), [=](int64_t, int64_t n0, int64_t n1) {
    FoldImages(src, out, nbh, nbw, patch, c, step, hp, wp, h, w, pad, n0, n1);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(Col2ImHandler, Col2Im,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // dP [N, nbh, nbw, p * p * C]
                                  .Attr<int64_t>("patch")
                                  .Attr<int64_t>("step")
                                  .Attr<int64_t>("pad")
                                  .Attr<int64_t>("hp")
                                  .Attr<int64_t>("wp")
                                  .Ret<ffi::Buffer<ffi::F32>>());  // dx [N, H, W, C]
