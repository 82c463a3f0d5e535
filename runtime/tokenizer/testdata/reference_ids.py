"""Encode strings with the Hugging Face `tokenizers` package, for TestAgainstTokenizersPackage.

    python reference_ids.py TOKENIZER_JSON STRINGS_JSON

reads a JSON list of strings and prints a JSON list of their ids (no special tokens added).
"""

import json
import sys

from tokenizers import Tokenizer

tok = Tokenizer.from_file(sys.argv[1])
with open(sys.argv[2], encoding="utf-8") as f:
    texts = json.load(f)
json.dump([tok.encode(t, add_special_tokens=False).ids for t in texts], sys.stdout)
