// NFC / NFD and UTF-8 helpers against Python's unicodedata (fixture written by
// tools/tokenizer_fixtures/gen_unicode_tables.py) and the Unicode standard's examples.
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "flamingo/text/unicode.hpp"
#include "flamingo/text/utf8.hpp"

using namespace flamingo;

TEST_CASE("unicode: NFC and NFD match Python's unicodedata") {
    std::ifstream in(std::string(FLAMINGO_TEST_DATA) + "/text/unicode_normalization.json");
    REQUIRE(in);
    std::stringstream ss;
    ss << in.rdbuf();
    const auto fixture = nlohmann::json::parse(ss.str());
    CHECK(fixture["unicode"] == unicode_data::version);
    std::size_t n = 0;
    for (const auto& c : fixture["cases"]) {
        const std::string text = c["text"];
        CAPTURE(text);
        CHECK(unicode::nfc(text) == c["nfc"].get<std::string>());
        CHECK(unicode::nfd(text) == c["nfd"].get<std::string>());
        ++n;
    }
    CHECK(n > 2000);
}

TEST_CASE("unicode: regex classes") {
    using unicode::CharClass;
    CHECK(unicode::char_class(U'a') == CharClass::Letter);
    CHECK(unicode::char_class(U'\u00E9') == CharClass::Letter);
    CHECK(unicode::char_class(U'\u4E2D') == CharClass::Letter);
    CHECK(unicode::char_class(U'\U0001D400') == CharClass::Letter);
    CHECK(unicode::char_class(U'7') == CharClass::Number);
    CHECK(unicode::char_class(U'\u00B2') == CharClass::Number);
    CHECK(unicode::char_class(U'\u2460') == CharClass::Number);
    CHECK(unicode::char_class(U'\u0085') == CharClass::Space);
    CHECK(unicode::char_class(U'\u3000') == CharClass::Space);
    CHECK(unicode::char_class(U'\u2029') == CharClass::Space);
    CHECK(unicode::char_class(U'\uFEFF') == CharClass::Other);
    CHECK(unicode::char_class(U'\u200B') == CharClass::Other);
    CHECK(unicode::char_class(U'\U0001F600') == CharClass::Other);
    CHECK(unicode::char_class(U'\u0301') == CharClass::Other);
    CHECK(unicode::is_word(U'_'));
    CHECK(unicode::is_word(U'\u0301'));
    CHECK(unicode::is_word(U'\u24B6'));
    CHECK_FALSE(unicode::is_word(U'-'));
}

TEST_CASE("utf8: validation and lossy conversion (Unicode's maximal subparts)") {
    CHECK(utf8::first_invalid("abc\xC3\xA9") == utf8::npos);
    CHECK(utf8::first_invalid("ab\xC0\x80") == 2);          // overlong
    CHECK(utf8::first_invalid("\xED\xA0\x80") == 0);        // surrogate
    CHECK(utf8::first_invalid("x\xF4\x90\x80\x80") == 1);   // above U+10FFFF
    CHECK(utf8::first_invalid("\xE4\xB8") == 0);            // truncated
    const std::string r = "\xEF\xBF\xBD";
    CHECK(utf8::lossy("a\xE4\xB8" "b") == "a" + r + "b");
    CHECK(utf8::lossy("\xF0\x9F\x98") == r);
    CHECK(utf8::lossy("\x80\x80") == r + r);
    CHECK(utf8::lossy("\xED\xA0\x80") == r + r + r);      // E0..EF rules: ED then A0 is not allowed
    CHECK(utf8::lossy("\xF4\x90") == r + r);
    CHECK(utf8::lossy("\xC3\xA9\xFF") == "\xC3\xA9" + r);
}
