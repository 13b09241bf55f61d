// Picks the kernel table once (see flamingo/kernels/dispatch.hpp). Compiled for
// the baseline like any code that must run before we know the CPU.
#include <flamingo/kernels/dispatch.hpp>

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <flamingo/core/error.hpp>

namespace flamingo::kernels {

namespace dispatch_sse2 { extern const KernelTable table_sse2; }
namespace dispatch_avx2 { extern const KernelTable table_avx2; }
namespace dispatch_avxvnni { extern const KernelTable table_avxvnni; }
namespace dispatch_avx512 { extern const KernelTable table_avx512; }

namespace {

const char* const kNames[kIsaCount] = {"sse2", "avx2", "avxvnni", "avx512"};

// What the kernels of each set execute. __builtin_cpu_supports reads cpuid and,
// for AVX and AVX-512, also checks XCR0: the OS must save the wider registers.
bool cpu_runs(Isa isa) {
    __builtin_cpu_init();
    switch (isa) {
        case Isa::sse2:
            return true;  // x86-64 baseline
        case Isa::avx2:
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                   __builtin_cpu_supports("f16c");  // -mf16c in CMakeLists.txt
        case Isa::avxvnni:
            // libgcc sets "avxvnni" (cpuid leaf 7 subleaf 1, EAX bit 4) only when
            // XCR0 says the OS saves the AVX registers.
            return __builtin_cpu_supports("avxvnni") && cpu_runs(Isa::avx2);
        case Isa::avx512:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                   __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni") &&
                   cpu_runs(Isa::avx2);  // the compiler may use any of them alongside
    }
    return false;
}

// The highest set in m at or below `top` (sse2 when none).
Isa highest(IsaMask m, Isa top) {
    for (int i = int(top); i > 0; --i)
        if (m & isa_bit(Isa(i))) return Isa(i);
    return Isa::sse2;
}

}  // namespace

const char* isa_name(Isa isa) { return kNames[int(isa)]; }

IsaMask runnable_isas() {
    IsaMask m = 0;
    for (int i = 0; i < kIsaCount; ++i)
        if (cpu_runs(Isa(i))) m |= isa_bit(Isa(i));
    return m;
}

Isa detect_isa() { return highest(runnable_isas(), Isa(kIsaCount - 1)); }

Isa choose_isa(IsaMask runnable, const char* requested, std::string* warning) {
    if (!requested || !*requested) return highest(runnable, Isa(kIsaCount - 1));
    for (int i = 0; i < kIsaCount; ++i) {
        if (std::string_view(requested) != kNames[i]) continue;
        // Not a chain (dispatch.hpp): the nearest set below that runs, e.g.
        // avx2 for avxvnni on Zen 4, avxvnni for avx512 on Alder Lake.
        const Isa isa = highest(runnable, Isa(i));
        if (isa != Isa(i) && warning)
            *warning = std::string("FLAMINGO_ISA=") + requested + " asks for a kernel set this CPU cannot run; using " +
                       kNames[int(isa)];
        return isa;
    }
    fail("FLAMINGO_ISA=", requested,
         " is not a kernel set; use avx512, avxvnni, avx2 or sse2 (or leave it unset for the best)");
}

const KernelTable* kernel_table(Isa isa) {
    if (!cpu_runs(isa)) return nullptr;
    switch (isa) {
        case Isa::sse2: return &dispatch_sse2::table_sse2;
        case Isa::avx2: return &dispatch_avx2::table_avx2;
        case Isa::avxvnni: return &dispatch_avxvnni::table_avxvnni;
        case Isa::avx512: return &dispatch_avx512::table_avx512;
    }
    return nullptr;
}

const KernelTable& active_kernels() {
    // A function-local static: chosen once, thread-safely, at the first kernel
    // call; if FLAMINGO_ISA is invalid the error reaches that caller (and the next).
    static const KernelTable& table = [] () -> const KernelTable& {
        std::string warning;
        const Isa isa = choose_isa(runnable_isas(), std::getenv("FLAMINGO_ISA"), &warning);
        if (!warning.empty()) std::fprintf(stderr, "flamingo: warning: %s\n", warning.c_str());
        return *kernel_table(isa);
    }();
    return table;
}

}  // namespace flamingo::kernels
