// What the native handlers share: XLA's FFI API, the export macro, and a
// parallel loop on XLA's own intra-op thread pool.
//
// The loop: the calling thread and up to (pool size - 1) tasks scheduled on
// XLA's pool (ffi::ThreadPool, the Eigen pool of XLA:CPU) claim chunks from an
// atomic counter. The caller waits only for chunks that were claimed (they are
// being run), so it never waits on a task that has not started: tasks that
// start late find no chunk left and return. No OpenMP: no second thread pool to
// oversubscribe the cores XLA already uses.
#ifndef XCEPTION_JAX_NATIVE_COMMON_H_
#define XCEPTION_JAX_NATIVE_COMMON_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// The library is built with -fvisibility=hidden; only the handlers (and the
// BLAS hook of gemm_cpu.cc) are exported.
#define XCEPTION_JAX_EXPORT __attribute__((visibility("default")))

namespace xception_jax_native {

// ---------------------------------------------------------------------------
// Parallel loop over [0, num_chunks) on XLA's thread pool.

struct LoopState {
  std::function<void(int64_t)> body;
  int64_t num_chunks = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::mutex mu;
  std::condition_variable cv;
};

inline void RunChunks(LoopState& state) {
  for (;;) {
    const int64_t chunk = state.next.fetch_add(1);
    if (chunk >= state.num_chunks) return;
    state.body(chunk);
    if (state.done.fetch_add(1) + 1 == state.num_chunks) {
      std::lock_guard<std::mutex> lock(state.mu);
      state.cv.notify_all();
    }
  }
}

// $XCEPTION_JAX_NATIVE_THREADS caps the threads a call uses (1: the calling
// thread alone); unset or 0: the pool's size.
inline int64_t MaxThreads() {
  static const int64_t max_threads = [] {
    const char* value = std::getenv("XCEPTION_JAX_NATIVE_THREADS");
    return value ? std::max<int64_t>(0, std::atoll(value)) : 0;
  }();
  return max_threads;
}

inline void ParallelFor(ffi::ThreadPool& pool, int64_t num_chunks,
                        std::function<void(int64_t)> body) {
  int64_t threads = num_chunks > 1 ? pool.num_threads() : 1;
  if (MaxThreads() > 0) threads = std::min(threads, MaxThreads());
  if (threads <= 1) {
    for (int64_t chunk = 0; chunk < num_chunks; ++chunk) body(chunk);
    return;
  }
  auto state = std::make_shared<LoopState>();
  state->body = std::move(body);
  state->num_chunks = num_chunks;
  const int64_t helpers = std::min(threads - 1, num_chunks - 1);
  for (int64_t t = 0; t < helpers; ++t) {
    pool.Schedule([state] { RunChunks(*state); });
  }
  RunChunks(*state);
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->done.load() == state->num_chunks; });
}

}  // namespace xception_jax_native

#endif  // XCEPTION_JAX_NATIVE_COMMON_H_
