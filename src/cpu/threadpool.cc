#include "cpu/threadpool.h"

#include <chrono>

namespace rargen {
namespace cpu {

namespace {
thread_local bool t_in_pool_task = false;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}
}  // namespace

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  if (threads <= 0) threads = 1;
  nthreads_ = threads;
  for (int i = 1; i < nthreads_; i++) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(sleep_mutex_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::work(int thread) {
  const auto& fn = *fn_;
  for (;;) {
    int64_t t = next_.fetch_add(1, std::memory_order_relaxed);
    if (t >= ntasks_) break;
    fn(t, thread);
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Spin a little (a decode step dispatches ops back to back), then sleep.
    uint64_t g = generation_.load(std::memory_order_acquire);
    if (g == seen) {
      auto start = std::chrono::steady_clock::now();
      int spins = 0;
      while ((g = generation_.load(std::memory_order_acquire)) == seen) {
        cpu_relax();
        if (++spins % 256 == 0 &&
            std::chrono::steady_clock::now() - start > std::chrono::microseconds(200)) {
          std::unique_lock<std::mutex> lk(sleep_mutex_);
          wake_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen; });
          g = generation_.load(std::memory_order_acquire);
          break;
        }
      }
    }
    seen = g;
    if (stop_.load()) return;
    t_in_pool_task = true;
    work(index);
    t_in_pool_task = false;
    busy_workers_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(int64_t ntasks, const std::function<void(int64_t, int)>& fn) {
  if (ntasks <= 0) return;
  if (nthreads_ == 1 || ntasks == 1 || t_in_pool_task) {
    for (int64_t t = 0; t < ntasks; t++) fn(t, 0);
    return;
  }
  std::lock_guard<std::mutex> guard(dispatch_mutex_);
  fn_ = &fn;
  ntasks_ = ntasks;
  next_.store(0, std::memory_order_relaxed);
  busy_workers_.store(nthreads_ - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lk(sleep_mutex_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  t_in_pool_task = true;
  work(0);
  t_in_pool_task = false;
  while (busy_workers_.load(std::memory_order_acquire) != 0) cpu_relax();
  fn_ = nullptr;
}

ThreadPool& global_pool(int threads) {
  static ThreadPool pool(threads);
  return pool;
}

}  // namespace cpu
}  // namespace rargen
