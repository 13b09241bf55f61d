// The kernels for AVX2 + FMA (+ F16C); see kernels_table.hpp.
#if !defined(__AVX2__) || !defined(__FMA__) || defined(__AVX512F__)
#error "kernels_avx2.cpp must be compiled with -mavx2 -mfma -mf16c and without AVX-512"
#endif
#define FLAMINGO_KERNELS_NS dispatch_avx2
#define FLAMINGO_KERNELS_TABLE_NAME table_avx2
#define FLAMINGO_KERNELS_ISA Isa::avx2
#define FLAMINGO_KERNELS_DESCRIPTION "avx2 (256-bit AVX2 + FMA)"
#include "kernels_table.hpp"
