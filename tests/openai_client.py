"""Drives `flint serve` with the official `openai` package, the way an app written for the
OpenAI API does after changing only base_url. Prints one JSON object with what it received.

Usage: openai_client.py BASE_URL MODEL  (the Rust test tests/openai_client.rs runs it)
"""

import json
import sys

from openai import OpenAI

base_url, model = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key="not-needed")
messages = [
    {"role": "system", "content": "You are a helpful assistant who answers briefly."},
    {"role": "user", "content": "Suggest a name for a pet turtle."},
]
out = {}

# The migration snippet: system + user, temperature 0.4, max_tokens, a seed.
r = client.chat.completions.create(model=model, messages=messages, temperature=0.4, max_tokens=24, seed=7)
out["chat"] = {"text": r.choices[0].message.content, "finish": r.choices[0].finish_reason,
               "usage": r.usage.model_dump(), "role": r.choices[0].message.role}

pieces, finish, usage = [], None, None
for chunk in client.chat.completions.create(model=model, messages=messages, temperature=0.4, max_tokens=24, seed=7,
                                            stream=True, stream_options={"include_usage": True}):
    if chunk.choices:
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage is not None:
        usage = chunk.usage.model_dump()
out["chat_stream"] = {"text": "".join(pieces), "finish": finish, "usage": usage}

r = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=16)
out["chat_greedy"] = {"text": r.choices[0].message.content, "finish": r.choices[0].finish_reason}

prompt = "The three primary colors are"
r = client.completions.create(model=model, prompt=prompt, temperature=0.4, top_p=0.9, max_tokens=16, seed=11)
out["completion"] = {"text": r.choices[0].text, "finish": r.choices[0].finish_reason, "usage": r.usage.model_dump()}
pieces = [c.choices[0].text for c in client.completions.create(
    model=model, prompt=prompt, temperature=0.4, top_p=0.9, max_tokens=16, seed=11, stream=True) if c.choices]
out["completion_stream"] = {"text": "".join(pieces)}

out["models"] = [m.id for m in client.models.list().data]

# Errors surface as the package's typed exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    out["unknown_model"] = None
except Exception as e:  # openai.NotFoundError
    out["unknown_model"] = {"class": type(e).__name__, "status": getattr(e, "status_code", None)}

print(json.dumps(out))
