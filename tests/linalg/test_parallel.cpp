// The thread pool behind parallel_for: coverage, chunking, nesting, errors, and
// many back-to-back loops (where a worker may or may not claim its chunk in time).
#include <doctest/doctest.h>

#include <atomic>
#include <cstddef>
#include <stdexcept>
#include <thread>
#include <vector>

#include <flamingo/core/parallel.hpp>

namespace {

class ThreadCount {
public:
    explicit ThreadCount(int n) : saved_(flamingo::num_threads()) { flamingo::set_num_threads(n); }
    ~ThreadCount() { flamingo::set_num_threads(saved_); }

private:
    int saved_;
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
            REQUIRE(calls == 2);  // one chunk per thread, both on this thread
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

TEST_CASE("resizing between loops and loops from two user threads") {
    ThreadCount keep(flamingo::num_threads());
    for (int n : {1, 3, 2, 4, 2}) {
        flamingo::set_num_threads(n);
        check_cover(257, 4);
    }
    CHECK_THROWS(flamingo::set_num_threads(0));

    ThreadCount tc(2);
    std::atomic<long> total{0};
    auto user = [&] {
        for (int it = 0; it < 2000; ++it)
            flamingo::parallel_for(10, [&](std::size_t b, std::size_t e) { total += long(e - b); });
    };
    std::thread a(user), b(user);
    a.join();
    b.join();
    CHECK(total.load() == 2L * 2000 * 10);
}
