#include <flamingo/tensor.hpp>
using namespace flamingo;
void f() {
    Tensor<float, extents<dyn, 64>> a(3);
#ifdef FLAMINGO_CONTROL
    Tensor<float, extents<dyn, 64>> b(3);
#else
    Tensor<float, extents<dyn, 32>> b(3);
#endif
    a = b * 2.0f;
}
