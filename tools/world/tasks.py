"""The world's text: deterministic templates for the four tasks, made-up
names, and generators of interleaved documents.

Flamingo's format: a document is a run of chunks `<image>text<|endofchunk|>`.
Every document (and every evaluation prompt) keeps one task and one answer
style throughout, and the style is chosen at random per document, so only
the examples in a prompt tell the model which style the answer must take:
few-shot context carries information the query alone does not.

Tasks:
  caption   "<image>A photo of two striped red circles.<|endofchunk|>"
            (3 styles; the query is just "<image>", the whole caption is the answer)
  vqa       "<image>Question: What colour are the shapes? Answer: red<|endofchunk|>"
            (6 question types, 3 answer styles)
  classify  "<image>Category: red<|endofchunk|>": which attribute (shape, colour
            or texture) is the category is fixed per document; judged by scoring
            candidate names, among them the query's other attributes
  binding   "<image>This is a dax.<|endofchunk|>": two kinds of object get fresh
            made-up names in each document; only the examples say which is which
"""

import random

from . import scene as S

IMAGE = "<image>"
EOC = "<|endofchunk|>"
EOT = "<|endoftext|>"

TASKS = ["caption", "vqa", "classify", "binding"]

# ---- noun phrases and captions ---------------------------------------------

def noun_phrase(sc, digits=False):
    """'two striped red circles', 'one red circle' (texture only when not solid)."""
    count = str(sc.count) if digits else S.COUNT_WORDS[sc.count]
    noun = sc.shape if sc.count == 1 else S.PLURALS[sc.shape]
    texture = "" if sc.texture == "solid" else sc.texture + " "
    return f"{count} {texture}{sc.colour} {noun}"


CAPTION_STYLES = 3


def caption(sc, style):
    if style == 0:
        return f"A photo of {noun_phrase(sc)}."
    if style == 1:
        return f"There {'is' if sc.count == 1 else 'are'} {noun_phrase(sc)}."
    return noun_phrase(sc, digits=True)


def clip_caption(sc):
    """The full description used for contrastive pre-training: every attribute."""
    noun = sc.shape if sc.count == 1 else S.PLURALS[sc.shape]
    return (f"a photo of {S.COUNT_WORDS[sc.count]} {sc.size} {sc.texture} {sc.colour} {noun}"
            f" on the {sc.position}")


# ---- visual question answering ---------------------------------------------

QUESTIONS = {
    "colour": "What colour are the shapes?",
    "shape": "What shape are they?",
    "count": "How many shapes are there?",
    "position": "Where are the shapes?",
    "size": "Are the shapes small or large?",
    "texture": "What pattern do the shapes have?",
}
QUESTION_TYPES = list(QUESTIONS)
VQA_STYLES = 3


def vqa_answer_word(sc, qtype):
    value = sc.attr(qtype)
    return S.COUNT_WORDS[value] if qtype == "count" else value


def vqa_answer(sc, qtype, style):
    return answer_in_style(vqa_answer_word(sc, qtype), style)


def answer_in_style(word, style):
    """A one-word answer in one of the VQA_STYLES: 'red', 'Red.', 'The answer is red.'"""
    if style == 0:
        return word
    if style == 1:
        return word.capitalize() + "."
    return f"The answer is {word}."


def vqa_prefix(qtype):
    return f"Question: {QUESTIONS[qtype]} Answer:"


# ---- classification ----------------------------------------------------------

CLASSIFY_ATTRIBUTES = ["shape", "colour", "texture"]
CLASSIFY_PREFIX = "Category:"


def classify_candidates(sc, attribute):
    """The attribute's class names, then the query's values of the other
    classified attributes (true of the image, but not the category asked)."""
    names = list(S.ATTRIBUTES[attribute])
    names += [sc.attr(a) for a in CLASSIFY_ATTRIBUTES if a != attribute]
    return names


# ---- fast binding: made-up names ---------------------------------------------

_ONSETS = "b d f g k l m n p r s t v w z".split()
_VOWELS = "a e i o u".split()
_CODAS = "b d f g k m n p t v x z".split()
# Real words (and world words) the onset-vowel-coda scheme would produce.
_REAL = set("""bad bag ban bat bed beg bet bib bid big bin bit bob bog bop bud bug bum bun but box buz
dab dad dam den dig dim din dip dog don dot dub dud dug dun dux fab fad fan fat fax fed fen fez fib fig fin
fit fix fob fog fop fox fun gab gad gag gap gat get gig gin git gob god got gum gun gut kid kin kit lab lad
lag lap lax led leg let lib lid lip lit lob log lop lot lox lug mad man map mat med men met mid mix mob mod
mog mom mop mud mug mum nab nag nap net nib nip nit nix nod nog not nub nun nut pad pal pan pap pat pax peg
pen pep pet pig pin pit pod pop pot pox pub pug pun pup put rad rag ram ran rap rat red reb rib rid rig rim
rip rob rod rot rub rug rum run rut sad sag sap sat set sex sib sin sip sit six sob sod sop sub sum sun sup
tab tad tag tam tan tap tat tax ted ten tin tip tit tod tog tom ton top tot tub tug tum tun tut tux vat vet
vex vim vin vox wad wag wan wax web wed wet wig win wit wok won wot zap zip zit zen""".split())


# Every word of the world's templates: no made-up name may be one of them.
WORLD_WORDS = set(w.lower() for w in """a photo of there is are the answer question what colour shapes shape they
how many where big small or large pattern do have category this one two three four left right top bottom
solid striped dotted on it""".split()) | set(S.SHAPES) | set(S.PLURALS.values()) | set(S.COLOURS)


def _all_names():
    names = [o + v + c for o in _ONSETS for v in _VOWELS for c in _CODAS]
    return [n for n in names if n not in _REAL and n not in WORLD_WORDS]


def name_split():
    """(train names, held-out names): a fixed 80/20 split of the made-up words."""
    names = _all_names()
    random.Random(12345).shuffle(names)
    cut = len(names) * 4 // 5
    return sorted(names[:cut]), sorted(names[cut:])


class NameSampler:
    """Fresh made-up words for training: 3 to 5 letters in consonant-vowel
    patterns, from a space (~100k words) far too large to memorise, so that
    using a name means copying it from the context. The held-out names, the
    world's own words and common real words are never produced."""

    PARTS = {
        "c": list("bdfghjklmnprstvwxz"),
        "v": list("aeiou"),
        "s": "bl br dr fl fr gl gr kl kr pl pr sk sl sm sn sp st sw tr tw".split(),   # onset clusters
        "e": "nd nk nt mp sk st ft lt rk rt".split(),                                  # coda clusters
    }
    PATTERNS = ["cvc", "cvc", "cvcv", "cvcvc", "cve", "svc"]

    def __init__(self, exclude):
        self.exclude = set(exclude) | _REAL | WORLD_WORDS

    def word(self, rng):
        while True:
            w = "".join(rng.choice(self.PARTS[p]) for p in rng.choice(self.PATTERNS))
            if w not in self.exclude:
                return w

    def sample(self, rng, k):
        out = []
        while len(out) < k:
            w = self.word(rng)
            if w not in out:
                out.append(w)
        return out


def dev_names(n=200):
    """Made-up names of the development split (training decisions are measured
    on them): drawn once from the training patterns, never produced in
    training and disjoint from the evaluation set's held-out names."""
    rng = random.Random("dev-names")
    return sorted(NameSampler(name_split()[1]).sample(rng, n))


def training_names():
    return NameSampler(set(name_split()[1]) | set(dev_names()))


def _choose_names(rng, names, k):
    return names.sample(rng, k) if hasattr(names, "sample") else rng.sample(names, k)


BINDING_PREFIX = "This is a"


def binding_text(name):
    return f"{BINDING_PREFIX} {name}."


# ---- kinds for binding --------------------------------------------------------

def binding_kinds(rng, split="train", n=2):
    """n object kinds (shape, colour, texture) with distinct shapes."""
    shapes = rng.sample(S.SHAPES, n)
    kinds = []
    for shape in shapes:
        while True:
            colour = rng.choice(S.COLOURS)
            if split == "eval" or (shape, colour) not in S.HELD_OUT_PAIRS:
                break
        kinds.append((shape, colour, rng.choice(S.TEXTURES)))
    return kinds


# ---- documents ------------------------------------------------------------------

class Chunk:
    """One image and its text; `prefix` is the part of the text a query gives,
    the rest is the answer."""

    def __init__(self, scene, prefix, answer):
        self.scene = scene
        self.prefix = prefix
        self.answer = answer

    @property
    def text(self):
        if not self.prefix:
            return self.answer
        return self.prefix + " " + self.answer


class Document:
    def __init__(self, task, style, chunks, meta=None):
        self.task = task
        self.style = style
        self.chunks = chunks
        self.meta = meta or {}

    def interleaved(self):
        """Flamingo's format: '<image>text<|endofchunk|>' for every chunk."""
        return "".join(f"{IMAGE}{c.text}{EOC}" for c in self.chunks)

    def plain_text(self, describe=False):
        """The same text without images, for language-model pre-training; with
        describe, each chunk's picture is stood in for by a line describing it."""
        lines = []
        for c in self.chunks:
            if describe:
                lines.append(clip_caption(c.scene))
            lines.append(c.text)
        return "\n".join(lines) + "\n"


def pick_question(rng, weights=None):
    """A question type, uniformly or by {type: weight} (others 1)."""
    if not weights:
        return rng.choice(QUESTION_TYPES)
    return rng.choices(QUESTION_TYPES, [weights.get(q, 1.0) for q in QUESTION_TYPES])[0]


SIMILAR_ATTRIBUTES = ["shape", "colour", "texture", "count"]


def similar_scenes(rng, n, scene_source, similar):
    """With probability `similar` (and n > 1), n scenes whose first n - 1 share
    one to three attributes with the last, as examples picked by RICES look
    like their query; else None (and no draw from rng)."""
    if n < 2 or similar <= 0 or rng.random() >= similar:
        return None
    query = scene_source(rng)
    attrs = rng.sample(SIMILAR_ATTRIBUTES, rng.randint(1, 3))
    return [scene_source(rng, **{a: query.attr(a) for a in attrs}) for _ in range(n - 1)] + [query]


NEAR_ATTRIBUTES = ["shape", "colour", "texture", "count"]


def near_scenes(rng, n, scene_source, near, question=None):
    """With probability `near` (and n > 1), n scenes where one earlier scene,
    at a random place, is the last one's twin: the same shape, colour,
    texture and count (and the asked attribute, for position and size
    questions) in another layout, and the twin's place; else None (and no
    draw from rng). The document's meta "twin" marks it; training may show
    its last picture blurred (data.flamingo_items), so that its answer is
    surer from the twin's text than from the picture: the lesson RICES
    needs, to lean on an example that looks like the query."""
    if n < 2 or near <= 0 or rng.random() >= near:
        return None
    query = scene_source(rng)
    fixed = {a: query.attr(a) for a in NEAR_ATTRIBUTES}
    if question in ("position", "size"):
        fixed[question] = query.attr(question)
    twin = rng.randrange(n - 1)
    return [scene_source(rng, **fixed) if i == twin else scene_source(rng) for i in range(n - 1)] + [query], twin


def sample_document(rng, task, n_chunks, scene_source, names=None, split="train", question_weights=None,
                    similar=0.0, near=0.0):
    """A document of one task with n_chunks chunks. scene_source(rng, **fixed)
    returns a scene (or a pool entry) satisfying the fixed attributes; names
    is a list of made-up names or a NameSampler; question_weights as
    pick_question's; similar: the share of caption, VQA and classification
    documents whose earlier pictures resemble the last (similar_scenes);
    near: the share of them with a twin of the last picture (near_scenes; a
    VQA twin is asked the last question)."""
    meta = {}
    if task in ("caption", "vqa", "classify"):
        asked = pick_question(rng, question_weights) if near > 0 and task == "vqa" else None
        twinned = near_scenes(rng, n_chunks, scene_source, near, asked)
        if twinned:
            scenes, twin = twinned
            meta["twin"] = twin
        else:
            asked = None
            scenes = similar_scenes(rng, n_chunks, scene_source, similar)
        scene = (lambda i: scenes[i]) if scenes else (lambda i: scene_source(rng))
    if task == "caption":
        style = rng.randrange(CAPTION_STYLES)
        chunks = []
        for i in range(n_chunks):
            sc = scene(i)
            chunks.append(Chunk(sc, "", caption(sc, style)))
        return Document(task, style, chunks, meta)
    if task == "vqa":
        style = rng.randrange(VQA_STYLES)
        chunks = []
        for i in range(n_chunks):
            sc = scene(i)
            # the twin and the last picture are asked the same question
            q = asked if asked and i in (twin, n_chunks - 1) else pick_question(rng, question_weights)
            chunks.append(Chunk(sc, vqa_prefix(q), vqa_answer(sc, q, style)))
        return Document(task, style, chunks, meta)
    if task == "classify":
        attribute = rng.choice(CLASSIFY_ATTRIBUTES)
        chunks = []
        for i in range(n_chunks):
            sc = scene(i)
            chunks.append(Chunk(sc, CLASSIFY_PREFIX, sc.attr(attribute)))
        return Document(task, attribute, chunks, meta)
    if task == "binding":
        n_kinds = 2 if n_chunks <= 3 or rng.random() < 0.7 else 3
        kinds = binding_kinds(rng, split, n_kinds)
        chosen = _choose_names(rng, names, n_kinds)
        chunks = []
        for _ in range(n_chunks):
            k = rng.randrange(n_kinds)
            shape, colour, texture = kinds[k]
            sc = scene_source(rng, shape=shape, colour=colour, texture=texture, count=1)
            chunks.append(Chunk(sc, BINDING_PREFIX, chosen[k] + "."))
        return Document(task, n_kinds, chunks, {"kinds": kinds, "names": chosen})
    raise ValueError(task)


# ---- dialogue ------------------------------------------------------------------------

# The chat template `flamingo chat` applies to a model without one (README,
# "Conversations"); a message's images go before its text.
CHAT_USER = "User: {content}" + EOC
CHAT_ASSISTANT = "Assistant: {content}" + EOC
CHAT_GENERATION_PROMPT = "Assistant:"
FOLLOW_UPS = {
    "colour": "And what colour are they?",
    "shape": "And what shape are they?",
    "count": "And how many are there?",
    "position": "And where are they?",
    "size": "And are they small or large?",
    "texture": "And what pattern do they have?",
}
ANOTHER_PICTURE = "What about this one?"


def sample_dialogue(rng, scene_source, max_turns=5, question_weights=None):
    """A conversation about one or two pictures: (scene or None, user text,
    assistant answer) per turn. A question about the picture, follow-ups
    that ask another attribute of the same picture ("And how many are
    there?"), and maybe a second picture asked the previous question again
    ("What about this one?"). Answers in one style ("Red.")."""
    scene = scene_source(rng)
    q = pick_question(rng, question_weights)
    turns, asked = [(scene, QUESTIONS[q], vqa_answer(scene, q, 1))], [q]   # asked: of this picture
    second = rng.random() < 0.5
    while len(turns) < max_turns:
        if second and scene is turns[0][0] and (len(turns) >= 2 or rng.random() < 0.5):
            scene = scene_source(rng)
            asked = [q]
            turns.append((scene, ANOTHER_PICTURE, vqa_answer(scene, q, 1)))
        elif rng.random() < 0.7 and len(asked) < len(QUESTION_TYPES):
            q = rng.choice([t for t in QUESTION_TYPES if t not in asked])
            asked.append(q)
            turns.append((None, FOLLOW_UPS[q], vqa_answer(scene, q, 1)))
        else:
            break
    return turns


def chat_text(turns):
    """The conversation as `flamingo chat` renders it (every answer given)."""
    return "".join(CHAT_USER.format(content=(IMAGE if sc is not None else "") + user)
                   + CHAT_ASSISTANT.format(content=answer) for sc, user, answer in turns)


def random_scene_source(split="train"):
    def source(rng, **fixed):
        return S.sample_scene(rng, split, **fixed)
    return source


def lm_corpus(rng, n_docs, names, max_chunks=8, binding_share=0.25, describe_share=0.0):
    """Plain-text documents of the world for language-model pre-training. A
    describe_share of them describe each picture in words before its text, so
    that the decoder learns to take answers, captions and names from what the
    context says about a scene, as a language model trained on real text does;
    the Flamingo stage then only has to make the pictures say it."""
    source = random_scene_source("train")
    docs = []
    others = [t for t in TASKS if t != "binding"]
    for _ in range(n_docs):
        task = "binding" if rng.random() < binding_share else rng.choice(others)
        doc = sample_document(rng, task, rng.randint(1, max_chunks), source, names)
        docs.append(doc.plain_text(describe=rng.random() < describe_share))
    return docs
