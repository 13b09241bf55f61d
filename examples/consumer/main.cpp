// Uses the library as a downstream project would: one include, one target.
#include <cstdio>

#include <flamingo/tensor.hpp>

int main() {
    flamingo::Tensor<float, flamingo::extents<2, 3>> a;
    for (int i = 0; i < 6; ++i) a.data()[i] = float(i);
    flamingo::Tensor<float, flamingo::extents<2, 3>> b(a * 2.0f + 1.0f);
    float total = 0;
    for (float r : {flamingo::sum(b)(0), flamingo::sum(b)(1)}) total += r;
    std::printf("%g\n", total);
    return total == 36.0f ? 0 : 1;
}
