// The kernels for AVX-512 with BF16 and VNNI (Cooper Lake, Sapphire Rapids,
// Zen 4 and later); see kernels_table.hpp.
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512DQ__) || !defined(__AVX512VL__) || \
    !defined(__AVX512BF16__) || !defined(__AVX512VNNI__)
#error "kernels_avx512.cpp must be compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512bf16 -mavx512vnni"
#endif
#define FLAMINGO_KERNELS_NS dispatch_avx512
#define FLAMINGO_KERNELS_TABLE_NAME table_avx512
#define FLAMINGO_KERNELS_ISA Isa::avx512
#define FLAMINGO_KERNELS_DESCRIPTION "avx512 (512-bit AVX-512, BF16 vdpbf16ps, VNNI vpdpbusd)"
#include "kernels_table.hpp"
