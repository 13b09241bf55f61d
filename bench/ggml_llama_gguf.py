#!/usr/bin/python3
"""A random-weight LLaMA decoder in GGUF (f16) for the ggml comparison
(bench/ggml_compare.sh): the shape of IDEFICS-9B's decoder (LLaMA-7B: 32
layers of 4096, MLP 11008, 32 heads, vocabulary 32000) unless told otherwise.

    PYTHONPATH=LLAMA_CPP/gguf-py /usr/bin/python3 bench/ggml_llama_gguf.py OUT.gguf [--layers N] ...

Speed does not depend on the values, so every tensor is a slice of one
random buffer (512 MB) and the writer never holds more than that.
"""
import argparse
import sys
import types

import numpy as np

# gguf-py imports sentencepiece for vocabularies this script does not use;
# Debian has no python3-sentencepiece.
if "sentencepiece" not in sys.modules:
    stub = types.ModuleType("sentencepiece")
    stub.SentencePieceProcessor = None
    sys.modules["sentencepiece"] = stub
import gguf  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--ffn", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=32000)
    a = ap.parse_args()
    pool = (np.random.default_rng(0).standard_normal(1 << 28, dtype=np.float32) * 0.02).astype(np.float16)
    ones = np.ones(a.dim, dtype=np.float32)

    def mat(rows, cols):
        assert rows * cols <= pool.size
        return pool[: rows * cols].reshape(rows, cols)

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_context_length(2048)
    w.add_embedding_length(a.dim)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(a.ffn)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.heads)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(a.dim // a.heads)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    tokens = ["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(3, a.vocab)]
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * a.vocab)
    w.add_token_types([gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] +
                      [gguf.TokenType.NORMAL] * (a.vocab - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_tensor("token_embd.weight", mat(a.vocab, a.dim))
    for i in range(a.layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones)
        for n in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(p + n + ".weight", mat(a.dim, a.dim))
        w.add_tensor(p + "ffn_norm.weight", ones)
        w.add_tensor(p + "ffn_gate.weight", mat(a.ffn, a.dim))
        w.add_tensor(p + "ffn_up.weight", mat(a.ffn, a.dim))
        w.add_tensor(p + "ffn_down.weight", mat(a.dim, a.ffn))
    w.add_tensor("output_norm.weight", ones)
    w.add_tensor("output.weight", mat(a.vocab, a.dim))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
