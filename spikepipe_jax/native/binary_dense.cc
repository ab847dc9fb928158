// A dense layer whose input is spikes (exact 0/1), for XLA:CPU (XLA FFI custom calls).
//
// For spikes X in {0, 1}^[M, K] (uint8) and weights W [K, N]:
//   forward          Y = X W,     Y[m, n]  = sum over k with X[m, k] = 1 of W[k, n]
//   weight gradient  dW = X^T G,  dW[k, n] = sum over m with X[m, k] = 1 of G[m, n]
// Both are sums of the rows the spikes select: (spike density) x the adds of the dense
// product, and no multiplies. Outputs are computed in column tiles of up to 64 (8 vectors of 8
// floats), each tile's operand packed contiguously first (rows of W or G are n floats apart,
// so a block of them would take one TLB entry per row). Forward: each row's spikes are listed
// (k ascending); per chunk of 256 rows and tile, K is walked in blocks whose packed slice of W
// stays in L1 while a row's sums sit in registers; chunks of rows go to the threads of XLA's
// intra-op pool. Weight gradient: per chunk of 96 rows each column's spiking rows are listed
// (m ascending); per tile the chunk's packed slice of G stays in L1 while a row of dW's tile
// collects it in registers; dW's rows go to the threads. Every output element is summed in one
// fixed order (k ascending in Y, m ascending in dW), whatever the thread count. Python side: spikepipe_jax/snn/layers.py (binary_dense).

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kLanes = 8;          // floats per vector
constexpr int64_t kTileVectors = 8;    // vectors per column tile
constexpr int64_t kTile = kLanes * kTileVectors;
constexpr int64_t kL1Floats = 6144;    // forward: a block of packed W rows kept in L1 (24 KiB)
constexpr int64_t kRowChunk = 256;     // forward: rows whose sums are collected together
constexpr int64_t kGradChunk = 96;     // weight gradient: rows of G per chunk (96 x 64 floats = 24 KiB)

typedef float Vec __attribute__((vector_size(32)));
typedef float UVec __attribute__((vector_size(32), aligned(4)));  // for unaligned access

inline Vec Load(const float* p) { return *reinterpret_cast<const UVec*>(p); }
inline void Store(float* p, Vec v) { *reinterpret_cast<UVec*>(p) = v; }

inline int64_t NumTiles(int64_t n) { return (n + kTile - 1) / kTile; }
inline int64_t TileColumns(int64_t n, int64_t t) { return std::min(n, (t + 1) * kTile) - t * kTile; }
inline int64_t TileVectors(int64_t n, int64_t t) { return (TileColumns(n, t) + kLanes - 1) / kLanes; }

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

// Row r's spikes are col[start[r]] .. col[start[r + 1] - 1], ascending.
struct Spikes {
  std::vector<int64_t> start;
  std::vector<int32_t> col;
};

Spikes ListSpikes(ffi::ThreadPool& pool, const uint8_t* x, int64_t m, int64_t k) {
  Spikes s;
  s.start.assign(m + 1, 0);
  const int64_t parts = spikepipe::NumBlocks(pool, m);
  int64_t* start = s.start.data();
  spikepipe::ParallelBlocks(pool, m, parts, [=](int64_t, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = x + r * k;
      int64_t c = 0;
      for (int64_t j = 0; j < k; ++j) c += row[j] != 0;
      start[r + 1] = c;
    }
  });
  for (int64_t r = 0; r < m; ++r) start[r + 1] += start[r];
  s.col.resize(std::max<int64_t>(1, start[m]));
  int32_t* col = s.col.data();
  spikepipe::ParallelBlocks(pool, m, parts, [=](int64_t, int64_t r0, int64_t r1) {
    std::vector<int32_t> buf(k + 1);  // written without branches, then copied
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* row = x + r * k;
      int64_t c = 0;
      for (int64_t j = 0; j < k; ++j) {
        buf[c] = static_cast<int32_t>(j);
        c += row[j] != 0;
      }
      std::copy(buf.begin(), buf.begin() + c, col + start[r]);
    }
  });
  return s;
}

// Per chunk of kGradChunk rows, column j's spiking rows: rows[offset[c (k + 1) + j] ..
// offset[c (k + 1) + j + 1]), ascending (built from the row lists).
struct ColumnSpikes {
  std::vector<int64_t> offset;
  std::vector<int32_t> rows;
};

ColumnSpikes ListColumnSpikes(ffi::ThreadPool& pool, const Spikes& s, int64_t m, int64_t k) {
  ColumnSpikes cs;
  const int64_t chunks = (m + kGradChunk - 1) / kGradChunk;
  cs.offset.assign(chunks * (k + 1), 0);
  cs.rows.resize(std::max<int64_t>(1, s.start[m]));
  int64_t* off = cs.offset.data();
  int32_t* rows = cs.rows.data();
  const int64_t* start = s.start.data();
  const int32_t* col = s.col.data();
  spikepipe::ParallelBlocks(pool, chunks, spikepipe::NumBlocks(pool, chunks), [=](int64_t, int64_t c0, int64_t c1) {
    std::vector<int64_t> pos(k + 1);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t m0 = c * kGradChunk, m1 = std::min(m, m0 + kGradChunk);
      int64_t* o = off + c * (k + 1);
      for (int64_t e = start[m0]; e < start[m1]; ++e) ++o[col[e] + 1];
      o[0] = start[m0];  // the chunk's spikes fill rows[start[m0] .. start[m1])
      for (int64_t j = 1; j <= k; ++j) o[j] += o[j - 1];
      std::copy(o, o + k + 1, pos.begin());
      for (int64_t r = m0; r < m1; ++r)
        for (int64_t e = start[r]; e < start[r + 1]; ++e) rows[pos[col[e]]++] = static_cast<int32_t>(r);
    }
  });
  return cs;
}

// Forward, rows [r0, r1), one tile: wt is the tile's packed W [k][8 NV], yb the rows' sums
// [r1 - r0][8 NV]. K is walked in blocks of kb rows of wt (in L1); a row's sums stay in yb
// between blocks, and a cursor per row remembers how far its (sorted) list got.
template <int NV>
void ForwardTile(const Spikes& s, const float* __restrict__ wt, float* __restrict__ yb, int64_t r0, int64_t r1,
                 int64_t k, int64_t* cursor) {
  constexpr int64_t W = kLanes * NV;
  const int64_t kb = std::max<int64_t>(16, kL1Floats / W);
  const int64_t* start = s.start.data();
  const int32_t* col = s.col.data();
  for (int64_t r = r0; r < r1; ++r) cursor[r - r0] = start[r];
  for (int64_t k0 = 0; k0 < k; k0 += kb) {
    const int32_t k1 = static_cast<int32_t>(std::min(k, k0 + kb));
    for (int64_t r = r0; r < r1; ++r) {
      float* yr = yb + (r - r0) * W;
      Vec acc[NV];
      for (int v = 0; v < NV; ++v) acc[v] = k0 == 0 ? Vec{} : Load(yr + kLanes * v);
      int64_t j = cursor[r - r0];
      const int64_t end = start[r + 1];
      for (; j < end && col[j] < k1; ++j) {
        const float* wr = wt + static_cast<int64_t>(col[j]) * W;
        for (int v = 0; v < NV; ++v) acc[v] += Load(wr + kLanes * v);
      }
      cursor[r - r0] = j;
      for (int v = 0; v < NV; ++v) Store(yr + kLanes * v, acc[v]);
    }
  }
}

// Weight gradient, dW's rows [j0, j1), one tile, one chunk of rows starting at m0: gb is the
// chunk's packed G [kGradChunk][8 NV], dwb the running sums [j1 - j0][8 NV].
template <int NV>
void WeightGradChunk(const int64_t* __restrict__ offset, const int32_t* __restrict__ rows,
                     const float* __restrict__ gb, int64_t m0, float* __restrict__ dwb, int64_t j0, int64_t j1) {
  constexpr int64_t W = kLanes * NV;
  for (int64_t j = j0; j < j1; ++j) {
    float* d = dwb + (j - j0) * W;
    Vec acc[NV];
    for (int v = 0; v < NV; ++v) acc[v] = Load(d + kLanes * v);
    for (int64_t e = offset[j]; e < offset[j + 1]; ++e) {
      const float* gr = gb + (static_cast<int64_t>(rows[e]) - m0) * W;
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

ffi::Error BinaryDenseFwd(ffi::ThreadPool pool, ffi::Buffer<ffi::U8> x, ffi::Buffer<ffi::F32> w,
                          ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  if (xd.size() != 2 || wd.size() != 2 || yd.size() != 2 || xd[1] != wd[0] || yd[0] != xd[0] || yd[1] != wd[1])
    return ffi::Error::InvalidArgument("binary_dense_fwd: expected X [M, K], W [K, N] and Y [M, N]");
  const int64_t m = xd[0], k = xd[1], n = wd[1];
  if (m == 0 || n == 0) return ffi::Error::Success();
  const Spikes s = ListSpikes(pool, x.typed_data(), m, k);
  const float* wp = w.typed_data();
  float* yp = y->typed_data();
  const int64_t tiles = NumTiles(n);
  std::vector<float> packed(std::max<int64_t>(1, tiles * k * kTile));  // tile t: [k][8 nv] at t k kTile
  float* wt = packed.data();
  spikepipe::ParallelBlocks(pool, tiles, spikepipe::NumBlocks(pool, tiles), [=](int64_t, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) PackRows(wp, n, 0, k, t * kTile, TileColumns(n, t), TileVectors(n, t), wt + t * k * kTile);
  });
  const int64_t chunks = (m + kRowChunk - 1) / kRowChunk;
  spikepipe::ParallelBlocks(pool, chunks, spikepipe::NumBlocks(pool, chunks), [&](int64_t, int64_t c0, int64_t c1) {
    std::vector<int64_t> cursor(kRowChunk);
    std::vector<float> sums(kRowChunk * kTile);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t r0 = c * kRowChunk, r1 = std::min(m, r0 + kRowChunk);
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t nv = TileVectors(n, t);
        const float* tile = wt + t * k * kTile;
#define SPIKEPIPE_FWD(NV) ForwardTile<NV>(s, tile, sums.data(), r0, r1, k, cursor.data())
        SPIKEPIPE_DISPATCH_NV(nv, SPIKEPIPE_FWD)
#undef SPIKEPIPE_FWD
        UnpackRows(sums.data(), nv, r0, r1, yp, n, t * kTile, TileColumns(n, t));
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error BinaryDenseWeightGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::U8> x, ffi::Buffer<ffi::F32> g,
                                 ffi::ResultBuffer<ffi::F32> dw) {
  const auto xd = x.dimensions(), gd = g.dimensions(), wd = dw->dimensions();
  if (xd.size() != 2 || gd.size() != 2 || wd.size() != 2 || gd[0] != xd[0] || wd[0] != xd[1] || wd[1] != gd[1])
    return ffi::Error::InvalidArgument("binary_dense_wgrad: expected X [M, K], G [M, N] and dW [K, N]");
  const int64_t m = xd[0], k = xd[1], n = gd[1];
  if (k == 0 || n == 0) return ffi::Error::Success();
  const float* gp = g.typed_data();
  float* dwp = dw->typed_data();
  if (m == 0) {
    std::fill(dwp, dwp + k * n, 0.f);
    return ffi::Error::Success();
  }
  const Spikes s = ListSpikes(pool, x.typed_data(), m, k);
  const ColumnSpikes cs = ListColumnSpikes(pool, s, m, k);
  const int64_t tiles = NumTiles(n), chunks = (m + kGradChunk - 1) / kGradChunk;
  // dW's rows split over the pool: each thread owns its rows, so no partial sums to add
  spikepipe::ParallelBlocks(pool, k, spikepipe::NumBlocks(pool, k), [&](int64_t, int64_t j0, int64_t j1) {
    std::vector<float> gb(kGradChunk * kTile), sums((j1 - j0) * kTile);
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t nv = TileVectors(n, t), n0 = t * kTile, cols = TileColumns(n, t);
      std::fill(sums.begin(), sums.end(), 0.f);
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t m0 = c * kGradChunk, m1 = std::min(m, m0 + kGradChunk);
        PackRows(gp, n, m0, m1, n0, cols, nv, gb.data());
        const int64_t* offset = cs.offset.data() + c * (k + 1);
#define SPIKEPIPE_WGRAD(NV) WeightGradChunk<NV>(offset, cs.rows.data(), gb.data(), m0, sums.data(), j0, j1)
        SPIKEPIPE_DISPATCH_NV(nv, SPIKEPIPE_WGRAD)
#undef SPIKEPIPE_WGRAD
      }
      UnpackRows(sums.data(), nv, j0, j1, dwp, n, n0, cols);
    }
  });
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
