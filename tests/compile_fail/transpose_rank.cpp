#include <flamingo/tensor.hpp>
using namespace flamingo;
void f() {
#ifdef FLAMINGO_CONTROL
    Tensor<float, extents<2, 3>> a;
#else
    Tensor<float, extents<2, 3, 4>> a;
#endif
    auto t = transpose(a.view());
    (void)t;
}
