#pragma once
// The namespace that holds this translation unit's kernel code.
//
// The kernels are inline functions and templates whose code depends on the
// compiler's target flags (xsimd picks its register width from them). Compiled
// in two translation units with different flags, the same function would get
// one mangled name and the linker would keep one copy for both: AVX-512 code
// could then run where only SSE2 was meant (an ODR violation nothing reports).
// So every kernel function lives in an inline namespace named after the
// instruction set, which makes the copies distinct symbols while callers keep
// writing flamingo::kernels::linear. The library's dispatch translation units
// (src/kernels_*.cpp) name their own namespace (dispatch_<set>) so that they
// never share symbols with a program's own copies either.
//
// Types that appear in kernel signatures (QMatrix, AttentionArgs, RopeTable,
// ...) stay outside: they must be one type for every instruction set.
#if !defined(FLAMINGO_KERNELS_NS)
#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define FLAMINGO_KERNELS_NS isa_avx512bf16
#elif defined(__AVX512F__)
#define FLAMINGO_KERNELS_NS isa_avx512
#elif defined(__AVX2__) && defined(__FMA__) && defined(__AVXVNNI__)
#define FLAMINGO_KERNELS_NS isa_avxvnni  // quant.hpp's integer kernels differ
#elif defined(__AVX2__) && defined(__FMA__)
#define FLAMINGO_KERNELS_NS isa_avx2
#elif defined(__AVX__)
#define FLAMINGO_KERNELS_NS isa_avx
#elif defined(__SSE2__)
#define FLAMINGO_KERNELS_NS isa_sse2
#else
#define FLAMINGO_KERNELS_NS isa_generic
#endif
#endif

#define FLAMINGO_KERNELS_BEGIN inline namespace FLAMINGO_KERNELS_NS {
#define FLAMINGO_KERNELS_END }

// FLAMINGO_DISPATCH (defined for the project's binaries when built without
// -march=native, or by a consumer) makes the public kernel entry points call
// the table chosen at start-up (kernels/dispatch.hpp) instead of their inline
// bodies. The library's table translation units define
// FLAMINGO_KERNELS_TABLE_TU and always compile the bodies.
#if defined(FLAMINGO_DISPATCH) && !defined(FLAMINGO_KERNELS_TABLE_TU)
#define FLAMINGO_KERNELS_DISPATCHED 1
#include "../dispatch.hpp"
#endif
