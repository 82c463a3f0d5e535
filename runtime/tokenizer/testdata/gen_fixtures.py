"""Regenerate the tokenizer fixtures of runtime/tokenizer.

    python3 -m venv venv && venv/bin/pip install tokenizers && venv/bin/python gen_fixtures.py

The byte-level fixtures regenerate identically; the two SentencePiece-style ones are trained
with ties the tokenizers trainer breaks in no fixed order, so they may come out different
(and their cases with them), equally valid.

Each fixture is a small BPE trained here with the Hugging Face `tokenizers` package, using
the normalizer, pre-tokenizer, decoder, post-processor and BPE options that the published
tokenizer.json of a model family carries (written out here from those files and from
transformers' convert_slow_tokenizer.py, not downloaded; the split patterns are the ones
other readers of the hub files, llama.cpp among them, quote). The vocabularies are tiny, so the files are small, but the
pipeline that turns text into ids is the family's own. For each fixture, NAME.cases.json
holds the ids `tokenizers` produces for every string in CASES (without and with the
post-processor's special tokens) and its decoding of them: the reference the Go tests hold
runtime/tokenizer to.
"""

import codecs
import contextlib
import io
import json
import os

with contextlib.redirect_stdout(io.StringIO()):
    import this  # the Zen of Python, rot13-encoded in this.s: a fixed training text

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))

QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
DEEPSEEK_V3_PATTERNS = [
    r"""\p{N}{1,3}""",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^""" + "\r\n" + r"""\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[""" + "\r\n" + r"""]*|\s*[""" + "\r\n" + r"""]+|\s+(?!\S)|\s+""",
]

# Training text: the Zen of Python, some code, and lines in other scripts, so that merges
# cover ASCII words, digits, CJK and accents while emoji and rarer characters stay bytes.
TRAIN = [codecs.decode(this.s, "rot13")] * 4 + [
    "def add(a, b):\n    return a + b\n\nfor i in range(10):\n\tprint(i, i * 2)\n",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!!! 1234567890 3.14159",
    "我们的模型是混合专家模型。这是一个测试，中文句子很短。你好世界！",
    "日本語のテキストです。ひらがなとカタカナと漢字。こんにちは。",
    "Größe, naïve café, façade, coöperate; Ünïcödé déjà vu. Straße.",
    "I'm sure they're here; we've seen it, you'll see, he'd know, it's fine. DON'T SHOUT.",
    "  indented line\n    more indented\n\n\n  blank lines above\r\n",
] * 3

CASES = [
    "",
    " ",
    "Hello world",
    "Hello, world! How are you?",
    "  leading spaces and trailing   ",
    "multiple     spaces     between",
    "tabs\tand\t\ttabs",
    "new\nlines\n\n\nmore\n",
    "windows\r\nline\r\n\r\nends",
    " \n \n\t\n",
    "1234567890 12 3.14159 2026-12-06 0000007",
    "naïve café Ünïcödé Straße",
    "e\u0301 versus \u00e9 (combining acute)",
    "你好，世界！这是一个测试。",
    "こんにちは カタカナ 漢字",
    "안녕하세요 세계",
    "emoji 👋🏽 🎉 family 👨\u200d👩\u200d👧\u200d👦 done",
    "I'm don't we'll THEY'RE She'S it'd",
    "def f(x):\n    return x**2  # square\n",
    "a/b/c https://example.com/path?q=1&r=2",
    "nbsp\u00a0here and ideographic\u3000space",
    "CamelCaseWordsHTTPServer parseJSON2XML",
    "mixed 中文English混合123文字",
    "Ελληνικά και русский текст",
    "\u0000control\u0007chars\u001b[0m",
]


def bytelevel_tokenizer(pre, decoder, normalizer=None, ignore_merges=False):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoder
    return tok


def train(tok, specials, vocab_size, **kw):
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        show_progress=False,
        **kw,
    )
    tok.train_from_iterator(TRAIN, trainer=trainer)


def split(pattern):
    return pre_tokenizers.Split(pattern=Regex(pattern), behavior="isolated", invert=False)


def finish(name, tok, added, post=None, merges_as_strings=False, mutate=None):
    """Adds the extra tokens, sets the post-processor, writes NAME.json and NAME.cases.json."""
    for t in added:
        if t.special:
            tok.add_special_tokens([t])
        else:
            tok.add_tokens([t])
    data = json.loads(tok.to_str())
    if post is not None:
        data["post_processor"] = post
    if mutate is not None:
        mutate(data)
    if merges_as_strings:
        data["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in data["model"]["merges"]]
    text = json.dumps(data, ensure_ascii=False, indent=1)
    tok = Tokenizer.from_str(text)
    cases = []
    specials_in_text = " ".join(t.content for t in added)
    for s in CASES + [
        "before " + specials_in_text + " after",
        added[0].content + "user\nhi there" + added[1].content,
        "x" + added[0].content + added[0].content + "  " + added[-1].content + "  y",
    ]:
        ids = tok.encode(s, add_special_tokens=False).ids
        with_special = tok.encode(s, add_special_tokens=True).ids
        cases.append({
            "text": s,
            "ids": ids,
            "ids_with_special": with_special,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        })
    with open(os.path.join(HERE, name + ".json"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    with open(os.path.join(HERE, name + ".cases.json"), "w", encoding="utf-8") as f:
        json.dump({"generator": "tokenizers " + tokenizers.__version__, "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")


def template(bos, bos_id):
    return {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }


def main():
    bl_alphabet = pre_tokenizers.ByteLevel.alphabet()

    # Qwen3 (as Qwen2): NFC, the Qwen2 split (single digits), ByteLevel without its regex.
    tok = bytelevel_tokenizer(
        pre_tokenizers.Sequence([split(QWEN2_PATTERN), pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)]),
        decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        normalizer=normalizers.NFC(),
    )
    train(tok, ["<|endoftext|>"], 700, initial_alphabet=bl_alphabet)
    finish("qwen3", tok, [
        AddedToken("<|im_start|>", special=True, normalized=False),
        AddedToken("<|im_end|>", special=True, normalized=False),
        AddedToken("<think>", special=False, normalized=False),
        AddedToken("</think>", special=False, normalized=False),
    ])

    # Llama 3: no normalizer, the Llama 3 split (digits in threes), ignore_merges, BOS template;
    # merges written in the older "a b" string form.
    tok = bytelevel_tokenizer(
        pre_tokenizers.Sequence([split(LLAMA3_PATTERN), pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)]),
        decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True),
        ignore_merges=True,
    )
    train(tok, [], 700, initial_alphabet=bl_alphabet)
    n = tok.get_vocab_size()
    finish("llama3", tok, [
        AddedToken("<|begin_of_text|>", special=True, normalized=False),
        AddedToken("<|end_of_text|>", special=True, normalized=False),
        AddedToken("<|eot_id|>", special=True, normalized=False),
        AddedToken("<|start_header_id|>", special=True, normalized=False),
    ], post=template("<|begin_of_text|>", n), merges_as_strings=True)

    # DeepSeek-V3: three splits (digits, kana/CJK runs, the rest), ByteLevel without regex.
    tok = bytelevel_tokenizer(
        pre_tokenizers.Sequence([split(p) for p in DEEPSEEK_V3_PATTERNS] + [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)]),
        decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True),
        normalizer=normalizers.Sequence([]),
    )
    train(tok, ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"], 700, initial_alphabet=bl_alphabet)
    finish("deepseek_v3", tok, [
        AddedToken("<｜User｜>", special=False, normalized=True),
        AddedToken("<｜Assistant｜>", special=False, normalized=True),
        AddedToken("<｜fim▁hole｜>", special=True, normalized=False),
        AddedToken("<think>", special=False, normalized=True),
    ], post=template("<｜begin▁of▁sentence｜>", 0))

    # gpt-oss (o200k_harmony): the o200k split, ByteLevel without regex.
    tok = bytelevel_tokenizer(
        pre_tokenizers.Sequence([split(O200K_PATTERN), pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)]),
        decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True),
    )
    train(tok, [], 700, initial_alphabet=bl_alphabet)
    finish("gpt_oss", tok, [
        AddedToken("<|start|>", special=True, normalized=False),
        AddedToken("<|message|>", special=True, normalized=False),
        AddedToken("<|end|>", special=True, normalized=False),
        AddedToken("<|channel|>", special=True, normalized=False),
        AddedToken("<|return|>", special=True, normalized=False),
    ])

    # Mistral / Llama 2 (SentencePiece BPE converted by transformers, legacy): Prepend("▁") and
    # Replace(" ", "▁") normalizers, no pre-tokenizer, byte fallback, fused <unk>, and the
    # Replace/ByteFallback/Fuse/Strip decoder. Trained per word (Metaspace) like SentencePiece.
    def sentencepiece_like(name, legacy):
        tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        byte_tokens = ["<0x%02X>" % b for b in range(256)]
        train(tok, ["<unk>", "<s>", "</s>"] + byte_tokens, 600, limit_alphabet=120)
        data = json.loads(tok.to_str())
        # SentencePiece keeps its byte pieces as ordinary vocabulary entries, not added tokens.
        data["added_tokens"] = [t for t in data["added_tokens"] if not t["content"].startswith("<0x")]
        for t in data["added_tokens"]:
            t["special"] = True
        if legacy:
            data["normalizer"] = {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
            ]}
            data["pre_tokenizer"] = None
        else:
            data["normalizer"] = None
            data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
        data["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ]}
        tok = Tokenizer.from_str(json.dumps(data))
        finish(name, tok, [
            AddedToken("[INST]", special=True, normalized=False),
            AddedToken("[/INST]", special=True, normalized=False),
            AddedToken("<pad>", special=True, normalized=False, lstrip=True, rstrip=True),
        ], post=template("<s>", 1))

    sentencepiece_like("mistral", legacy=True)
    sentencepiece_like("llama2_metaspace", legacy=False)


if __name__ == "__main__":
    main()
