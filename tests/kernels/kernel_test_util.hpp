#pragma once
// Helpers shared by the kernel tests: seeded random data and a scoped thread count.
#include <cstddef>
#include <random>
#include <vector>

#include <flamingo/core/executor.hpp>

namespace ktest {

inline std::vector<float> randn(std::size_t n, unsigned seed, float mean = 0.0f, float stddev = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(mean, stddev);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

// An executor of n threads for this thread's parallel loops, for one scope.
class Threads {
public:
    explicit Threads(int n) : ex_(n) {}

private:
    flamingo::Executor ex_;
    flamingo::Executor::Scope use_{ex_};
};

constexpr float kSentinel = -12345.0f;

}  // namespace ktest
