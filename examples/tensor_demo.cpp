// Placeholder main example until the model lands: shows the thread pool at work.
#include <cstdio>
#include <vector>

#include <flamingo/core/dtype.hpp>
#include <flamingo/core/parallel.hpp>

int main() {
    std::vector<float> x(1 << 20, 1.5f);
    std::vector<double> partial(flamingo::num_threads(), 0.0);
    flamingo::parallel_for(x.size(), [&](std::size_t b, std::size_t e) {
        double s = 0;
        for (std::size_t i = b; i < e; ++i) s += x[i];
        partial[b * partial.size() / x.size()] += s;
    });
    double total = 0;
    for (double p : partial) total += p;
    std::printf("threads=%d sum=%.1f bf16(pi)=%g\n", flamingo::num_threads(), total, float(flamingo::bf16(3.14159265f)));
}
