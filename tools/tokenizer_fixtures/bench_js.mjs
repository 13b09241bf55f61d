// Times the JavaScript port (@huggingface/tokenizers) on the text bench/bench_tokenizer.cpp
// uses, for a side-by-side figure:  node bench_js.mjs
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@huggingface/tokenizers";

const here = path.dirname(fileURLToPath(import.meta.url));
const text = fs.readFileSync("/usr/share/common-licenses/GPL-3", "utf8");
const bytes = Buffer.byteLength(text, "utf8");
for (const file of ["gpt2.tokenizer.json", "llama2.tokenizer.json"]) {
  const json = JSON.parse(fs.readFileSync(path.join(here, "..", "..", "tests", "data", "text", file), "utf8"));
  const tok = new Tokenizer(json, {});
  let t0 = process.hrtime.bigint();
  const ids = tok.encode(text).ids;
  const cold = Number(process.hrtime.bigint() - t0) / 1e9;
  const runs = 20;
  t0 = process.hrtime.bigint();
  for (let i = 0; i < runs; ++i) tok.encode(text);
  const warm = Number(process.hrtime.bigint() - t0) / 1e9 / runs;
  console.log(`${file}: ${ids.length} tokens; cold ${(bytes / cold / 1e6).toFixed(2)} MB/s, warm ${(bytes / warm / 1e6).toFixed(2)} MB/s`);
}
