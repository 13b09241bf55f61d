// Image files in, 8-bit RGB out, as Pillow's Image.open(f).convert("RGB") gives
// them (what open_clip's preprocessing sees):
//  - JPEG, PNG, BMP and TGA are decoded by stb_image; GIF (every frame,
//    composited as Pillow does, see image_gif.hpp) and binary PNM (P4/P5/P6,
//    with Pillow's maxval scaling) are decoded by flamingo itself.
//  - Alpha is dropped, not composited; grey becomes R = G = B; palettes are
//    looked up. 16-bit PNG: grey is clipped to 255 (Pillow loads it as mode "I"),
//    colour and grey+alpha keep the high byte (Pillow's rawmodes "RGB;16B" etc.).
//  - EXIF orientation is not applied (neither Pillow's open nor open_clip do).
//  - The size is read and checked against ImageLimits before any pixel is decoded.
//  - A file that ends before its image does (a JPEG cut mid-scan or missing its
//    end marker, a PNG without IEND, a short BMP) is an error.
// Known differences from Pillow (measured by tests/image): stb_image's JPEG
// decoder is not libjpeg, so JPEG pixels differ by a few levels (and by more in
// one column of 4:2:2 JPEGs); 4-channel JPEGs without an Adobe marker are read as
// YCbCr rather than CMYK; RLE BMPs and plain-text PNM are not supported.
//
// The decoders are compiled once per program, not in every file that includes
// this header: the CMake target flamingo::flamingo links them (src/image.cpp).
// Without CMake, define FLAMINGO_IMPLEMENTATION in one .cpp file before
// including this header (or a header that includes it, such as pipeline.hpp);
// that file compiles them, with a private copy of stb_image that cannot clash
// with one the program uses itself (see image_impl.hpp). This header does not
// include <stb_image.h>.
#ifndef FLAMINGO_IO_IMAGE_HPP
#define FLAMINGO_IO_IMAGE_HPP

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "flamingo/io/image_preprocess.hpp"

namespace flamingo {

struct ImageLimits {
    int max_width = 8192, max_height = 8192;
    std::uint64_t max_file_bytes = std::uint64_t{1} << 30;   // largest file load_* will read
    std::uint64_t max_total_bytes = std::uint64_t{1} << 30;  // decoded pixels of all frames returned at once
};

// The image in `bytes` (its first frame if animated) as 8-bit RGB; `name` is
// used in error messages.
Image decode_image(std::span<const std::uint8_t> bytes, const std::string& name, const ImageLimits& limits = {});

// Every frame of an animated GIF (one image for other formats), as Pillow's
// seek(k) + convert("RGB") gives them. Frames stop at limits.max_total_bytes.
std::vector<Image> decode_frames(std::span<const std::uint8_t> bytes, const std::string& name,
                                 const ImageLimits& limits = {});

// `wanted` indices into `available` frames, evenly spaced: the middle of each of
// `wanted` equal segments, i = floor((2k + 1) * available / (2 * wanted)).
// Ascending; frames repeat when fewer are available than wanted.
std::vector<std::size_t> sample_frame_indices(std::size_t available, std::size_t wanted);

Image load_image(const std::filesystem::path& file, const ImageLimits& limits = {});
std::vector<Image> load_frames(const std::filesystem::path& file, const ImageLimits& limits = {});

// Frames given as an ordered list of image files (first frame of each).
std::vector<Image> load_frame_files(std::span<const std::filesystem::path> files, const ImageLimits& limits = {});

// A medium as exactly `frames` frames: an animated GIF's frames, or the files of
// a directory (in name order, the first frame of each), sampled evenly
// (sample_frame_indices). A medium with fewer frames than asked for is an error
// ("'x.gif' has 3 frames, fewer than the 8 asked for"); a still image has one.
// With frames == 1 a file gives its first frame, as load_image does. Only the
// chosen frames are kept while decoding, so long animations need little memory.
std::vector<Image> load_media_frames(const std::filesystem::path& path, std::size_t frames,
                                     const ImageLimits& limits = {});
// The same for a file's bytes.
std::vector<Image> decode_media_frames(std::span<const std::uint8_t> bytes, const std::string& name,
                                       std::size_t frames, const ImageLimits& limits = {});

}  // namespace flamingo

#endif  // FLAMINGO_IO_IMAGE_HPP

// Outside the include guard, so that a file that has already included this
// header can still define FLAMINGO_IMPLEMENTATION and include it again.
#ifdef FLAMINGO_IMPLEMENTATION
#include "flamingo/io/image_impl.hpp"
#endif
