#pragma once
// GIF decoding with the frame compositing of Pillow 9.4 (GifImagePlugin with its
// default RGB_AFTER_FIRST strategy), so that frame k here is what
// `im.seek(k); im.convert("RGB")` gives there. stb_image composites differently
// (transparent and uncovered pixels of the first frame come out black), which is
// why GIF has its own decoder. The rules, in Pillow's terms:
//  - frame 0 is drawn on a canvas filled with palette[transparency] when the frame
//    has a transparent index, else palette[0]; its transparent pixels keep their
//    own palette colour (an RGB conversion of a palette image ignores transparency);
//  - a later frame is drawn where its index differs from its transparent index;
//  - before a frame is drawn, the previous frame's disposal is applied to that
//    frame's rectangle: 2 fills it with the frame palette's colour of its
//    transparent index (else of the background index), 3 and above restore what
//    was there before the frame was drawn; a frame without a disposal method keeps
//    the last one given;
//  - palette entries past the end of a short palette read as grey (i, i, i);
//    a GIF without colour tables reads its indices as grey.
// Known differences: a later frame reaching past the canvas is clipped (Pillow
// grows the image size, inconsistently); LZW data that ends before the frame is
// full leaves the rest at the frame's fill index (Pillow reads on into the
// following blocks). A file that ends inside a frame's header or pixel data is
// an error; one that ends between frames (or inside an extension) just has no
// more frames, as for Pillow.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "flamingo/core/error.hpp"
#include "flamingo/io/image_preprocess.hpp"

namespace flamingo::detail {

class GifDecoder {
public:
    // Checks the header; the canvas size is known after the first frame.
    GifDecoder(std::span<const std::uint8_t> bytes, std::string name, int max_width, int max_height)
        : data_(bytes), name_(std::move(name)), max_w_(max_width), max_h_(max_height) {
        if (data_.size() < 13) fail_truncated("header");
        screen_w_ = le16(6);
        screen_h_ = le16(8);
        const int flags = data_[10];
        pos_ = 13;
        for (int i = 0; i < 256; ++i) global_[3 * i] = global_[3 * i + 1] = global_[3 * i + 2] = static_cast<std::uint8_t>(i);
        if (flags & 0x80) {
            has_global_ = true;
            background_ = data_[11];
            global_needed_ = read_palette(2 << (flags & 7), global_);
        }
    }

    // Decodes the next frame onto the canvas; false when there are no more.
    // With draw = false the frame's data is skipped (for counting frames).
    bool next(bool draw = true) {
        int transparency = -1;
        for (;;) {
            if (pos_ >= data_.size()) return false;  // no trailer: Pillow stops here too
            const std::uint8_t tag = data_[pos_++];
            if (tag == 0x3B) return false;
            if (tag == 0x21) {
                // A file ending inside an extension has no more frames; Pillow stops there too.
                if (data_.size() - pos_ < 2) return false;
                const std::uint8_t label = data_[pos_];
                const std::size_t len = data_[pos_ + 1];
                pos_ += 2;
                if (data_.size() - pos_ < len) return false;
                if (label == 0xF9 && len >= 4) {  // graphic control: disposal and transparency
                    const std::uint8_t f = data_[pos_];
                    if (f & 1) transparency = data_[pos_ + 3];
                    if ((f >> 2) & 7) disposal_ = (f >> 2) & 7;
                }
                pos_ += len;
                if (len > 0 && !skip_blocks()) return false;
                continue;
            }
            if (tag == 0x2C) break;
            // Pillow skips any other byte.
        }
        const std::size_t d = need(9, "image descriptor");
        const int x0 = le16(d), y0 = le16(d + 2), w = le16(d + 4), h = le16(d + 6), flags = data_[d + 8];
        pos_ += 9;
        std::array<std::uint8_t, 768> local;
        const std::array<std::uint8_t, 768>* pal = &global_;
        bool pal_needed = global_needed_;
        if (flags & 0x80) {
            for (int i = 0; i < 256; ++i) local[3 * i] = local[3 * i + 1] = local[3 * i + 2] = static_cast<std::uint8_t>(i);
            pal_needed = read_palette(2 << (flags & 7), local);
            pal = &local;
        }
        const int code_bits = byte("image data");
        if (!draw) {
            skip_blocks();
            ++frame_;
            return true;
        }
        if (frame_ == 0) {
            // Pillow's image is as large as the screen and the first frame together.
            const int cw = std::max(screen_w_, x0 + w), ch = std::max(screen_h_, y0 + h);
            check(cw > 0 && ch > 0, ErrorKind::Format, "image '", name_, "': ", cw, "x", ch, " image has no pixels");
            check(cw <= max_w_ && ch <= max_h_, ErrorKind::Limit, "image '", name_, "': ", cw, "x", ch, " exceeds the size limit ",
                  max_w_, "x", max_h_);
            canvas_.width = cw;
            canvas_.height = ch;
            canvas_.rgb.resize(static_cast<std::size_t>(cw) * ch * 3);
            grey_ = !pal_needed;
            first_transparency_ = transparency;
        } else {
            apply_dispose();
        }
        // Bounds the work on a frame rectangle far larger than the canvas.
        check(w <= max_w_ && h <= max_h_, ErrorKind::Format, "image '", name_, "': GIF frame ", frame_, " is ", w, "x", h,
              ", larger than the size limit ", max_w_, "x", max_h_);
        plan_dispose(x0, y0, w, h, *pal, transparency);

        // Pillow decodes into a palette image pre-filled with the transparent index (or 0).
        const int fill = transparency >= 0 ? transparency : 0;
        indices_.assign(static_cast<std::size_t>(w) * h, static_cast<std::uint8_t>(fill));
        decode_lzw(code_bits, w, h, flags & 0x40);

        if (frame_ == 0) {
            for (std::size_t i = 0; i < canvas_.rgb.size(); i += 3) put(&canvas_.rgb[i], *pal, fill);
        }
        for (int y = 0; y < h; ++y) {
            const int cy = y0 + y;
            if (cy >= canvas_.height) break;
            for (int x = 0; x < w; ++x) {
                const int cx = x0 + x;
                if (cx >= canvas_.width) break;
                const int v = indices_[static_cast<std::size_t>(y) * w + x];
                if (frame_ > 0 && v == transparency) continue;
                put(&canvas_.rgb[(static_cast<std::size_t>(cy) * canvas_.width + cx) * 3], *pal, v);
            }
        }
        ++frame_;
        return true;
    }

    const Image& canvas() const { return canvas_; }

private:
    [[noreturn]] void fail_truncated(const char* where) const {
        fail(ErrorKind::Format, "image '", name_, "': truncated GIF (file ends inside the ", where, ")");
    }
    int le16(std::size_t at) const { return data_[at] | (data_[at + 1] << 8); }
    std::uint8_t byte(const char* where) {
        if (pos_ >= data_.size()) fail_truncated(where);
        return data_[pos_++];
    }
    // Position of the next n bytes, which must exist.
    std::size_t need(std::size_t n, const char* where) const {
        if (data_.size() - pos_ < n) fail_truncated(where);
        return pos_;
    }
    // Reads n RGB entries; false when they are the grey ramp Pillow treats as no palette.
    bool read_palette(int n, std::array<std::uint8_t, 768>& pal) {
        const std::size_t at = need(static_cast<std::size_t>(3) * n, "colour table");
        bool needed = false;
        for (int i = 0; i < 3 * n; ++i) {
            pal[i] = data_[at + i];
            needed |= pal[i] != i / 3;
        }
        pos_ += static_cast<std::size_t>(3) * n;
        return needed;
    }
    // Skips data sub-blocks up to the terminator; false when the file ends first.
    bool skip_blocks() {
        for (;;) {
            if (pos_ >= data_.size()) return false;
            const std::size_t len = data_[pos_++];
            if (len == 0) return true;
            if (data_.size() - pos_ < len) {
                pos_ = data_.size();
                return false;
            }
            pos_ += len;
        }
    }
    static void put(std::uint8_t* px, const std::array<std::uint8_t, 768>& pal, int index) {
        px[0] = pal[3 * index];
        px[1] = pal[3 * index + 1];
        px[2] = pal[3 * index + 2];
    }

    void plan_dispose(int x0, int y0, int w, int h, const std::array<std::uint8_t, 768>& pal, int transparency) {
        dispose_ = Dispose{};
        dispose_.x0 = std::min(x0, canvas_.width);
        dispose_.y0 = std::min(y0, canvas_.height);
        dispose_.x1 = std::min(x0 + w, canvas_.width);
        dispose_.y1 = std::min(y0 + h, canvas_.height);
        if (disposal_ < 2 || dispose_.x1 <= dispose_.x0 || dispose_.y1 <= dispose_.y0) return;
        if (disposal_ == 2) {
            // Pillow looks up the first frame's transparent index first; after the
            // first frame's palette conversion that entry is gone, except in grey images.
            int index = transparency >= 0 ? transparency : (has_global_ ? background_ : 0);
            if ((frame_ == 0 || grey_) && first_transparency_ >= 0) index = first_transparency_;
            dispose_.kind = Dispose::Fill;
            put(dispose_.colour.data(), pal, index);
        } else if (frame_ == 0) {
            // Nothing to restore yet: Pillow fills with the transparent index, if any.
            if (transparency < 0) return;
            dispose_.kind = Dispose::Fill;
            put(dispose_.colour.data(), pal, transparency);
        } else {
            dispose_.kind = Dispose::Restore;
            const int rw = dispose_.x1 - dispose_.x0;
            dispose_.saved.resize(static_cast<std::size_t>(rw) * (dispose_.y1 - dispose_.y0) * 3);
            for (int y = dispose_.y0; y < dispose_.y1; ++y)
                std::copy_n(&canvas_.rgb[(static_cast<std::size_t>(y) * canvas_.width + dispose_.x0) * 3],
                            static_cast<std::size_t>(rw) * 3,
                            &dispose_.saved[static_cast<std::size_t>(y - dispose_.y0) * rw * 3]);
        }
    }
    void apply_dispose() {
        const int rw = dispose_.x1 - dispose_.x0;
        for (int y = dispose_.y0; y < dispose_.y1 && dispose_.kind != Dispose::None; ++y) {
            std::uint8_t* row = &canvas_.rgb[(static_cast<std::size_t>(y) * canvas_.width + dispose_.x0) * 3];
            if (dispose_.kind == Dispose::Restore) {
                std::copy_n(&dispose_.saved[static_cast<std::size_t>(y - dispose_.y0) * rw * 3],
                            static_cast<std::size_t>(rw) * 3, row);
            } else {
                for (int x = 0; x < rw; ++x) std::copy_n(dispose_.colour.data(), 3, row + 3 * x);
            }
        }
    }

    // ---- Pixel data: LZW codes (GIF89a, appendix F) ----
    //
    // The frame's indices are compressed as a stream of variable-width codes,
    // packed least significant bit first into data sub-blocks (a length byte and
    // that many bytes, up to an empty block). With a minimum code size of b bits,
    // codes below 2^b stand for themselves, 2^b clears the table and 2^b + 1 ends
    // the data; each further code stands for a string defined while decoding.
    // Codes start b + 1 bits wide and widen when the table reaches the next power
    // of two, up to 12 bits (4096 codes); a full table stops growing until the
    // next clear. Beyond the spec, as Pillow: no leading clear code is needed,
    // decoding stops once the frame is full, and b may be up to 12 (codes below
    // 2^b then stand for their low byte; with b = 12 the table has no room left,
    // and any code past it is an error, where Pillow accepts one more).

    // Reads codes from the sub-blocks at pos_, a byte at a time as bits are needed.
    class CodeReader {
    public:
        explicit CodeReader(GifDecoder& gif) : gif_(gif) {}
        // The next code of `width` bits, or -1 when the sub-blocks end first.
        int read(int width) {
            while (count_ < width) {
                if (block_left_ == 0) {
                    block_left_ = gif_.byte("image data");
                    if (block_left_ == 0) return -1;
                }
                bits_ |= static_cast<std::uint32_t>(gif_.byte("image data")) << count_;
                count_ += 8;
                --block_left_;
            }
            const int code = static_cast<int>(bits_ & ((1u << width) - 1));
            bits_ >>= width;
            count_ -= width;
            return code;
        }
        // Skips the rest of the data (the file may end before its terminator).
        void skip_rest() {
            gif_.pos_ += std::min(block_left_, gif_.data_.size() - gif_.pos_);
            gif_.skip_blocks();
        }

    private:
        GifDecoder& gif_;
        std::uint32_t bits_ = 0;  // read but not yet used, lowest first
        int count_ = 0;           // how many
        std::size_t block_left_ = 0;
    };

    void decode_lzw(int min_bits, int w, int h, bool interlaced) {
        if (min_bits > 12) fail(ErrorKind::Format, "image '", name_, "': corrupt GIF (LZW code size ", min_bits, ")");
        constexpr int capacity = 4096;
        const int clear = 1 << min_bits, stop = clear + 1;

        // The string of each code: the string of `prefix` followed by `last`; its
        // length and first byte are kept so it can be written out back to front.
        struct Entry {
            std::uint16_t prefix, length;
            std::uint8_t first, last;
        };
        std::vector<Entry> table(capacity);
        for (int c = 0; c < std::min(clear, capacity); ++c) {
            const auto byte = static_cast<std::uint8_t>(c);
            table[c] = {0, 1, byte, byte};
        }
        std::array<std::uint8_t, capacity> text;  // one code's string

        // Row order: as stored, or interlaced in four passes (rows 0, 8, 16, ...;
        // 4, 12, ...; 2, 6, ...; 1, 3, ...).
        std::vector<int> rows;
        rows.reserve(h);
        if (interlaced) {
            constexpr int passes[4][2] = {{0, 8}, {4, 8}, {2, 4}, {1, 2}};  // first row, step
            for (const auto& pass : passes)
                for (int y = pass[0]; y < h; y += pass[1]) rows.push_back(y);
        } else {
            for (int y = 0; y < h; ++y) rows.push_back(y);
        }
        const std::size_t pixels = static_cast<std::size_t>(w) * h;
        std::size_t done = 0;  // pixels written
        auto write = [&](const std::uint8_t* s, std::size_t n) {
            for (n = std::min(n, pixels - done); n > 0; --n, ++done)
                indices_[static_cast<std::size_t>(rows[done / w]) * w + done % w] = *s++;
        };

        CodeReader reader(*this);
        int width = min_bits + 1, defined = clear + 2;
        int prev = -1;  // the previous code; none after a clear
        while (done < pixels) {
            const int code = reader.read(width);
            if (code < 0) return;  // data ended early: the rest keeps the fill index
            if (code == clear) {
                width = min_bits + 1;
                defined = clear + 2;
                prev = -1;
                continue;
            }
            if (code == stop) break;
            // After a clear only a single byte can follow; later, a defined code or
            // the one about to be defined.
            const bool known = prev < 0 ? code < clear : code < defined;
            const bool next_one = prev >= 0 && code == defined && defined < capacity;
            if (!known && !next_one) fail(ErrorKind::Format, "image '", name_, "': corrupt GIF data in frame ", frame_);
            if (prev >= 0 && defined < capacity) {
                // The new string is the previous one and the first byte of this
                // one, which for the code being defined is the previous one's first.
                const Entry& p = table[prev];
                const std::uint8_t first = next_one ? p.first : table[code].first;
                table[defined] = {static_cast<std::uint16_t>(prev), static_cast<std::uint16_t>(p.length + 1), p.first,
                                  first};
                if (++defined == 1 << width && width < 12) ++width;
            }
            const std::size_t n = table[code].length;
            for (int c = code, i = static_cast<int>(n); i > 0; c = table[c].prefix) text[--i] = table[c].last;
            write(text.data(), n);
            prev = code;
        }
        reader.skip_rest();  // a file that just ends after the pixels is fine, as for Pillow
    }

    struct Dispose {
        enum Kind { None, Fill, Restore } kind = None;
        int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
        std::array<std::uint8_t, 3> colour{};
        std::vector<std::uint8_t> saved;
    };

    std::span<const std::uint8_t> data_;
    std::string name_;
    int max_w_, max_h_;
    std::size_t pos_ = 0;
    int screen_w_ = 0, screen_h_ = 0;
    bool has_global_ = false, global_needed_ = false, grey_ = false;
    int background_ = 0, disposal_ = 0, frame_ = 0, first_transparency_ = -1;
    std::array<std::uint8_t, 768> global_;
    Image canvas_;
    std::vector<std::uint8_t> indices_;
    Dispose dispose_;
};

}  // namespace flamingo::detail
