"""The reference ids of the published vocabularies, from the Hugging Face `tokenizers` package.

    python reference.py TOKENIZER_JSON CORPUS_JSON

reads a JSON list of strings and prints, for each, the ids `tokenizers` gives without and
with the post-processor's special tokens and its decoding of the former, as a JSON list of
objects. TestPublishedVocabularies -update runs it and writes FAMILY.ids.json.
"""

import json
import sys

import tokenizers
from tokenizers import Tokenizer

tok = Tokenizer.from_file(sys.argv[1])
with open(sys.argv[2], encoding="utf-8") as f:
    texts = json.load(f)
cases = []
for text in texts:
    ids = tok.encode(text, add_special_tokens=False).ids
    cases.append({
        "text": text,
        "ids": ids,
        "ids_with_special": tok.encode(text, add_special_tokens=True).ids,
        "decoded": tok.decode(ids, skip_special_tokens=False),
    })
json.dump({"tokenizers": tokenizers.__version__, "cases": cases}, sys.stdout)
