#pragma once
// Run-time choice of the kernel set.
//
// The static library `flamingo` holds the hot kernels compiled once per
// instruction set (src/kernels_sse2.cpp, kernels_avx2.cpp, kernels_avxvnni.cpp,
// kernels_avx512.cpp), each exporting a table of entry points. The sets, in
// the order Isa gives them: sse2 (x86-64 baseline); avx2 (AVX2 + FMA + F16C);
// avxvnni (the avx2 set with AVX-VNNI's 256-bit vpdpbusd in the q8/q4 integer
// products: Alder Lake and later Intel client CPUs, Zen 5); avx512 (AVX-512
// with BF16 and VNNI). They are not a chain: an AVX-512 CPU may lack AVX-VNNI
// (Zen 4, Cooper Lake) and AVX-VNNI CPUs without AVX-512 are common, so what
// a CPU runs is a set of sets (runnable_isas), not the sets up to its best.
//
// The first kernel call picks the highest set the CPU and the operating system
// support (cpuid and XCR0, through __builtin_cpu_supports);
// FLAMINGO_ISA=avx512|avxvnni|avx2|sse2 in the environment asks for another.
// Asking for a set the CPU lacks falls back to the highest runnable set below
// it, with a warning on stderr (a setting copied between machines should not
// stop a program); a name that is not a set is an error.
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

enum class Isa { sse2 = 0, avx2 = 1, avxvnni = 2, avx512 = 3 };
inline constexpr int kIsaCount = 4;

// A set of kernel sets as a bitmask: bit i for Isa(i).
using IsaMask = unsigned;
inline constexpr IsaMask isa_bit(Isa isa) { return 1u << int(isa); }

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

// The sets this CPU and OS can run (always including sse2).
IsaMask runnable_isas();

// The highest set this CPU and OS can run.
Isa detect_isa();

// The set to use given the runnable sets and the value of FLAMINGO_ISA
// (nullptr or empty: the highest runnable). A set not in `runnable` gives the
// highest runnable set below it (sse2 at worst) and a warning in *warning; an
// unknown name throws flamingo::Error. Pure, for tests.
Isa choose_isa(IsaMask runnable, const char* requested, std::string* warning);

// The table of one set; nullptr when the CPU cannot run it.
const KernelTable* kernel_table(Isa isa);

// The table chosen once, at the first call (runnable_isas and FLAMINGO_ISA).
const KernelTable& active_kernels();

}  // namespace flamingo::kernels
