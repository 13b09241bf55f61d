#pragma once
// Helpers shared by the kernel tests: seeded random data and a scoped thread count.
#include <cstddef>
#include <random>
#include <vector>

#include <flamingo/core/parallel.hpp>

namespace ktest {

inline std::vector<float> randn(std::size_t n, unsigned seed, float mean = 0.0f, float stddev = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(mean, stddev);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

// Sets the pool's thread count for a scope and restores it afterwards.
class Threads {
public:
    explicit Threads(int n) : saved_(flamingo::num_threads()) { flamingo::set_num_threads(n); }
    ~Threads() { flamingo::set_num_threads(saved_); }
    Threads(const Threads&) = delete;
    Threads& operator=(const Threads&) = delete;

private:
    int saved_;
};

constexpr float kSentinel = -12345.0f;

}  // namespace ktest
