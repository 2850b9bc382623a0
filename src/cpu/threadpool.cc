#include "cpu/threadpool.h"

#include <chrono>
#include <cstdlib>

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
  if (threads <= 0) {
    // RARGEN_THREADS overrides the default (all hardware threads).
    const char* env = std::getenv("RARGEN_THREADS");
    if (env && std::atoi(env) > 0) threads = std::atoi(env);
  }
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  if (threads <= 0) threads = 1;
  nthreads_ = threads;
  for (int i = 1; i < nthreads_; i++) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(sleep_mutex_);
    stop_.store(true);
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
    done_.fetch_add(1, std::memory_order_release);
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Spin briefly (a decode step dispatches ops back to back), then sleep.
    uint64_t g = generation_.load(std::memory_order_acquire);
    if (g == seen || (g & 1) == 0) {
      auto start = std::chrono::steady_clock::now();
      int spins = 0;
      for (;;) {
        g = generation_.load(std::memory_order_acquire);
        if (g != seen && (g & 1)) break;  // an open job we have not served
        if (stop_.load()) return;
        cpu_relax();
        if (++spins % 64 == 0 && std::chrono::steady_clock::now() - start > std::chrono::microseconds(50)) {
          std::unique_lock<std::mutex> lk(sleep_mutex_);
          wake_.wait(lk, [&] {
            uint64_t x = generation_.load(std::memory_order_acquire);
            return stop_.load() || (x != seen && (x & 1));
          });
          start = std::chrono::steady_clock::now();
        }
      }
    }
    seen = g;
    active_.fetch_add(1, std::memory_order_seq_cst);
    if (generation_.load(std::memory_order_seq_cst) == g) {  // still open: the job is valid
      t_in_pool_task = true;
      work(index);
      t_in_pool_task = false;
    }
    active_.fetch_sub(1, std::memory_order_release);
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
  done_.store(0, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lk(sleep_mutex_);
    generation_.fetch_add(1, std::memory_order_seq_cst);  // open (odd)
  }
  wake_.notify_all();
  t_in_pool_task = true;
  work(0);
  t_in_pool_task = false;
  // Wait for tasks other threads are still running (not for idle workers).
  for (int spins = 0; done_.load(std::memory_order_acquire) != ntasks; spins++) {
    if (spins < 2000) cpu_relax();
    else std::this_thread::yield();
  }
  generation_.fetch_add(1, std::memory_order_seq_cst);  // close (even)
  for (int spins = 0; active_.load(std::memory_order_acquire) != 0; spins++) {
    if (spins < 2000) cpu_relax();
    else std::this_thread::yield();
  }
  fn_ = nullptr;
}

ThreadPool& global_pool(int threads) {
  static ThreadPool pool(threads);
  return pool;
}

}  // namespace cpu
}  // namespace rargen
