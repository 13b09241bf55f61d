#include <flamingo/tensor.hpp>
using namespace flamingo;
void f() {
    Tensor<float, extents<3, 4>> a;
#ifdef FLAMINGO_CONTROL
    Tensor<float, extents<1, 4>> b;
#else
    Tensor<float, extents<3, 5>> b;
#endif
    auto e = a + b;
    (void)e;
}
