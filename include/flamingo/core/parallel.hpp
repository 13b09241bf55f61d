#pragma once
// A small persistent thread pool for data-parallel loops.
//
// Decoding calls parallel loops thousands of times per token (one per matrix),
// so waking the workers must cost microseconds: workers spin briefly on a
// generation counter before sleeping on it (std::atomic::wait, a futex on Linux).
// Nested calls run serially on the calling thread.
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include "error.hpp"

namespace flamingo {

namespace detail {

class ThreadPool {
public:
    static ThreadPool& instance() {
        static ThreadPool pool;
        return pool;
    }

    int size() const { return int(workers_.size()) + 1; }

    void resize(int n) {
        check(n >= 1, "thread count must be at least 1, got ", n);
        stop();
        start(n - 1);
    }

    // Runs fn(ctx, worker_index) for worker_index in [0, size()); the caller is worker 0.
    void run(void (*fn)(void*, int), void* ctx) {
        if (workers_.empty() || in_worker()) {
            for (int i = 0; i < size(); ++i) fn(ctx, i);
            return;
        }
        std::lock_guard lock(run_mutex_);  // one parallel loop at a time from user threads
        task_fn_ = fn;
        task_ctx_ = ctx;
        pending_.store(int(workers_.size()), std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_release);
        generation_.notify_all();
        in_worker() = true;
        fn(ctx, 0);
        in_worker() = false;
        for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins)
            if (spins > 4096) std::this_thread::yield();
    }

    ~ThreadPool() { stop(); }

private:
    ThreadPool() {
        unsigned hc = std::thread::hardware_concurrency();
        start(int(hc ? hc : 1) - 1);
    }

    static bool& in_worker() {
        thread_local bool flag = false;
        return flag;
    }

    void start(int nworkers) {
        quit_.store(false);
        // The generation is read here, not in the new thread: a thread that starts
        // late would otherwise miss a task (or the stop) published before it ran.
        const unsigned seen = generation_.load(std::memory_order_acquire);
        for (int i = 0; i < nworkers; ++i) workers_.emplace_back([this, i, seen] { loop(i + 1, seen); });
    }

    void stop() {
        if (workers_.empty()) return;
        quit_.store(true);
        generation_.fetch_add(1, std::memory_order_release);
        generation_.notify_all();
        for (auto& t : workers_) t.join();
        workers_.clear();
    }

    void loop(int index, unsigned seen) {
        in_worker() = true;
        for (;;) {
            unsigned g;
            int spins = 0;
            while ((g = generation_.load(std::memory_order_acquire)) == seen) {
                if (++spins < 20000) continue;  // ~tens of microseconds before sleeping
                generation_.wait(seen, std::memory_order_acquire);
            }
            seen = g;
            if (quit_.load()) return;
            task_fn_(task_ctx_, index);
            pending_.fetch_sub(1, std::memory_order_acq_rel);
        }
    }

    std::mutex run_mutex_;
    std::vector<std::thread> workers_;
    std::atomic<unsigned> generation_{0};
    std::atomic<int> pending_{0};
    std::atomic<bool> quit_{false};
    void (*task_fn_)(void*, int) = nullptr;
    void* task_ctx_ = nullptr;
};

}  // namespace detail

// Number of threads parallel loops use (default: all cores).
inline int num_threads() { return detail::ThreadPool::instance().size(); }
inline void set_num_threads(int n) { detail::ThreadPool::instance().resize(n); }

// Calls f(begin, end) on disjoint chunks covering [0, n), one chunk per thread,
// chunk boundaries multiples of `align` (the last chunk takes the remainder).
template <class F>
void parallel_for(std::size_t n, F&& f, std::size_t align = 1) {
    auto& pool = detail::ThreadPool::instance();
    int nt = pool.size();
    std::size_t units = (n + align - 1) / align;
    if (nt == 1 || units <= 1) {
        if (n) f(std::size_t(0), n);
        return;
    }
    nt = int(std::min<std::size_t>(std::size_t(nt), units));
    struct Ctx {
        std::remove_reference_t<F>* f;
        std::size_t n, units, align;
        int nt;
    } ctx{&f, n, units, align, nt};
    pool.run(
        [](void* p, int i) {
            auto& c = *static_cast<Ctx*>(p);
            if (i >= c.nt) return;
            std::size_t b = std::min(c.n, (c.units * std::size_t(i) / std::size_t(c.nt)) * c.align);
            std::size_t e = std::min(c.n, (c.units * std::size_t(i + 1) / std::size_t(c.nt)) * c.align);
            if (b < e) (*c.f)(b, e);
        },
        &ctx);
}

}  // namespace flamingo
