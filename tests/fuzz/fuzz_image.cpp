// Fuzz target: decode any bytes as an image (every frame) and run the CLIP
// preprocessing on the first frame. Errors are expected; crashes, hangs,
// sanitizer reports and other exception types are findings.
#include <cstddef>
#include <cstdint>
#include <span>

#include "flamingo/io/image.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    flamingo::ImageLimits limits;
    limits.max_width = limits.max_height = 1024;  // small, so that each input runs fast
    limits.max_total_bytes = 32u << 20;
    try {
        const std::span<const std::uint8_t> bytes(data, size);
        // Odd sizes take the sampled path (frames counted first, then some decoded).
        const auto frames = size % 2 ? flamingo::decode_media_frames(bytes, "fuzz input", 1 + data[0] % 4, limits)
                                     : flamingo::decode_frames(bytes, "fuzz input", limits);
        flamingo::ClipPreprocess cfg;
        cfg.image_size = 1 + (size > 0 ? data[size - 1] % 48 : 0);  // varied sizes reach every resize path
        const auto tensor = flamingo::clip_preprocess(frames.front(), cfg);
        if (tensor.size() != 3u * cfg.image_size * cfg.image_size) __builtin_trap();
    } catch (const flamingo::Error&) {
    }
    return 0;
}
