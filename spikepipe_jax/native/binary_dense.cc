// A dense layer whose input is spikes (exact 0/1), for XLA:CPU (XLA FFI custom calls).
//
// For spikes X in {0, 1}^[M, K] (uint8) and weights W [K, N]:
//   forward          Y = X W,     Y[m, n]  = sum over k with X[m, k] = 1 of W[k, n]
//   weight gradient  dW = X^T G,  dW[k, n] = sum over m with X[m, k] = 1 of G[m, n]
// Both are sums of the rows the spikes select: (spike density) x the adds of the dense
// product, and no multiplies. The spikes are first turned into bits: each row of X as words of
// 64 columns (forward), and each chunk of 64 rows as one word per column (weight gradient);
// set bits are then visited in ascending order. Outputs are computed in column tiles of up to
// 64 (8 vectors of 8 floats), each tile's operand packed contiguously first (rows of W or G are
// n floats apart, so a block of them would take one TLB entry per row). Forward: per chunk of
// 256 rows and tile, K is walked in blocks whose packed slice of W stays in L1 while a row's
// sums sit in registers; chunks of rows go to the threads of XLA's intra-op pool. Weight
// gradient: per tile and chunk of 64 rows, the chunk's packed slice of G stays in L1 while each
// row of dW's tile collects the rows its column's word selects; dW's rows go to the threads.
// Every output element is summed in one fixed order (k ascending in Y, m ascending in dW),
// whatever the thread count.

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kLanes = 8;          // floats per vector
constexpr int64_t kTileVectors = 8;    // vectors per column tile
constexpr int64_t kTile = kLanes * kTileVectors;
constexpr int64_t kL1Floats = 6144;    // forward: a block of packed W rows kept in L1 (24 KiB)
constexpr int64_t kRowChunk = 256;     // forward: rows whose sums are collected together
constexpr int64_t kBits = 64;          // spikes per word; weight gradient: rows per chunk

typedef float Vec __attribute__((vector_size(32)));
typedef float UVec __attribute__((vector_size(32), aligned(4)));  // for unaligned access

inline Vec Load(const float* p) { return *reinterpret_cast<const UVec*>(p); }
inline void Store(float* p, Vec v) { *reinterpret_cast<UVec*>(p) = v; }

inline int64_t NumTiles(int64_t n) { return (n + kTile - 1) / kTile; }
inline int64_t TileColumns(int64_t n, int64_t t) { return std::min(n, (t + 1) * kTile) - t * kTile; }
inline int64_t TileVectors(int64_t n, int64_t t) { return (TileColumns(n, t) + kLanes - 1) / kLanes; }
inline int64_t Words(int64_t k) { return (k + kBits - 1) / kBits; }

// Scratch memory that stays with its thread from call to call (grown, never shrunk). Kernels
// run inside XLA's step while its temporary buffer is live; fresh heap blocks allocated and
// freed there can land in the hole that buffer leaves between steps and split it, so that the
// next step's buffer no longer fits and the heap grows (seen as conv_medium runs peaking at
// 0.8 or 1.9 GB from one run to the next). Scratch(v, n) returns n zeroed elements of v.
template <typename T>
T* Scratch(std::vector<T>& v, int64_t n) {
  n = std::max<int64_t>(1, n);
  if (static_cast<int64_t>(v.size()) < n) v.resize(n);
  std::fill(v.begin(), v.begin() + n, T{});
  return v.data();
}

// dst[r - r0][0 : 8 nv] = a[r][n0 : n0 + cols] (row stride n), zero-padded.
void PackRows(const float* a, int64_t n, int64_t r0, int64_t r1, int64_t n0, int64_t cols, int64_t nv,
              float* dst) {
  const int64_t width = kLanes * nv;
  for (int64_t r = r0; r < r1; ++r) {
    float* d = dst + (r - r0) * width;
    std::copy(a + r * n + n0, a + r * n + n0 + cols, d);
    std::fill(d + cols, d + width, 0.f);
  }
}

// a[r][n0 : n0 + cols] = src[r - r0][0 : cols].
void UnpackRows(const float* src, int64_t nv, int64_t r0, int64_t r1, float* a, int64_t n, int64_t n0,
                int64_t cols) {
  const int64_t width = kLanes * nv;
  for (int64_t r = r0; r < r1; ++r) std::copy(src + (r - r0) * width, src + (r - r0) * width + cols, a + r * n + n0);
}

// Bit j set where row[j] != 0, for j < 32.
inline uint32_t NonZeroMask32(const uint8_t* row) {
#if defined(__AVX2__)
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row));
  return ~static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, _mm256_setzero_si256())));
#else
  uint32_t mask = 0;
  for (int j = 0; j < 32; ++j) mask |= static_cast<uint32_t>(row[j] != 0) << j;
  return mask;
#endif
}

// bits[r][w] bit b set where X[r][64 w + b] != 0: [m][Words(k)].
const uint64_t* RowBits(ffi::ThreadPool& pool, const uint8_t* x, int64_t m, int64_t k) {
  static thread_local std::vector<uint64_t> bits;
  const int64_t words = Words(k);
  uint64_t* out = Scratch(bits, m * words);
  spikepipe::ParallelBlocks(pool, m, spikepipe::NumBlocks(pool, m), [=](int64_t, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = x + r * k;
      uint64_t* o = out + r * words;
      int64_t j = 0;
      for (; j + 64 <= k; j += 64)
        o[j / 64] = NonZeroMask32(row + j) | static_cast<uint64_t>(NonZeroMask32(row + j + 32)) << 32;
      for (; j < k; ++j) o[j / 64] |= static_cast<uint64_t>(row[j] != 0) << (j % 64);
    }
  });
  return out;
}

// Per chunk c of 64 rows, bits[c][j] bit b set where X[64 c + b][j] != 0: [chunks][k].
const uint64_t* ColumnBits(ffi::ThreadPool& pool, const uint64_t* rb, int64_t m, int64_t k) {
  static thread_local std::vector<uint64_t> bits;
  const int64_t words = Words(k), chunks = (m + kBits - 1) / kBits;
  uint64_t* out = Scratch(bits, chunks * k);
  spikepipe::ParallelBlocks(pool, chunks, spikepipe::NumBlocks(pool, chunks), [=](int64_t, int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      uint64_t* o = out + c * k;
      for (int64_t r = c * kBits; r < std::min(m, (c + 1) * kBits); ++r)
        for (int64_t w = 0; w < words; ++w)
          for (uint64_t mask = rb[r * words + w]; mask != 0; mask &= mask - 1)
            o[w * kBits + __builtin_ctzll(mask)] |= uint64_t{1} << (r - c * kBits);
    }
  });
  return out;
}

// The row bits of the im2col patch matrix of a zero-padded image batch xp [N, Hp, Wp, C]
// without building it: patch row (n, I, J) holds xp[n, s I + u, s J + v, c] at column
// (u p + v) C + c, so its p rows u are segments of p C contiguous bytes of xp.
const uint64_t* PatchBits(ffi::ThreadPool& pool, const uint8_t* xp, int64_t n, int64_t hp, int64_t wp, int64_t c,
                          int64_t p, int64_t step, int64_t nbh, int64_t nbw) {
  static thread_local std::vector<uint64_t> bits;
  const int64_t seg = p * c, k = p * seg, words = Words(k), m = n * nbh * nbw;
  uint64_t* out = Scratch(bits, m * words);
  spikepipe::ParallelBlocks(pool, m, spikepipe::NumBlocks(pool, m), [=](int64_t, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t img = r / (nbh * nbw), bi = (r / nbw) % nbh, bj = r % nbw;
      uint64_t* o = out + r * words;
      for (int64_t u = 0; u < p; ++u) {
        const uint8_t* src = xp + ((img * hp + step * bi + u) * wp + step * bj) * c;
        const int64_t off = u * seg;
        int64_t j = 0;
        for (; j + 32 <= seg; j += 32) {
          const uint64_t mask = NonZeroMask32(src + j);
          const int64_t bit = off + j, w = bit / kBits, sh = bit % kBits;
          o[w] |= mask << sh;
          if (sh > 32) o[w + 1] |= mask >> (kBits - sh);
        }
        for (; j < seg; ++j) o[(off + j) / kBits] |= static_cast<uint64_t>(src[j] != 0) << ((off + j) % kBits);
      }
    }
  });
  return out;
}

// Forward, rows [r0, r1), one tile: wt is the tile's packed W [k][8 NV], sums the rows' sums
// [r1 - r0][8 NV]. K is walked in blocks of kb rows of wt (a multiple of 64, in L1); a row's
// sums stay in `sums` between blocks.
template <int NV>
void ForwardTile(const uint64_t* __restrict__ bits, int64_t words, const float* __restrict__ wt,
                 float* __restrict__ sums, int64_t r0, int64_t r1, int64_t k) {
  constexpr int64_t W = kLanes * NV;
  const int64_t kb = std::max<int64_t>(kBits, kL1Floats / W / kBits * kBits);
  for (int64_t k0 = 0; k0 < k; k0 += kb) {
    const int64_t w0 = k0 / kBits, w1 = std::min(words, (k0 + kb) / kBits);
    for (int64_t r = r0; r < r1; ++r) {
      float* yr = sums + (r - r0) * W;
      Vec acc[NV];
      for (int v = 0; v < NV; ++v) acc[v] = k0 == 0 ? Vec{} : Load(yr + kLanes * v);
      const uint64_t* rb = bits + r * words;
      for (int64_t w = w0; w < w1; ++w) {
        const float* base = wt + w * kBits * W;
        for (uint64_t mask = rb[w]; mask != 0; mask &= mask - 1) {
          const float* wr = base + __builtin_ctzll(mask) * W;
          for (int v = 0; v < NV; ++v) acc[v] += Load(wr + kLanes * v);
        }
      }
      for (int v = 0; v < NV; ++v) Store(yr + kLanes * v, acc[v]);
    }
  }
}

// Weight gradient, dW's rows [j0, j1), one tile, one chunk of 64 rows: gb is the chunk's
// packed G [64][8 NV], colbits its column words, sums dW's running sums [j1 - j0][8 NV].
template <int NV>
void WeightGradChunk(const uint64_t* __restrict__ colbits, const float* __restrict__ gb, float* __restrict__ sums,
                     int64_t j0, int64_t j1) {
  constexpr int64_t W = kLanes * NV;
  for (int64_t j = j0; j < j1; ++j) {
    const uint64_t bits = colbits[j];
    if (bits == 0) continue;
    float* d = sums + (j - j0) * W;
    Vec acc[NV];
    for (int v = 0; v < NV; ++v) acc[v] = Load(d + kLanes * v);
    for (uint64_t mask = bits; mask != 0; mask &= mask - 1) {
      const float* gr = gb + __builtin_ctzll(mask) * W;
      for (int v = 0; v < NV; ++v) acc[v] += Load(gr + kLanes * v);
    }
    for (int v = 0; v < NV; ++v) Store(d + kLanes * v, acc[v]);
  }
}

#define SPIKEPIPE_DISPATCH_NV(nv, CALL) \
  switch (nv) {                         \
    case 1: CALL(1); break;             \
    case 2: CALL(2); break;             \
    case 3: CALL(3); break;             \
    case 4: CALL(4); break;             \
    case 5: CALL(5); break;             \
    case 6: CALL(6); break;             \
    case 7: CALL(7); break;             \
    default: CALL(8); break;            \
  }

// Y [m, n] = X W from X's row bits ([m][Words(k)]) and W [k, n].
void ForwardFromBits(ffi::ThreadPool& pool, const uint64_t* rb, int64_t m, int64_t k, const float* wp, int64_t n,
                     float* yp) {
  static thread_local std::vector<float> packed;
  const int64_t words = Words(k), tiles = NumTiles(n), kp = words * kBits;  // K padded: zero rows
  float* wt = Scratch(packed, tiles * kp * kTile);  // tile t: [kp][8 nv] at t kp kTile
  spikepipe::ParallelBlocks(pool, tiles, spikepipe::NumBlocks(pool, tiles), [=](int64_t, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      PackRows(wp, n, 0, k, t * kTile, TileColumns(n, t), TileVectors(n, t), wt + t * kp * kTile);
  });
  const int64_t chunks = (m + kRowChunk - 1) / kRowChunk;
  spikepipe::ParallelBlocks(pool, chunks, spikepipe::NumBlocks(pool, chunks), [&](int64_t, int64_t c0, int64_t c1) {
    static thread_local std::vector<float> sum_buf;
    float* sums = Scratch(sum_buf, kRowChunk * kTile);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t r0 = c * kRowChunk, r1 = std::min(m, r0 + kRowChunk);
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t nv = TileVectors(n, t);
        const float* tile = wt + t * kp * kTile;
#define SPIKEPIPE_FWD(NV) ForwardTile<NV>(rb, words, tile, sums, r0, r1, kp)
        SPIKEPIPE_DISPATCH_NV(nv, SPIKEPIPE_FWD)
#undef SPIKEPIPE_FWD
        UnpackRows(sums, nv, r0, r1, yp, n, t * kTile, TileColumns(n, t));
      }
    }
  });
}

// dW [k, n] = X^T G from X's row bits and G [m, n].
void WeightGradFromBits(ffi::ThreadPool& pool, const uint64_t* row_bits, int64_t m, int64_t k, const float* gp,
                        int64_t n, float* dwp) {
  const uint64_t* colbits = ColumnBits(pool, row_bits, m, k);
  const int64_t tiles = NumTiles(n), chunks = (m + kBits - 1) / kBits;
  // dW's rows split over the pool: each thread owns its rows, so no partial sums to add
  spikepipe::ParallelBlocks(pool, k, spikepipe::NumBlocks(pool, k), [&](int64_t, int64_t j0, int64_t j1) {
    static thread_local std::vector<float> gb_buf, sum_buf;
    float* gb = Scratch(gb_buf, kBits * kTile);
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t nv = TileVectors(n, t), n0 = t * kTile, cols = TileColumns(n, t);
      float* sums = Scratch(sum_buf, (j1 - j0) * kTile);
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t m0 = c * kBits, m1 = std::min(m, m0 + kBits);
        PackRows(gp, n, m0, m1, n0, cols, nv, gb);
        const uint64_t* cb = colbits + c * k;
#define SPIKEPIPE_WGRAD(NV) WeightGradChunk<NV>(cb, gb, sums, j0, j1)
        SPIKEPIPE_DISPATCH_NV(nv, SPIKEPIPE_WGRAD)
#undef SPIKEPIPE_WGRAD
      }
      UnpackRows(sums, nv, j0, j1, dwp, n, n0, cols);
    }
  });
}

ffi::Error BinaryDenseFwd(ffi::ThreadPool pool, ffi::Buffer<ffi::U8> x, ffi::Buffer<ffi::F32> w,
                          ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  if (xd.size() != 2 || wd.size() != 2 || yd.size() != 2 || xd[1] != wd[0] || yd[0] != xd[0] || yd[1] != wd[1])
    return ffi::Error::InvalidArgument("binary_dense_fwd: expected X [M, K], W [K, N] and Y [M, N]");
  const int64_t m = xd[0], k = xd[1], n = wd[1];
  if (m == 0 || n == 0) return ffi::Error::Success();
  ForwardFromBits(pool, RowBits(pool, x.typed_data(), m, k), m, k, w.typed_data(), n, y->typed_data());
  return ffi::Error::Success();
}

ffi::Error BinaryDenseWeightGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::U8> x, ffi::Buffer<ffi::F32> g,
                                 ffi::ResultBuffer<ffi::F32> dw) {
  const auto xd = x.dimensions(), gd = g.dimensions(), wd = dw->dimensions();
  if (xd.size() != 2 || gd.size() != 2 || wd.size() != 2 || gd[0] != xd[0] || wd[0] != xd[1] || wd[1] != gd[1])
    return ffi::Error::InvalidArgument("binary_dense_wgrad: expected X [M, K], G [M, N] and dW [K, N]");
  const int64_t m = xd[0], k = xd[1], n = gd[1];
  if (k == 0 || n == 0) return ffi::Error::Success();
  WeightGradFromBits(pool, RowBits(pool, x.typed_data(), m, k), m, k, g.typed_data(), n, dw->typed_data());
  return ffi::Error::Success();
}

// The im2col conv on spikes without its patch matrix: xp [N, Hp, Wp, C] (zero-padded 0/1
// input), patches of p x p pixels every `step` pixels, nbh x nbw of them per image.
ffi::Error CheckPatches(ffi::Span<const int64_t> xd, int64_t p, int64_t step, int64_t nbh, int64_t nbw) {
  if (xd.size() != 4) return ffi::Error::InvalidArgument("binary_conv: expected xp [N, Hp, Wp, C]");
  if (p < 1 || step < 1 || nbh < 1 || nbw < 1 || step * (nbh - 1) + p > xd[1] || step * (nbw - 1) + p > xd[2])
    return ffi::Error::InvalidArgument("binary_conv: " + std::to_string(nbh) + " x " + std::to_string(nbw) +
                                       " patches of " + std::to_string(p) + " every " + std::to_string(step) +
                                       " do not fit the padded input " + std::to_string(xd[1]) + " x " +
                                       std::to_string(xd[2]));
  return ffi::Error::Success();
}

ffi::Error BinaryConvFwd(ffi::ThreadPool pool, ffi::Buffer<ffi::U8> xp, ffi::Buffer<ffi::F32> w, int64_t patch,
                         int64_t step, int64_t nbh, int64_t nbw, ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = xp.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  if (auto e = CheckPatches(xd, patch, step, nbh, nbw); e.failure()) return e;
  const int64_t m = xd[0] * nbh * nbw, k = patch * patch * xd[3];
  if (wd.size() != 2 || wd[0] != k || yd.size() != 2 || yd[0] != m || yd[1] != wd[1])
    return ffi::Error::InvalidArgument("binary_conv_fwd: expected W [p*p*C, F] and Y [N*nbh*nbw, F]");
  if (m == 0 || wd[1] == 0) return ffi::Error::Success();
  ForwardFromBits(pool, PatchBits(pool, xp.typed_data(), xd[0], xd[1], xd[2], xd[3], patch, step, nbh, nbw), m, k,
                  w.typed_data(), wd[1], y->typed_data());
  return ffi::Error::Success();
}

ffi::Error BinaryConvWeightGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::U8> xp, ffi::Buffer<ffi::F32> g,
                                int64_t patch, int64_t step, int64_t nbh, int64_t nbw,
                                ffi::ResultBuffer<ffi::F32> dw) {
  const auto xd = xp.dimensions(), gd = g.dimensions(), wd = dw->dimensions();
  if (auto e = CheckPatches(xd, patch, step, nbh, nbw); e.failure()) return e;
  const int64_t m = xd[0] * nbh * nbw, k = patch * patch * xd[3];
  if (gd.size() != 2 || gd[0] != m || wd.size() != 2 || wd[0] != k || wd[1] != gd[1])
    return ffi::Error::InvalidArgument("binary_conv_wgrad: expected G [N*nbh*nbw, F] and dW [p*p*C, F]");
  if (k == 0 || gd[1] == 0) return ffi::Error::Success();
  WeightGradFromBits(pool, PatchBits(pool, xp.typed_data(), xd[0], xd[1], xd[2], xd[3], patch, step, nbh, nbw), m,
                     k, g.typed_data(), gd[1], dw->typed_data());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(BinaryDenseFwdHandler, BinaryDenseFwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::U8>>()   // X [M, K], 0 / 1
                                  .Arg<ffi::Buffer<ffi::F32>>()  // W [K, N]
                                  .Ret<ffi::Buffer<ffi::F32>>());  // Y [M, N]

XLA_FFI_DEFINE_HANDLER_SYMBOL(BinaryDenseWeightGradHandler, BinaryDenseWeightGrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::U8>>()   // X [M, K], 0 / 1
                                  .Arg<ffi::Buffer<ffi::F32>>()  // G [M, N]
                                  .Ret<ffi::Buffer<ffi::F32>>());  // dW [K, N]

XLA_FFI_DEFINE_HANDLER_SYMBOL(BinaryConvFwdHandler, BinaryConvFwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::U8>>()   // xp [N, Hp, Wp, C], 0 / 1
                                  .Arg<ffi::Buffer<ffi::F32>>()  // W [p*p*C, F]
                                  .Attr<int64_t>("patch")
                                  .Attr<int64_t>("step")
                                  .Attr<int64_t>("nbh")
                                  .Attr<int64_t>("nbw")
                                  .Ret<ffi::Buffer<ffi::F32>>());  // Y [N*nbh*nbw, F]

XLA_FFI_DEFINE_HANDLER_SYMBOL(BinaryConvWeightGradHandler, BinaryConvWeightGrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::U8>>()   // xp [N, Hp, Wp, C], 0 / 1
                                  .Arg<ffi::Buffer<ffi::F32>>()  // G [N*nbh*nbw, F]
                                  .Attr<int64_t>("patch")
                                  .Attr<int64_t>("step")
                                  .Attr<int64_t>("nbh")
                                  .Attr<int64_t>("nbw")
                                  .Ret<ffi::Buffer<ffi::F32>>());  // dW [p*p*C, F]
