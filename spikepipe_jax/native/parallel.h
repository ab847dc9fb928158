// Splitting a kernel's work over XLA's intra-op thread pool (shared by the native kernels).
#ifndef SPIKEPIPE_NATIVE_PARALLEL_H_
#define SPIKEPIPE_NATIVE_PARALLEL_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace spikepipe {

// Runs body(block, r0, r1) over [0, rows) in `parts` contiguous blocks: block 0 on the calling
// thread, the others offered to the pool. A block is run by whoever claims it first, so after
// its own block the calling thread runs every block no pool thread has started (the call never
// waits on a busy pool), then waits for the blocks running elsewhere. The claim flags are
// shared with the queued closures, which may start after the call has returned: they then find
// their block claimed and do nothing.
template <typename Body>
void ParallelBlocks(xla::ffi::ThreadPool& pool, int64_t rows, int64_t parts, Body body) {
  struct Claims {
    explicit Claims(int64_t n) : flags(new std::atomic<bool>[n]) {
      for (int64_t i = 0; i < n; ++i) flags[i].store(false, std::memory_order_relaxed);
    }
    std::unique_ptr<std::atomic<bool>[]> flags;
    std::atomic<int64_t> running{0};
  };
  auto claims = std::make_shared<Claims>(parts);
  const Body* shared_body = &body;
  auto run = [rows, parts, shared_body](Claims& c, int64_t i) {
    if (c.flags[i].exchange(true, std::memory_order_acq_rel)) return false;
    (*shared_body)(i, rows * i / parts, rows * (i + 1) / parts);
    return true;
  };
  for (int64_t i = 1; i < parts; ++i)
    pool.Schedule([claims, run, i] {
      claims->running.fetch_add(1, std::memory_order_acq_rel);
      if (!claims->flags[i].load(std::memory_order_acquire)) run(*claims, i);
      claims->running.fetch_sub(1, std::memory_order_acq_rel);
    });
  body(0, 0, rows / parts);
  for (int64_t i = 1; i < parts; ++i) run(*claims, i);
  while (claims->running.load(std::memory_order_acquire) > 0) std::this_thread::yield();
}

inline int64_t NumBlocks(xla::ffi::ThreadPool& pool, int64_t rows) {
  return std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), rows));
}

}  // namespace spikepipe

#endif  // SPIKEPIPE_NATIVE_PARALLEL_H_
