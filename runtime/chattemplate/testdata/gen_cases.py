"""Regenerate cases.json for runtime/chattemplate: each template (written for these tests in
the styles of published chat templates: ChatML with reasoning, Llama 3 headers, Mistral
[INST] turns, DeepSeek's namespace-driven turns, and a stress template of Jinja features)
rendered with each conversation by Jinja2 itself, set up as transformers'
apply_chat_template sets it up (trim_blocks, lstrip_blocks, loop controls, its tojson,
raise_exception and strftime_now).

    venv/bin/pip install jinja2 && venv/bin/python gen_cases.py
"""

import json
import os
from datetime import datetime

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime(2026, 12, 6, 15, 4, 5).strftime(fmt)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now

CONVERSATIONS = {
    "single": [{"role": "user", "content": "Hello!"}],
    "system": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
        {"role": "user", "content": "  and 3+3?  \n"},
    ],
    "unicode": [
        {"role": "user", "content": "你好，世界 👋 naïve\ttab"},
        {"role": "assistant", "content": "Ünïcödé \"quoted\" 'single'"},
        {"role": "user", "content": "ok"},
    ],
    "bad_order": [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
    ],
}

names = sorted(f[:-len(".jinja")] for f in os.listdir(HERE) if f.endswith(".jinja"))
cases = []
for name in names:
    with open(os.path.join(HERE, name + ".jinja"), encoding="utf-8") as f:
        template = env.from_string(f.read())
    for conv_name, messages in sorted(CONVERSATIONS.items()):
        for gen in (True, False):
            case = {"template": name, "conversation": conv_name, "add_generation_prompt": gen}
            try:
                case["output"] = template.render(messages=messages, add_generation_prompt=gen,
                                                 bos_token="<s>", eos_token="</s>")
            except TemplateError as e:
                case["error"] = str(e)
            cases.append(case)

with open(os.path.join(HERE, "cases.json"), "w", encoding="utf-8") as f:
    json.dump({"conversations": CONVERSATIONS, "cases": cases}, f, ensure_ascii=False, indent=1)
    f.write("\n")
