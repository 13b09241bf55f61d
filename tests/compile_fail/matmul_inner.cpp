#include <flamingo/tensor.hpp>
using namespace flamingo;
void f() {
    Tensor<float, extents<2, 3>> a;
#ifdef FLAMINGO_CONTROL
    Tensor<float, extents<3, 4>> b;
#else
    Tensor<float, extents<4, 4>> b;
#endif
    auto c = matmul(a, b);
    (void)c;
}
