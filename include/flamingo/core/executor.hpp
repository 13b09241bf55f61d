#pragma once
// Executors: the threads that run data-parallel loops.
//
// An Executor owns a fixed set of threads (its size never changes, so nothing
// can resize it under a loop in flight; to use another count, make another
// executor). Work runs on it through a scope on the calling thread:
//
//   flamingo::Executor ex(4);
//   flamingo::Executor::Scope use(ex);   // this thread's parallel loops now use ex
//   kernels::linear(...);                // splits over ex's 4 threads
//
// Kernels call parallel_for(), which uses the calling thread's current
// executor, or runs serially when there is none. Several user threads may
// share one executor (their loops take turns) or each use their own.
//
// Decoding calls parallel loops thousands of times per token (one per matrix),
// so starting one must cost well under a microsecond: workers spin briefly on a
// generation counter before sleeping on it (std::atomic::wait, a futex on Linux).
// A worker claims its chunk with a compare-and-swap; when the caller finishes its
// own chunk and finds another still unclaimed (that worker is asleep, or the OS
// has not scheduled it), it runs that chunk itself instead of waiting, so a busy
// or oversubscribed machine degrades to serial speed rather than to a stall.
// Inside a chunk, num_threads() is 1 and nested loops run as one chunk on the
// calling thread, whichever thread that is.
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
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
    explicit ThreadPool(int n) { start(n - 1); }
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return int(workers_.size()) + 1; }

    // Runs fn(ctx, i) exactly once for every i in [0, size()): i = 0 on the caller,
    // i >= 1 on worker i, or on the caller if worker i has not claimed it by then.
    void run(void (*fn)(void*, int), void* ctx) {
        if (workers_.empty() || in_worker()) {
            for (int i = 0; i < size(); ++i) fn(ctx, i);
            return;
        }
        std::lock_guard lock(run_mutex_);  // one parallel loop at a time from user threads
        const std::size_t nw = workers_.size();
        const unsigned g = generation_.load(std::memory_order_relaxed) + 1;
        task_fn_ = fn;
        task_ctx_ = ctx;
        for (std::size_t w = 0; w < nw; ++w) slots_[w].state.store(slot_value(g, kOpen), std::memory_order_relaxed);
        generation_.store(g, std::memory_order_release);
        generation_.notify_all();  // a syscall only if some worker sleeps

        // An exception ends nothing early: every chunk still runs or is waited for
        // (workers use ctx until they are done), then the first one is rethrown.
        std::exception_ptr error;
        in_worker() = true;
        guarded(fn, ctx, 0, error);
        for (std::size_t w = 0; w < nw; ++w)  // chunks nobody has started: run them here
            if (claim(w, g)) {
                guarded(fn, ctx, int(w + 1), error);
                slots_[w].state.store(slot_value(g, kDone), std::memory_order_release);
            }
        in_worker() = false;
        for (std::size_t w = 0; w < nw; ++w) {
            for (int spins = 0; slots_[w].state.load(std::memory_order_acquire) != slot_value(g, kDone); ++spins)
                if (spins > 4096) std::this_thread::yield();
            if (slots_[w].error && !error) error = slots_[w].error;
            slots_[w].error = nullptr;
        }
        if (error) std::rethrow_exception(error);
    }

    ~ThreadPool() { stop(); }

private:
    enum : std::uint64_t { kOpen = 0, kClaimed = 1, kDone = 2 };
    // A slot's state carries the generation it belongs to, so a worker that wakes
    // late cannot claim a chunk of a loop that has moved on.
    static std::uint64_t slot_value(unsigned g, std::uint64_t st) { return (std::uint64_t(g) << 2) | st; }
    struct alignas(64) Slot {  // one cache line each: workers do not disturb each other
        std::atomic<std::uint64_t> state{0};
        std::exception_ptr error;  // thrown by the chunk, written before kDone is published
    };

    static void guarded(void (*fn)(void*, int), void* ctx, int i, std::exception_ptr& error) {
        try {
            fn(ctx, i);
        } catch (...) {
            if (!error) error = std::current_exception();
        }
    }

    static bool& in_worker() {
        thread_local bool flag = false;
        return flag;
    }

public:
    // True on a thread that is running a chunk of some parallel loop.
    static bool inside_loop() { return in_worker(); }

private:

    bool claim(std::size_t w, unsigned g) {
        std::uint64_t open = slot_value(g, kOpen);
        return slots_[w].state.compare_exchange_strong(open, slot_value(g, kClaimed), std::memory_order_acq_rel);
    }

    void start(int nworkers) {
        slots_ = std::make_unique<Slot[]>(std::size_t(nworkers));
        // The generation is read here, not in the new thread: a thread that starts
        // late would otherwise miss the stop published before it ran.
        const unsigned seen = generation_.load(std::memory_order_acquire);
        for (int i = 0; i < nworkers; ++i) workers_.emplace_back([this, i, seen] { loop(std::size_t(i), seen); });
    }

    void stop() {
        quit_.store(true);
        generation_.fetch_add(1, std::memory_order_release);
        generation_.notify_all();
        for (auto& t : workers_) t.join();
        workers_.clear();
    }

    void loop(std::size_t w, unsigned seen) {
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
            if (!claim(w, g)) continue;  // the caller took this chunk already
            guarded(task_fn_, task_ctx_, int(w + 1), slots_[w].error);
            slots_[w].state.store(slot_value(g, kDone), std::memory_order_release);
        }
    }

    std::mutex run_mutex_;
    std::vector<std::thread> workers_;
    std::unique_ptr<Slot[]> slots_;
    alignas(64) std::atomic<unsigned> generation_{0};
    std::atomic<bool> quit_{false};
    void (*task_fn_)(void*, int) = nullptr;
    void* task_ctx_ = nullptr;
};

// The executor whose threads this thread's parallel loops use (null: serial).
inline thread_local ThreadPool* current_pool = nullptr;

}  // namespace detail

class Executor {
public:
    // The machine's hardware threads (at least 1).
    static int hardware_threads() {
        unsigned hc = std::thread::hardware_concurrency();
        return int(hc ? hc : 1);
    }

    explicit Executor(int threads = hardware_threads()) : pool_(checked(threads)) {}
    Executor(const Executor&) = delete;
    Executor& operator=(const Executor&) = delete;

    int threads() const { return pool_.size(); }

    // Makes `ex` the calling thread's executor until the scope ends (scopes nest).
    class Scope {
    public:
        explicit Scope(Executor& ex) : saved_(detail::current_pool) { detail::current_pool = &ex.pool_; }
        Scope(const Scope&) = delete;
        Scope& operator=(const Scope&) = delete;
        ~Scope() { detail::current_pool = saved_; }

    private:
        detail::ThreadPool* saved_;
    };

private:
    static int checked(int n) {
        check(n >= 1 && n <= 4096, "thread count must be between 1 and 4096, got ", n);
        return n;
    }
    detail::ThreadPool pool_;
};

// Threads of the calling thread's current executor (1 when there is none, and
// inside a chunk of a parallel loop).
inline int num_threads() {
    return detail::current_pool && !detail::ThreadPool::inside_loop() ? detail::current_pool->size() : 1;
}

// Calls f(begin, end) on disjoint chunks covering [0, n), one chunk per thread
// of the current executor, chunk boundaries multiples of `align` (the last
// chunk takes the remainder). Chunk i normally runs on executor thread i (the
// caller is thread 0); a chunk whose thread has not started it when the caller
// is done with its own runs on the caller. Without an executor: one chunk, here.
template <class F>
void parallel_for(std::size_t n, F&& f, std::size_t align = 1) {
    detail::ThreadPool* pool = detail::current_pool;
    int nt = num_threads();
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
    pool->run(
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
