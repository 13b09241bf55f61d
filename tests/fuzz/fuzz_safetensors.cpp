// Fuzz target: a safetensors image from bytes. Any input must either parse into
// views that lie inside the buffer or raise flamingo::Error; the views are
// then read (converted to float where the dtype allows) so that a bad bound
// shows up under the sanitizers.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "flamingo/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // A copy of exactly `size` bytes, so that reading past the end is caught.
    std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(data), reinterpret_cast<const std::byte*>(data) + size);
    try {
        auto f = flamingo::io::SafeTensorsFile::from_memory(bytes.data(), bytes.size(), "fuzz.safetensors");
        unsigned sum = 0;
        for (const auto& t : f.tensors()) {
            if (t.nbytes) sum += unsigned(t.data[0]) + unsigned(t.data[t.nbytes - 1]);
            if (t.is_float() && t.numel() <= (1u << 20)) {
                std::vector<float> out(t.numel());
                flamingo::io::read_as_float(t, out.data());
            }
            if (f.find(t.name) != &t) __builtin_trap();
        }
        for (const auto& [k, v] : f.metadata()) sum += unsigned(k.size() + v.size());
        volatile unsigned sink = sum;
        (void)sink;
    } catch (const flamingo::Error&) {
    }
    return 0;
}
