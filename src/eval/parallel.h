// A tiny task runner for src/eval/: Eigen runs single-threaded without OpenMP, and the
// metric loops are few and long, so one std::thread per worker per call is cheap enough.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace rargen {
namespace eval {

inline int resolve_threads(int threads) {
  if (threads > 0) return threads;
  unsigned h = std::thread::hardware_concurrency();
  return h ? static_cast<int>(h) : 1;
}

// Calls fn(task) for every task in [0, ntasks), handed out dynamically to up to
// `threads` threads (the caller is one of them). The first exception is rethrown.
template <class F>
void run_tasks(int threads, int64_t ntasks, F&& fn) {
  if (ntasks <= 0) return;
  const int nt = static_cast<int>(std::min<int64_t>(resolve_threads(threads), ntasks));
  std::atomic<int64_t> next{0};
  std::exception_ptr err;
  std::mutex err_mu;
  auto worker = [&] {
    for (;;) {
      int64_t t = next.fetch_add(1);
      if (t >= ntasks) return;
      try {
        fn(t);
      } catch (...) {
        std::lock_guard<std::mutex> lk(err_mu);
        if (!err) err = std::current_exception();
        next.store(ntasks);
      }
    }
  };
  std::vector<std::thread> ts;
  for (int i = 1; i < nt; i++) ts.emplace_back(worker);
  worker();
  for (auto& t : ts) t.join();
  if (err) std::rethrow_exception(err);
}

}  // namespace eval
}  // namespace rargen
