#include <flamingo/tensor.hpp>
using namespace flamingo;
void f(const float* weights, float* out) {
#ifdef FLAMINGO_CONTROL
    TensorView<float, extents<4>> w(out, {});
#else
    TensorView<const float, extents<4>> w(weights, {});
#endif
    w.assign(1.0f);
}
