// Encodes texts with the JavaScript port of Hugging Face tokenizers and
// compares with the ids our Python BPE gave (see check_tokenizer.py).
//   node check_tokenizer.mjs TOKENIZER_JSON CASES_JSON
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "tokenizer_fixtures", "package.json"));
const mod = await import(require.resolve("@huggingface/tokenizers"));
const Tokenizer = mod.Tokenizer ?? mod.default?.Tokenizer;

const [tokPath, casesPath] = process.argv.slice(2);
const tok = new Tokenizer(JSON.parse(fs.readFileSync(tokPath, "utf8")), {});
const cases = JSON.parse(fs.readFileSync(casesPath, "utf8"));
let bad = 0;
cases.forEach(({ text, ids, decoded }) => {
  const got = tok.encode(text, { add_special_tokens: true }).ids;
  const dec = tok.decode(got, { skip_special_tokens: false });
  if (JSON.stringify(got) !== JSON.stringify(ids) || dec !== decoded) {
    bad++;
    if (bad <= 5) console.log("mismatch:", JSON.stringify(text), "js", got, "python", ids);
  }
});
console.log(`${cases.length} texts, ${bad} mismatches`);
process.exit(bad ? 1 : 0);
