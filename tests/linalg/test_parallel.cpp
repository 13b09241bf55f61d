// The thread pool behind parallel_for: coverage, chunking, nesting, errors, and
// many back-to-back loops (where a worker may or may not claim its chunk in time).
#include <doctest/doctest.h>

#include <atomic>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include <flamingo/core/executor.hpp>
#include <flamingo/core/error.hpp>

namespace {

class ThreadCount {  // an executor of n threads for one scope
public:
    explicit ThreadCount(int n) : ex_(n) {}

private:
    flamingo::Executor ex_;
    flamingo::Executor::Scope use_{ex_};
};

// Runs one parallel_for and checks that its chunks are disjoint, aligned, at most
// one per thread, and cover [0, n) exactly once.
void check_cover(std::size_t n, std::size_t align) {
    std::vector<std::atomic<int>> hits(n);
    std::atomic<int> calls{0};
    std::atomic<bool> misaligned{false};
    flamingo::parallel_for(
        n,
        [&](std::size_t b, std::size_t e) {
            ++calls;
            if (b % align != 0 || (e != n && e % align != 0) || b >= e) misaligned = true;
            for (std::size_t i = b; i < e; ++i) ++hits[i];
        },
        align);
    for (std::size_t i = 0; i < n; ++i) REQUIRE(hits[i].load() == 1);
    CHECK(calls.load() <= flamingo::num_threads());
    CHECK(!misaligned.load());
}

}  // namespace

TEST_CASE("parallel_for covers the range once in aligned chunks") {
    for (int threads : {1, 2, 3, 4}) {
        ThreadCount tc(threads);
        CHECK(flamingo::num_threads() == threads);
        for (std::size_t n : {0, 1, 2, 3, 5, 16, 17, 100, 1000})
            for (std::size_t align : {1, 3, 16}) check_cover(n, align);
    }
}

TEST_CASE("many back-to-back loops, some too short for the workers to join") {
    for (int threads : {2, 3}) {
        ThreadCount tc(threads);
        std::atomic<long> total{0};
        for (int it = 0; it < 20000; ++it)
            flamingo::parallel_for(8, [&](std::size_t b, std::size_t e) { total += long(e - b); });
        CHECK(total.load() == 8L * 20000);
        for (int it = 0; it < 200; ++it) check_cover(1000, 1);
    }
}

TEST_CASE("nested loops run serially and still cover their range") {
    ThreadCount tc(2);
    std::vector<std::atomic<int>> hits(64 * 50);
    flamingo::parallel_for(64, [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) {
            int calls = 0;
            flamingo::parallel_for(50, [&](std::size_t b2, std::size_t e2) {
                ++calls;
                for (std::size_t j = b2; j < e2; ++j) ++hits[i * 50 + j];
            });
            REQUIRE(calls == 1);  // one chunk, on whichever thread runs the outer one
            REQUIRE(flamingo::num_threads() == 1);
        }
    });
    for (auto& h : hits) REQUIRE(h.load() == 1);
}

TEST_CASE("an exception in any chunk reaches the caller and the pool keeps working") {
    ThreadCount tc(2);
    for (std::size_t bad : {0, 1}) {  // thrown by the caller's chunk, then by the worker's
        std::atomic<int> ran{0};
        CHECK_THROWS_AS(flamingo::parallel_for(2,
                                               [&](std::size_t b, std::size_t) {
                                                   ++ran;
                                                   if (b == bad) throw std::runtime_error("chunk failed");
                                               }),
                        std::runtime_error);
        CHECK(ran.load() == 2);  // the other chunk still ran to completion
        check_cover(100, 1);
    }
}

TEST_CASE("executors of any size, one after another and nested") {
    for (int n : {1, 3, 2, 4, 2}) {
        ThreadCount tc(n);
        CHECK(flamingo::num_threads() == n);
        check_cover(257, 4);
    }
    std::thread([] {  // a thread without an executor runs its loops serially
        CHECK(flamingo::num_threads() == 1);
        check_cover(257, 4);
    }).join();
    CHECK_THROWS_AS(flamingo::Executor(0), flamingo::Error);
    ThreadCount outer(3);
    {
        ThreadCount inner(2);
        CHECK(flamingo::num_threads() == 2);
    }
    CHECK(flamingo::num_threads() == 3);  // the outer scope's executor again
}

TEST_CASE("loops from two user threads, on one shared executor and on their own") {
    flamingo::Executor shared(2);
    std::atomic<long> total{0};
    auto user = [&](flamingo::Executor* ex) {
        std::unique_ptr<flamingo::Executor> own;
        if (!ex) ex = (own = std::make_unique<flamingo::Executor>(2)).get();
        flamingo::Executor::Scope use(*ex);
        for (int it = 0; it < 2000; ++it)
            flamingo::parallel_for(10, [&](std::size_t b, std::size_t e) { total += long(e - b); });
    };
    for (bool share : {true, false}) {
        total = 0;
        std::thread a(user, share ? &shared : nullptr), b(user, share ? &shared : nullptr);
        a.join();
        b.join();
        CHECK(total.load() == 2L * 2000 * 10);
    }
}
