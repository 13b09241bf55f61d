// Awkward text for the tokenizer fixtures. Kept to Unicode 14 characters (the
// C++ tables' version) and away from the few code points where JavaScript's \s
// and Oniguruma's \s disagree (U+0085, U+FEFF), which the C++ tests cover with
// hand-derived expectations instead.

const english =
  "The quick brown fox jumps over the lazy dog. It's a well-known pangram; " +
  "typists have used it since the late 19th century (at least 1885) to test " +
  "typewriters and, later, computer keyboards.\n\nWhy? Because it contains " +
  "every letter of the English alphabet at least once!";

export const common = [
  "",
  " ",
  "   ",
  "\n",
  "\n\n\n",
  "Hello world",
  " Hello world",
  "  leading spaces",
  "trailing spaces   ",
  "tabs\tand\nnewlines\r\nand\r\rcarriage returns",
  "a \n b",
  "a  \t  b\t\t c",
  "x\n\n  y",
  "digits 1234567890 and 3.14159, 1,000,000 and 2024-01-31",
  "I'm sure it's what they'd've wanted; we'll see, you're right, I've got it.",
  "'LL 'S 'Re 'VE don't DON'T o'clock rock'n'roll ''quoted'' ' s '",
  "Café naïve résumé façade Ångström Zürich",
  "decomposed: e\u0301 a\u0308 n\u0303 A\u030A \u212B and ordering a\u0323\u0302 a\u0302\u0323",
  "hangul jamo \u1100\u1161\u11A8 \u1112\u1161\u11AB and syllables 각한",
  "Ω≈ç√∫˜µ≤≥÷ ™ § ¶ • ª º –— «guillemets» “curly” ‘quotes’ …",
  "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷 keycap 1️⃣ heart ❤️ 🦙🦩",
  "中文分词测试，日本語のテキスト、한국어 텍스트",
  "مرحبا بالعالم שלום עולם",
  "สวัสดีครับ नमस्ते दुनिया",
  "Γειά σου Κόσμε Привет мир",
  "x² + y³ = z⁴; ½ ⅓ ¼; ① ② ③ Ⅻ 𝟘𝟙",
  "no-break\u00a0space, em\u2003space, ideographic\u3000space, line\u2028sep, para\u2029sep",
  "bell\u0007 null\u0000 esc\u001b del\u007f vt\u000b ff\u000c",
  "zero\u200bwidth\u200cnon\u200djoiner",
  "private \ue000\uf8ff plane16 \u{10FFFD} math \u{1D400}\u{1D401} deseret \u{10400}",
  "rare cjk \u{20000}\u{2A6D6} 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
  "https://example.com/path?q=1&r=[2]#frag user@example.org",
  "def f(x):\n    return x**2  # comment\n\n\tpass\n",
  "<html><body class=\"x\">&amp;</body></html>",
  "a".repeat(300),
  "supercalifragilisticexpialidocious".repeat(12),
  "Pneumonoultramicroscopicsilicovolcanoconiosis",
  "0123456789".repeat(30),
  "!!!???...,,,;;;:::---___===+++***",
  english,
  english.repeat(3),
];

// Added tokens glued to words, adjacent, partial.
export const specials = [
  "<image>",
  "<image>User: what is in this picture?<|endofchunk|>",
  "word<image>word",
  "<image><image>x<|endofchunk|><|endoftext|>",
  " <image> spaced <image> ",
  "<image",
  "<|endofchunk",
  "<imag<image>e>",
  "<PAD><PAD>",
  "<s>Hello</s>",
  "<unk>",
  "An image of a cat.<|endofchunk|><image>An image of",
  "<image>\n<image>\tText",
];
