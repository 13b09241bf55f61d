"""Check our Python BPE (tools/world/bpe.py) against the JavaScript port of
Hugging Face tokenizers on the world's text: training documents, the
evaluation prompts, every made-up name, and a few awkward strings.

  /usr/bin/python3 tools/world/check_tokenizer.py [--tokenizer models/shapes-flamingo/tokenizer.json]

Needs node and `npm ci` in tools/tokenizer_fixtures.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from world import bpe, common, evalset  # noqa: E402
from world import tasks as T  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokenizer", default=os.path.join(common.REPO, "models", "shapes-flamingo", "tokenizer.json"))
    ap.add_argument("--eval", default=os.path.join(common.REPO, "tests", "data", "world", "eval"))
    args = ap.parse_args()
    tok = bpe.Tokenizer.load(args.tokenizer)
    train_names, eval_names = T.name_split()
    texts = T.lm_corpus(random.Random(7), 300, train_names)
    for recs in evalset.read(args.eval).values():
        for r in recs:
            texts.append(r["prompt"])
            texts.append(r["prompt"] + (" " if not r["prompt"].endswith(T.IMAGE) else "") + r["answer"] + T.EOC)
            texts += r.get("candidates", [])
    texts += [" " + n for n in train_names + eval_names]
    texts += ["Hello  world\n\n  x", "it's 12 o'clock!!  ", "a_b __c", "<image><image>x<|endoftext|>", "  ", "é ü 猫"]
    cases = [{"text": t, "ids": tok.encode(t), "decoded": tok.decode(tok.encode(t))} for t in texts]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cases, f)
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        sys.exit(subprocess.call(["node", os.path.join(here, "check_tokenizer.mjs"), args.tokenizer, f.name]))
    finally:
        os.unlink(f.name)


if __name__ == "__main__":
    main()
