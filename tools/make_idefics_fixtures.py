#!/usr/bin/python3
"""Generate the IDEFICS parity fixtures under tests/data/model/<case>/.

Each case is a tiny random IDEFICS model directory laid out as the releases
are (config.json with model_type "idefics", vision_config and perceiver_config;
Hugging Face tensor names in two safetensors shards with
model.safetensors.index.json; a LLaMA-style tokenizer.json with IDEFICS's
added tokens) plus expected/ outputs of the PyTorch reference
tools/idefics_ref.py (float64; decisions checked in float32 and under logit
noise). Run from the repository root:
    /usr/bin/python3 tools/make_idefics_fixtures.py [case ...]
    /usr/bin/python3 tools/make_idefics_fixtures.py --check [case ...]
    /usr/bin/python3 tools/make_idefics_fixtures.py --requantize [case ...]

--requantize rewrites only the outputs that depend on the quantisation rule
(expected/logits_q8.npy, logits_q4.npy, chat.json) from the committed weights,
for when flamingo_ref.quantize_dequantize changes.
"""

import json
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flamingo_ref as fr  # noqa: E402
import idefics_ref as ir  # noqa: E402
import make_model_fixtures as mf  # noqa: E402
import tiny_tokenizers as tt  # noqa: E402

ROOT = mf.ROOT

VISION = {"embed_dim": 32, "image_size": 28, "patch_size": 14, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-5, "num_channels": 3}
PERCEIVER = {"use_resampler": False, "resampler_n_latents": 8, "resampler_depth": 2, "resampler_n_heads": 2,
             "resampler_head_dim": 16, "qk_layer_norms_perceiver": False}
BASE = {"model_type": "idefics", "architectures": ["IdeficsForVisionText2Text"], "hidden_size": 48,
        "intermediate_size": 96, "num_hidden_layers": 4, "num_attention_heads": 4, "hidden_act": "silu",
        "rms_norm_eps": 1e-6, "use_resampler": True, "vision_embed_dim": 32, "tie_word_embeddings": False,
        "alpha_initializer": "zeros", "alphas_initializer_range": 0.0, "dropout": 0.0,
        "freeze_text_layers": True, "freeze_lm_head": False, "freeze_vision_layers": True,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "initializer_range": 0.02}

# The instruct models' dialogue (their model cards' prompt format).
CHAT_TEMPLATE = {"system": "{content}\n", "user": "User:{content}<end_of_utterance>\n",
                 "assistant": "Assistant:{content}<end_of_utterance>\n", "generation_prompt": "Assistant:",
                 "stop": ["<end_of_utterance>"]}


def case_specs():
    return {
        "idefics": {
            "config": {**BASE, "alpha_type": "float", "qk_layer_norms": False, "cross_layer_interval": 2,
                       "vision_config": VISION, "perceiver_config": PERCEIVER},
            "tokens": [ir.FAKE, ir.IMAGE], "stop": "</s>",
            "prompt": "An image of <image> a cat. <image><image> Output: the dog",
            "candidates": ["the cat sat on the mat.", "two dogs", "a man riding a horse"],
            # </s> ends a document: the text after it, until the next image, sees no image
            "eod_prompt": "An image of <image> a cat.</s>Output: the dog <image> two dogs <image> and</s>a man riding",
        },
        "idefics_instruct": {
            "config": {**BASE, "alpha_type": "vector", "qk_layer_norms": True, "cross_layer_interval": 1,
                       "vision_config": {**VISION, "num_attention_heads": 4, "hidden_act": "quick_gelu"},
                       "perceiver_config": {**PERCEIVER, "qk_layer_norms_perceiver": True},
                       "chat_template": CHAT_TEMPLATE},
            "tokens": [ir.FAKE, ir.IMAGE, ir.EOU], "stop": ir.EOU,
            "prompt": ("User:what is the dog doing?<image><end_of_utterance>\nAssistant:the dog is running."
                       "<end_of_utterance>\nUser:<image>how many cats are there?<end_of_utterance>\nAssistant:"),
            "candidates": ["two.", "the dog is running in the park."],
        },
    }


def tokenizer(tokens):
    """The tiny LLaMA tokenizer with IDEFICS's added tokens in place of OpenFlamingo's."""
    tok = tt.llama_tokenizer(mf.CORPUS)
    vocab = tok["model"]["vocab"]
    for t in tt.FLAMINGO_TOKENS:
        del vocab[t]
    tok["added_tokens"] = [a for a in tok["added_tokens"] if a["content"] not in tt.FLAMINGO_TOKENS]
    base = len(vocab)
    for t in tokens:
        tok["added_tokens"].append(tt._added(len(vocab), t))
        vocab[t] = len(vocab)
    return tok, base


def randomize(model, seed, out_std, non_ascii):
    """linear ~ N(0, 1/fan_in), norms 1 + N(0, 0.1), biases N(0, 0.1), alphas
    +-U(0.5, 1) (scalars or per channel), embeddings N(0, 1), output rows
    N(0, out_std^2) (those of <fake_token_around_image> and <image> smaller,
    as a trained model rarely predicts them)."""
    g = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(shape, generator=g, dtype=torch.float64) * std

    with torch.no_grad():
        for name, p in model.named_parameters():
            short = name.rsplit(".", 1)[-1]
            if short.startswith("alpha_"):
                mag = 0.5 + 0.5 * torch.rand(p.shape, generator=g, dtype=torch.float64)
                val = mag * torch.where(torch.rand(p.shape, generator=g) < 0.5, -1.0, 1.0).double()
            elif short == "bias":
                val = normal(p.shape, 0.1)
            elif p.dim() == 1 and "class_embedding" not in name:
                val = 1.0 + normal(p.shape, 0.1)
            elif "class_embedding" in name or "latents" in name or "embed_tokens" in name:
                val = normal(p.shape, 1.0)
            elif "position_embedding" in name:
                val = normal(p.shape, 0.5)
            elif name == "lm_head.weight":
                val = normal(p.shape, out_std)
                val[non_ascii] *= 0.2  # bytes >= 0x80: replies stay ASCII, so a chat can read them back
            elif name == "lm_head.additional_fc.weight":
                val = normal(p.shape, out_std)
                val[:2] *= 0.2  # fake, image
            elif "patch_embedding" in name:
                val = normal(p.shape, (p.shape[1] * p.shape[2] * p.shape[3]) ** -0.5)
            else:
                val = normal(p.shape, p.shape[-1] ** -0.5)
            p.copy_(val.to(torch.float32).double())  # stored as f32: exactly those values


def head_row(model, tok_id):
    V = model.c["vocab_size"]
    return (model.lm_head.weight, tok_id) if tok_id < V else (model.lm_head.additional_fc.weight, tok_id - V)


def final_hidden(model, media, ids):
    got = []
    h = model.model.norm.register_forward_hook(lambda mod, inp, out: got.append(out))
    with torch.no_grad():
        model.forward_media(media, torch.tensor([ids]))
    h.remove()
    return got[0][0]


def run_case(name, spec, seed):
    tok, base = tokenizer(spec["tokens"])
    vocab = tok["model"]["vocab"]
    config = dict(spec["config"], vocab_size=base, additional_vocab_size=len(spec["tokens"]))
    stop = vocab[spec["stop"]]
    model = ir.Idefics(config, vocab[ir.IMAGE], stop).double().eval().requires_grad_(False)
    non_ascii = [vocab[f"<0x{b:02X}>"] for b in range(0x80, 0x100)]
    randomize(model, seed, 2.5 * config["hidden_size"] ** -0.5, non_ascii)

    prompt = ir.prompt_text(spec["prompt"])
    ids = tt.encode(tok, prompt, add_special_tokens=False)
    assert ids[0] == vocab["<s>"] and ids.count(vocab["<s>"]) == 1
    image_id = vocab[ir.IMAGE]
    n = ids.count(image_id)
    # the processor's mask is the one flamingo_ref's text_time gives (no </s> in the prompts)
    tt_idx = torch.tensor(np.cumsum([i == image_id for i in ids])) - 1
    assert torch.equal(ir.image_index(ids, image_id, 2), tt_idx)
    vc = model.c["vision_config"]
    S = vc["image_size"]
    imgs = mf.make_images(np.random.RandomState(seed), n, 1, S)
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    pixels = np.stack([ir.preprocess(Image.fromarray(im, "RGB"), S, mean, std) for im in imgs])
    pixels32 = pixels.astype(np.float32)
    vision_x = torch.from_numpy(pixels32.astype(np.float64)).reshape(1, n, 1, 3, S, S)
    media = model.encode_vision_x(vision_x)

    # make the stop token reachable (as make_model_fixtures does for <|endofchunk|>)
    W, row = head_row(model, stop)
    base_row = W[row].detach().clone()
    first = fr.greedy_generate(model, None, ids, 12, media=media)
    hidden = final_hidden(model, media, ids + first)[len(ids) - 1:]
    chosen = None
    for step in mf.STOP_STEPS:
        if step >= len(first):
            continue
        d = hidden[step] - hidden[:step].mean(dim=0)
        d = d / d.norm() * base_row.norm()
        for alpha in [0.25 * k for k in range(1, 13)]:
            with torch.no_grad():
                W[row] = (base_row + alpha * d).float().double()
            out = fr.greedy_generate(model, None, ids, 12, media=media)
            if out and out[-1] == stop and len(out) >= 2:
                chosen = {"step": step, "alpha": alpha}
                break
        if chosen:
            break
    if chosen is None:
        with torch.no_grad():
            W[row] = base_row

    if "chat_template" in config:  # and on <end_of_utterance> in the q4 chat (chat.json)
        shift_for_chat(model, config, tok, stop, torch.from_numpy(pixels32.astype(np.float64)), W, row)

    with torch.no_grad():
        vtok = model.vision_tokens(vision_x.reshape(n, 3, S, S))
        media = model.model.perceiver_resampler(vtok)[None]
        logits = model.forward_media(media, torch.tensor([ids]))[0]

    result = {"greedy": [], "beam": []}
    for nrng, mx in mf.GREEDY:
        out = fr.greedy_generate(model, None, ids, mx, no_repeat_ngram_size=nrng, media=media)
        result["greedy"].append({"num_beams": 1, "max_new_tokens": mx, "no_repeat_ngram_size": nrng,
                                 "tokens": out, "ended_on_eoc": bool(out and out[-1] == stop),
                                 "text": tt.decode(tok, [t for t in out if t != stop])})
    for nb, lp, es, nrng, mx in mf.BEAMS:
        out, score = fr.beam_generate(model, None, ids, mx, nb, length_penalty=lp, early_stopping=es,
                                      no_repeat_ngram_size=nrng, media=media)
        result["beam"].append({"num_beams": nb, "length_penalty": lp, "early_stopping": es,
                               "no_repeat_ngram_size": nrng, "max_new_tokens": mx, "tokens": out,
                               "ended_on_eoc": bool(out and out[-1] == stop), "score": score,
                               "text": tt.decode(tok, [t for t in out if t != stop])})
    cands = [tt.encode(tok, c, add_special_tokens=False) for c in spec["candidates"]]
    scores = fr.score_candidates(model, None, ids, cands, media=media)

    # the same decisions in float32, and under logit noise
    m32 = ir.Idefics(config, vocab[ir.IMAGE], stop).eval()
    m32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    media32 = m32.encode_vision_x(vision_x.float())
    for g in result["greedy"]:
        assert fr.greedy_generate(m32, None, ids, g["max_new_tokens"], g["no_repeat_ngram_size"],
                                  media=media32) == g["tokens"], f"{name}: greedy differs in float32"
    for b in result["beam"]:
        out32, _ = fr.beam_generate(m32, None, ids, b["max_new_tokens"], b["num_beams"], b["length_penalty"],
                                    b["early_stopping"], b["no_repeat_ngram_size"], media=media32)
        assert out32 == b["tokens"], f"{name}: beam search differs in float32 ({b})"
    mf.check_noise_robust(name, model, media, ids, result)

    d = os.path.join(ROOT, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    ir.save_model_dir(model, d, tok)
    exp = os.path.join(d, "expected")
    os.makedirs(os.path.join(exp, "images"))
    for k, img in enumerate(imgs):
        Image.fromarray(img, "RGB").save(os.path.join(exp, "images", f"media{k}_frame0.png"))
    np.save(os.path.join(exp, "pixels.npy"), pixels32.reshape(n, 1, 3, S, S))
    np.save(os.path.join(exp, "input_ids.npy"), np.array(ids, dtype=np.int64))
    np.save(os.path.join(exp, "vision_tokens.npy"), vtok.numpy().astype(np.float32)[:, None])
    np.save(os.path.join(exp, "perceiver.npy"), media[0].numpy().astype(np.float32))
    np.save(os.path.join(exp, "logits.npy"), logits.numpy().astype(np.float32))
    if "chat_template" not in config:  # a 40 x 21 image: resized to S x S whole (no crop)
        rng = np.random.RandomState(seed + 1000)
        odd = Image.fromarray(np.clip(rng.normal(128, 60, (21, 40, 3)), 0, 255).astype(np.uint8), "RGB")
        odd.save(os.path.join(exp, "images", "nonsquare.png"))
        np.save(os.path.join(exp, "nonsquare_pixels.npy"), ir.preprocess(odd, S, mean, std).astype(np.float32))
    if "chat_template" not in config:  # teacher-forced logits with the C++ q8 / q4 weights
        for fmt in ("q8", "q4"):
            mq = ir.Idefics(config, vocab[ir.IMAGE], stop).double().eval()
            mq.load_state_dict(model.state_dict())
            ir.quantize_weights(mq, fmt)
            with torch.no_grad():
                lq = mq.forward_media(mq.encode_vision_x(vision_x), torch.tensor([ids]))[0]
            np.save(os.path.join(exp, f"logits_{fmt}.npy"), lq.numpy().astype(np.float32))
    if "chat_template" in config:  # `flamingo chat --weights q4` on this model, turn by turn
        mq = q4_copy(model, config, vocab[ir.IMAGE], stop)
        img = {p: k for k, p in enumerate(f"images/media{k}_frame0.png" for k in range(n))}
        order = [img[t["image"]] for t in CHATS[0]["turns"] if "image" in t]
        px = torch.from_numpy(pixels32.astype(np.float64))[order]
        for chat in CHATS:
            answers, stopped, gap = chat_replies(mq, tok, config["chat_template"], px, chat, {stop, 2})
            if gap > 0.02 and ir.EOU in stopped:
                break
        assert gap > 0.02 and ir.EOU in stopped, f"{name}: every q4 chat meets a near-tie or never stops"
        mf.write_json(os.path.join(exp, "chat.json"),
                      {**chat, "answers": answers, "stopped": stopped, "min_top2_logit_gap": round(gap, 4)})
    if "eod_prompt" in spec:
        eod_case(exp, spec, model, tok, media, media32, m32)
    mf.write_expected_json(exp, {"text": spec["prompt"], "processor_text": prompt, "input_ids": ids, "num_media": n,
                                 "frames": 1, "images": [f"images/media{k}_frame0.png" for k in range(n)],
                                 "weights_dtype": "f32", "stop_token": spec["stop"], "eoc_output_row_shift": chosen},
                           ids, stop, result, spec["candidates"], cands, scores)
    beam_differs = any(b["tokens"] != result["greedy"][0]["tokens"] for b in result["beam"])
    print(f"{name}: T={len(ids)} media={n} V={base}+{len(spec['tokens'])} stop-shift={chosen} "
          f"greedy={result['greedy'][0]['tokens']} beam-differs={beam_differs}")


def eod_case(exp, spec, model, tok, media, media32, m32):
    """expected/eod.json and eod_logits.npy: a prompt with </s> between its
    image-text pairs, over the case's media. The processor's mask must differ
    from "the latest image" there (else the case tests nothing), and no
    generated sequence may go on past a generated </s> (there the C++ rule and
    transformers' generate() part, see idefics.hpp)."""
    image_id, eod = model.media_token_id, model.doc_end_id
    prompt = ir.prompt_text(spec["eod_prompt"])
    ids = tt.encode(tok, prompt, add_special_tokens=False)
    assert ids.count(image_id) == media.shape[1] and eod in ids
    idx = ir.image_index(ids, image_id, eod)
    assert not torch.equal(idx, torch.tensor(np.cumsum([i == image_id for i in ids])) - 1)
    with torch.no_grad():
        logits = model.forward_media(media, torch.tensor([ids]))[0]
    out = {"text": spec["eod_prompt"], "processor_text": prompt, "input_ids": ids, "image_index": idx.tolist(),
           "greedy": [], "beam": []}
    for nrng, mx in mf.GREEDY[:1]:
        toks = fr.greedy_generate(model, None, ids, mx, no_repeat_ngram_size=nrng, media=media)
        assert toks == fr.greedy_generate(m32, None, ids, mx, nrng, media=media32), "eod: greedy differs in float32"
        out["greedy"].append({"max_new_tokens": mx, "no_repeat_ngram_size": nrng, "tokens": toks})
    for nb, lp, es, nrng, mx in mf.BEAMS[:1]:
        toks, score = fr.beam_generate(model, None, ids, mx, nb, length_penalty=lp, early_stopping=es,
                                       no_repeat_ngram_size=nrng, media=media)
        toks32, _ = fr.beam_generate(m32, None, ids, mx, nb, lp, es, nrng, media=media32)
        assert toks == toks32, "eod: beam search differs in float32"
        out["beam"].append({"num_beams": nb, "length_penalty": lp, "early_stopping": es,
                            "no_repeat_ngram_size": nrng, "max_new_tokens": mx, "tokens": toks, "score": score})
    for r in out["greedy"] + out["beam"]:
        assert eod not in r["tokens"][:-1], "eod: a generated </s> is not the last token"
    cands = [tt.encode(tok, c, add_special_tokens=False) for c in spec["candidates"]]
    out["candidates"] = [{"tokens": t, "logprob": lp}
                         for t, (lp, _) in zip(cands, fr.score_candidates(model, None, ids, cands, media=media))]
    np.save(os.path.join(exp, "eod_logits.npy"), logits.numpy().astype(np.float32))
    mf.write_json(os.path.join(exp, "eod.json"), out)
    print(f"eod: T={len(ids)} image_index={idx.tolist()} greedy={out['greedy'][0]['tokens']}")


def check_eod(d, exp, model, media):
    """The problems of a case's eod.json against the reference."""
    f = os.path.join(exp, "eod.json")
    if not os.path.exists(f):
        return []
    e, problems = json.load(open(f)), []
    ids = e["input_ids"]
    tok = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
    if tt.encode(tok, ir.prompt_text(e["text"]), add_special_tokens=False) != ids:
        problems.append("eod input_ids")
    with torch.no_grad():
        logits = model.forward_media(media, torch.tensor([ids]))[0]
    want = np.load(os.path.join(exp, "eod_logits.npy"))
    if np.abs(logits.numpy() - want).max() > 1e-5 * max(1.0, np.abs(want).max()):
        problems.append("eod logits")
    for r in e["greedy"]:
        if fr.greedy_generate(model, None, ids, r["max_new_tokens"], r["no_repeat_ngram_size"],
                              media=media) != r["tokens"]:
            problems.append("eod greedy")
    for b in e["beam"]:
        out, score = fr.beam_generate(model, None, ids, b["max_new_tokens"], b["num_beams"], b["length_penalty"],
                                      b["early_stopping"], b["no_repeat_ngram_size"], media=media)
        if out != b["tokens"] or abs(score - b["score"]) > 1e-6 * max(1.0, abs(score)):
            problems.append("eod beam")
    got = fr.score_candidates(model, None, ids, [c["tokens"] for c in e["candidates"]], media=media)
    if any(abs(g[0] - c["logprob"]) > 1e-6 * max(1.0, abs(g[0])) for g, c in zip(got, e["candidates"])):
        problems.append("eod candidates")
    return problems


# The first of these conversations whose greedy steps have no near-tie (the
# decisions must not hinge on float32 against float64 rounding) and with a
# reply that ends on the template's stop token.
CHATS = [{"turns": [{"image": "images/media0_frame0.png", "text": q1}, {"text": q2}],
          "weights": "q4", "max_new_tokens": 16}
         for q1 in ("what is the dog doing?", "how many cats are there?", "Output:", "An image of", "the dog",
                    "Question: what is the dog doing? Short answer:")
         for q2 in ("and the cat?", "Question: what is on the mat?", "two dogs?", "Output:", "the cat sat")]


def chat_replies(model, tok, template, pixels, chat, stops):
    """What `flamingo chat --weights q4` answers, turn by turn: the
    conversation rendered with the template (a message's images as <image>
    before its text), the processor's ids, greedy search to a stop token, the
    reply decoded, leading whitespace dropped, kept as the assistant's
    message. Every product's activations are rounded as the C++ quantised
    products round them (ActivationRounding; per row, so how the C++
    conversation batches a turn's tokens does not matter). Returns the replies, the stop token each ended on (None: none), and the smallest
    top-2 logit gap met."""
    convo, answers, stopped, n_images, gap = "", [], [], 0, float("inf")
    for turn in chat["turns"]:
        n_images += 1 if "image" in turn else 0
        convo += template["user"].replace("{content}", ("<image>" if "image" in turn else "") + turn["text"])
        ids = tt.encode(tok, ir.prompt_text(convo + template["generation_prompt"]), add_special_tokens=False)
        with fr.ActivationRounding(model):
            media = model.encode_vision_x(pixels[:n_images].reshape(1, n_images, 1, *pixels.shape[1:]))
        seqs, P = torch.tensor([ids]), len(ids)
        for _ in range(chat["max_new_tokens"]):
            with fr.ActivationRounding(model):
                logits = fr._next_logits(model, media, seqs, P)[0]
            top = torch.topk(logits, 2).values
            gap = min(gap, float(top[0] - top[1]))
            t = int(torch.argmax(logits))
            seqs = torch.cat([seqs, torch.tensor([[t]])], dim=1)
            if t in stops:
                break
        new = seqs[0, P:].tolist()
        stopped.append(next(a["content"] for a in tok["added_tokens"] if a["id"] == new[-1])
                       if new and new[-1] in stops else None)  # the stop token a reply ended on
        text = tt.decode(tok, new[:-1] if new and new[-1] in stops else new).lstrip(" \t\n")
        answers.append(text.replace("\n", " ").replace("\r", " "))
        convo += template["assistant"].replace("{content}", text)
    return answers, stopped, gap


def q4_copy(model, config, image_id, stop):
    mq = ir.Idefics(config, image_id, stop).double().eval()
    mq.load_state_dict(model.state_dict())
    ir.quantize_weights(mq, CHATS[0]["weights"])
    return mq


def shift_for_chat(model, config, tok, stop, pixels, W, row):
    """Push the stop token's output row further, along the final hidden
    states of the first chat's first reply, until a chat ends a reply on it."""
    image_id = tok["model"]["vocab"][ir.IMAGE]
    base = W[row].detach().clone()
    got = []
    mq = q4_copy(model, config, image_id, stop)
    h = mq.model.norm.register_forward_hook(lambda mod, inp, out: got.append(out[0, -1]))
    chat_replies(mq, tok, config["chat_template"], pixels[:1], dict(CHATS[0], turns=CHATS[0]["turns"][:1]), {stop, 2})
    h.remove()
    d = torch.stack(got).mean(0)
    d = d / d.norm() * base.norm()
    for alpha in [0.25 * k for k in range(0, 13)]:
        with torch.no_grad():
            W[row] = (base + alpha * d).float().double()
        mq = q4_copy(model, config, image_id, stop)
        for chat in CHATS:
            _, stopped, gap = chat_replies(mq, tok, config["chat_template"], pixels[:1], chat, {stop, 2})
            if gap > 0.02 and ir.EOU in stopped:
                return
    raise AssertionError("no shift makes a chat stop on <end_of_utterance>")


def quantized_logits(d, prompt, pixels, ids, fmt):
    """The case's logits with its weights quantised to fmt (q8 or q4), as the
    committed logits_{fmt}.npy hold them."""
    mq = ir.load_model_dir(d, torch.float64, eos_token=prompt["stop_token"])
    ir.quantize_weights(mq, fmt)
    with torch.no_grad():
        return mq.forward_media(mq.encode_vision_x(torch.from_numpy(pixels.astype(np.float64))[None]),
                                torch.tensor([ids]))[0].numpy()


def check_fixtures(names):
    """Recompute the committed cases with the reference; returns the number of mismatches."""
    bad = 0
    for name in names:
        d = os.path.join(ROOT, name)
        exp = os.path.join(d, "expected")
        prompt = json.load(open(os.path.join(exp, "prompt.json")))
        model = ir.load_model_dir(d, torch.float64, eos_token=prompt["stop_token"])
        tok = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
        ids = prompt["input_ids"]
        problems = []
        if tt.encode(tok, ir.prompt_text(prompt["text"]), add_special_tokens=False) != ids:
            problems.append("input_ids != tokenizer(processor(text))")
        pixels = np.load(os.path.join(exp, "pixels.npy"))
        S = pixels.shape[-1]
        mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
        px = np.stack([ir.preprocess(Image.open(os.path.join(exp, p)), S, mean, std) for p in prompt["images"]])
        if np.abs(px.astype(np.float32) - pixels.reshape(px.shape)).max() > 0:
            problems.append("pixels.npy != preprocessed PNGs")
        with torch.no_grad():
            vtok = model.vision_tokens(torch.from_numpy(pixels.astype(np.float64)).reshape(-1, 3, S, S))
            media = model.model.perceiver_resampler(vtok)[None]
            logits = model.forward_media(media, torch.tensor([ids]))[0]
        for fname, got in (("vision_tokens", vtok[:, None]), ("perceiver", media[0]), ("logits", logits)):
            want = np.load(os.path.join(exp, fname + ".npy"))
            if got.shape != want.shape or np.abs(got.numpy() - want).max() > 1e-5 * max(1.0, np.abs(want).max()):
                problems.append(fname)
        gen = json.load(open(os.path.join(exp, "generate.json")))
        for r in gen["greedy"]:
            if fr.greedy_generate(model, None, ids, r["max_new_tokens"], r["no_repeat_ngram_size"],
                                  media=media) != r["tokens"]:
                problems.append(f"greedy {r['no_repeat_ngram_size']}")
        for b in gen["beam"]:
            out, score = fr.beam_generate(model, None, ids, b["max_new_tokens"], b["num_beams"], b["length_penalty"],
                                          b["early_stopping"], b["no_repeat_ngram_size"], media=media)
            if out != b["tokens"] or abs(score - b["score"]) > 1e-6 * max(1.0, abs(score)):
                problems.append(f"beam {b['length_penalty']}")
        for fmt in ("q8", "q4"):
            f = os.path.join(exp, f"logits_{fmt}.npy")
            if os.path.exists(f):
                lq = quantized_logits(d, prompt, pixels, ids, fmt)
                want = np.load(f)
                if np.abs(lq - want).max() > 1e-5 * max(1.0, np.abs(want).max()):
                    problems.append(f"logits_{fmt}")
        problems += check_eod(d, exp, model, media)
        f = os.path.join(exp, "nonsquare_pixels.npy")
        if os.path.exists(f):
            mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
            got = ir.preprocess(Image.open(os.path.join(exp, "images", "nonsquare.png")), S, mean, std)
            if np.abs(got.astype(np.float32) - np.load(f)).max() > 0:
                problems.append("nonsquare_pixels")
        f = os.path.join(exp, "chat.json")
        if os.path.exists(f):
            chat = json.load(open(f))
            mq = ir.load_model_dir(d, torch.float64, eos_token=prompt["stop_token"])
            ir.quantize_weights(mq, chat["weights"])
            order = [prompt["images"].index(t["image"]) for t in chat["turns"] if "image" in t]
            px = torch.from_numpy(pixels.astype(np.float64)).reshape(-1, 3, S, S)[order]
            answers, _, _ = chat_replies(mq, tok, mq.config["chat_template"], px, chat,
                                      {tok["model"]["vocab"][prompt["stop_token"]], 2})
            if answers != chat["answers"]:
                problems.append("chat")
        print(f"{name}: {'ok' if not problems else 'MISMATCH ' + ', '.join(problems)}")
        bad += len(problems)
    return bad


def requantize_fixtures(names):
    """The quantised outputs of the committed cases, recomputed from their
    weights as run_case computes them (the weights are not regenerated)."""
    for name in names:
        d = os.path.join(ROOT, name)
        exp = os.path.join(d, "expected")
        prompt = json.load(open(os.path.join(exp, "prompt.json")))
        tok = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
        ids = prompt["input_ids"]
        pixels = np.load(os.path.join(exp, "pixels.npy"))
        S = pixels.shape[-1]
        for fmt in ("q8", "q4"):
            f = os.path.join(exp, f"logits_{fmt}.npy")
            if os.path.exists(f):
                np.save(f, quantized_logits(d, prompt, pixels, ids, fmt).astype(np.float32))
        f = os.path.join(exp, "chat.json")
        if os.path.exists(f):
            mq = ir.load_model_dir(d, torch.float64, eos_token=prompt["stop_token"])
            ir.quantize_weights(mq, CHATS[0]["weights"])
            stops = {tok["model"]["vocab"][prompt["stop_token"]], 2}
            for chat in CHATS:
                order = [prompt["images"].index(t["image"]) for t in chat["turns"] if "image" in t]
                px = torch.from_numpy(pixels.astype(np.float64)).reshape(-1, 3, S, S)[order]
                answers, stopped, gap = chat_replies(mq, tok, mq.config["chat_template"], px, chat, stops)
                if gap > 0.02 and ir.EOU in stopped:
                    break
            assert gap > 0.02 and ir.EOU in stopped, f"{name}: every q4 chat meets a near-tie or never stops"
            mf.write_json(f, {**chat, "answers": answers, "stopped": stopped, "min_top2_logit_gap": round(gap, 4)})
        print(f"{name}: quantised outputs rewritten")


def main(argv):
    torch.set_num_threads(1)
    check = "--check" in argv
    names = [a for a in argv if not a.startswith("--")] or list(case_specs())
    if check:
        return 1 if check_fixtures(names) else 0
    if "--requantize" in argv:
        requantize_fixtures(names)
        return 0
    specs = case_specs()
    for name in names:
        run_case(name, specs[name], 100 + list(specs).index(name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
