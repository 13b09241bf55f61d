// The kernels for AVX2 + FMA (+ F16C) with AVX-VNNI (VEX-encoded 256-bit
// vpdpbusd: Alder Lake and later Intel client CPUs, Zen 5): the avx2 set's
// kernels, except that the q8/q4 integer dot products use vpdpbusd
// (quant.hpp); see kernels_table.hpp.
#if !defined(__AVX2__) || !defined(__FMA__) || !defined(__AVXVNNI__) || defined(__AVX512F__)
#error "kernels_avxvnni.cpp must be compiled with -mavx2 -mfma -mf16c -mavxvnni and without AVX-512"
#endif
#define FLAMINGO_KERNELS_NS dispatch_avxvnni
#define FLAMINGO_KERNELS_TABLE_NAME table_avxvnni
#define FLAMINGO_KERNELS_ISA Isa::avxvnni
#define FLAMINGO_KERNELS_DESCRIPTION "avxvnni (256-bit AVX2 + FMA, AVX-VNNI vpdpbusd)"
#include "kernels_table.hpp"
