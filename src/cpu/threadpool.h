// A small persistent thread pool for the CPU backend.
//
// Why not std::thread per op or OpenMP: a KV-cached decode step issues a few hundred
// small ops (24 blocks x ~10 ops), so dispatch latency matters more than anything;
// workers spin briefly on an atomic generation counter before sleeping, and the
// calling thread takes a share of the work itself. One pool is shared by every model
// on the CPU backend; concurrent callers (two models on two worker threads) are
// serialised per op by a mutex, and a call made from inside a task runs inline.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace rargen {
namespace cpu {

class ThreadPool {
 public:
  // threads: total threads including the caller; 0 = $RARGEN_THREADS if set, else
  // the hardware concurrency.
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return nthreads_; }

  // Calls fn(task, thread_index) for every task in [0, ntasks); returns when all ran.
  // Tasks are handed out dynamically (an atomic counter), so uneven tasks balance.
  void run(int64_t ntasks, const std::function<void(int64_t task, int thread)>& fn);

  // Splits [0, n) into at most size() contiguous ranges of at least `grain` items
  // and calls fn(begin, end) on each; runs inline when n <= grain.
  template <class F>
  void parallel_for(int64_t n, int64_t grain, F&& fn) {
    if (n <= 0) return;
    int64_t chunks = std::min<int64_t>(nthreads_, (n + std::max<int64_t>(grain, 1) - 1) / std::max<int64_t>(grain, 1));
    if (chunks <= 1) {
      fn(int64_t(0), n);
      return;
    }
    run(chunks, [&](int64_t c, int) {
      int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
      if (b < e) fn(b, e);
    });
  }

 private:
  void worker_loop(int index);
  void work(int thread);

  int nthreads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex dispatch_mutex_;  // one run() at a time

  // The current job. generation_ goes up by one when a job opens and again when it
  // closes; a worker touches the job only after registering in active_ and seeing
  // the generation it woke for still current, so a late (descheduled) worker never
  // holds the caller up: the caller waits for the tasks to be done, not for every
  // worker to check in. That matters on a loaded machine.
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t ntasks_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int64_t> done_{0};
  std::atomic<int> active_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};

  std::mutex sleep_mutex_;
  std::condition_variable wake_;
};

// The process-wide pool used by the CPU backend.
ThreadPool& global_pool(int threads = 0);

}  // namespace cpu
}  // namespace rargen
