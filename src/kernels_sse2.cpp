// The kernels for x86-64's baseline (SSE2); see kernels_table.hpp.
#if defined(__AVX__)
#error "kernels_sse2.cpp must be compiled for the x86-64 baseline, without -mavx or -march"
#endif
#define FLAMINGO_KERNELS_NS dispatch_sse2
#define FLAMINGO_KERNELS_TABLE_NAME table_sse2
#define FLAMINGO_KERNELS_ISA Isa::sse2
#define FLAMINGO_KERNELS_DESCRIPTION "sse2 (128-bit SSE2)"
#include "kernels_table.hpp"
