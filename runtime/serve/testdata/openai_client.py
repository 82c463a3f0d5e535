"""Drives a moec server with the official OpenAI Python client.

Usage: openai_client.py BASE_URL MODEL. Exits non-zero with the failed check on stderr;
prints one line per check that passed.
"""
import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


models = client.models.list()
check([m.id for m in models.data] == [model], f"models.list gives {model}")
m = client.models.retrieve(model)
check(m.id == model and m.created > 0, "models.retrieve gives the model with a created time")

# Streaming chat with stream_options, content as text parts.
chunks = list(client.chat.completions.create(
    model=model, max_tokens=8, seed=1, stream=True, stream_options={"include_usage": True},
    messages=[{"role": "system", "content": "be brief"},
              {"role": "user", "content": [{"type": "text", "text": "hi"}], "name": "ann"}]))
last = chunks[-1]
check(last.choices == [] and last.usage is not None and last.usage.completion_tokens == 8,
      "chat stream with include_usage ends with a usage chunk of 8 tokens")
check(all(c.usage is None for c in chunks[:-1]), "chat stream chunks before the last have no usage")
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check(any(c.choices and c.choices[0].finish_reason == "length" for c in chunks), "chat stream has a finish reason")

# n = 2 with logprobs, chat.
r = client.chat.completions.create(model=model, max_tokens=6, seed=2, n=2, logprobs=True, top_logprobs=3,
                                   messages=[{"role": "user", "content": "hello"}])
check(len(r.choices) == 2 and [c.index for c in r.choices] == [0, 1], "chat n=2 gives two choices")
for c in r.choices:
    content = c.logprobs.content
    spelled = bytes(b for e in content for b in e.bytes).decode("utf-8", "replace")
    # Invalid UTF-8 reaches the client as U+FFFD, one per byte or per sequence: compare without it.
    check(0 < len(content) <= 6 and spelled.replace("\ufffd", "") == c.message.content.replace("\ufffd", ""),
          f"chat choice {c.index} has a logprob per byte, whose bytes spell its content")
    check(all(len(e.top_logprobs) == 3 and e.logprob <= 0 for e in content),
          f"chat choice {c.index} has 3 alternatives per token")
check(r.usage.completion_tokens == 12, "chat n=2 usage counts both choices")

# Completions: n = 2, integer logprobs, penalties.
r = client.completions.create(model=model, prompt="func main() {", max_tokens=6, seed=3, n=2, logprobs=2,
                              presence_penalty=0.5, frequency_penalty=0.5)
check(len(r.choices) == 2, "completions n=2 gives two choices")
for c in r.choices:
    lp = c.logprobs
    check(len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6,
          f"completion choice {c.index} has 6 tokens with logprobs and offsets")
    check(all(v <= 0 for v in lp.token_logprobs), f"completion choice {c.index} logprobs are log-probabilities")

# Streaming completions with usage.
chunks = list(client.completions.create(model=model, prompt="x", max_tokens=5, seed=4, stream=True,
                                        stream_options={"include_usage": True}))
check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5, "completion stream ends with usage")

# An error the client surfaces as a typed exception.
try:
    client.completions.create(model="gpt-4", prompt="x", max_tokens=1)
    check(False, "an unknown model is refused")
except openai.NotFoundError:
    check(True, "an unknown model is a NotFoundError")
