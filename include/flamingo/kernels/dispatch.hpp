#pragma once
// Run-time choice of the kernel set.
//
// The static library `flamingo` holds the hot kernels compiled once per
// instruction set (src/kernels_sse2.cpp, kernels_avx2.cpp, kernels_avx512.cpp),
// each exporting a table of entry points. The first kernel call picks the best
// table the CPU and the operating system support (cpuid and XCR0, through
// __builtin_cpu_supports); FLAMINGO_ISA=avx512|avx2|sse2 in the environment
// asks for a lower one. Asking for a set the CPU lacks falls back to the best
// it has, with a warning on stderr (a setting copied between machines should
// not stop a program); a name that is not a set is an error.
//
// Programs compiled with FLAMINGO_DISPATCH call through the table; others
// (a -march=native build, a consumer with its own flags) call the inline
// kernels of their own flags directly. This header is usable either way, e.g.
// by tests that run every table.
#include <cstddef>
#include <cstdint>
#include <string>

namespace flamingo {
struct bf16;
}

namespace flamingo::kernels {

struct AttentionArgs;
struct QMatrix;
class RopeTable;

enum class Isa { sse2 = 0, avx2 = 1, avx512 = 2 };
inline constexpr int kIsaCount = 3;

const char* isa_name(Isa isa);

// The entry points a table provides; each is the kernel of the same name compiled for `isa`.
struct KernelTable {
    Isa isa;
    const char* description;  // for logs: the instructions the set uses
    bool bf16_dot;            // has the AVX512-BF16 GEMM path (see gemm.hpp)
    void (*matmul)(std::size_t, std::size_t, std::size_t, const float*, std::size_t, const float*, std::size_t,
                   float*, std::size_t, bool);
    void (*linear_f32)(std::size_t, std::size_t, std::size_t, const float*, std::size_t, const float*, std::size_t,
                       const float*, float*, std::size_t, bool);
    void (*linear_bf16)(std::size_t, std::size_t, std::size_t, const float*, std::size_t, const bf16*, std::size_t,
                        const float*, float*, std::size_t, bool);
    void (*linear_q)(std::size_t, const float*, std::size_t, const QMatrix&, const float*, float*, std::size_t, bool);
    void (*attention)(const AttentionArgs&);
    void (*softmax_rows)(float*, std::size_t, std::size_t, std::size_t);
    void (*layer_norm_rows)(const float*, std::size_t, float*, std::size_t, std::size_t, std::size_t, const float*,
                            const float*, float);
    void (*rms_norm_rows)(const float*, std::size_t, float*, std::size_t, std::size_t, std::size_t, const float*,
                          float);
    void (*gelu_erf)(float*, std::size_t);
    void (*gelu_tanh)(float*, std::size_t);
    void (*quick_gelu)(float*, std::size_t);
    void (*silu)(float*, std::size_t);
    void (*swiglu)(const float*, const float*, float*, std::size_t);
    void (*apply_rope)(float*, std::size_t, std::size_t, std::size_t, std::size_t, std::size_t, std::size_t,
                       const RopeTable&);
};

// The best set this CPU and OS support among those compiled into the library.
Isa detect_isa();

// The set to use given the CPU's best and the value of FLAMINGO_ISA (nullptr or
// empty: the CPU's best). A higher set than `best` gives `best` and a warning in
// *warning; an unknown name throws flamingo::Error. Pure, for tests.
Isa choose_isa(Isa best, const char* requested, std::string* warning);

// The table of one set; nullptr when the CPU cannot run it.
const KernelTable* kernel_table(Isa isa);

// The table chosen once, at the first call (detect_isa and FLAMINGO_ISA).
const KernelTable& active_kernels();

}  // namespace flamingo::kernels
