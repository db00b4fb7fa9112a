"""The official openai client against a running `rkinfer serve`.

Run by scripts/server-openai-test.sh, which starts the server and sets
RKINFER_BASE_URL (e.g. http://127.0.0.1:8080/v1) and RKINFER_API_KEY.
"""

import json
import os
import sys

import jsonschema
import openai

client = openai.OpenAI(
    base_url=os.environ["RKINFER_BASE_URL"],
    api_key=os.environ.get("RKINFER_API_KEY", "none"),
    max_retries=0,
    timeout=120,
)
MESSAGES = [
    {"role": "system", "content": "You are brief."},
    {"role": "user", "content": "Name a fruit."},
]
passed = failed = 0


def check(name, fn):
    global passed, failed
    try:
        fn()
        passed += 1
        print(f"ok: {name}")
    except Exception as e:  # noqa: BLE001 - report every failure
        failed += 1
        print(f"FAILED: {name}: {e!r}")


def models():
    ids = [m.id for m in client.models.list().data]
    assert ids, ids


def chat():
    r = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=8, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.usage.completion_tokens > 0
    assert r.choices[0].finish_reason in ("stop", "length")


def chat_stream():
    whole = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=8, temperature=0)
    text = ""
    reasons = []
    usage = None
    for chunk in client.chat.completions.create(
        model="m", messages=MESSAGES, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.usage is not None and not chunk.choices:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            if c.finish_reason:
                reasons.append(c.finish_reason)
    assert text == whole.choices[0].message.content, (text, whole.choices[0].message.content)
    assert len(reasons) == 1, reasons
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def completions():
    r = client.completions.create(model="m", prompt="The capital of France is", max_tokens=4, temperature=0)
    assert r.choices[0].text
    assert r.usage.completion_tokens == 4


def json_object():
    r = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Describe a cat as JSON with a name and an age."}],
        max_tokens=64, temperature=0, response_format={"type": "json_object"},
    )
    content = r.choices[0].message.content
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict), content
    else:
        assert content.lstrip().startswith("{"), content


CAT_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "legs": {"type": "integer"},
        "color": {"enum": ["black", "white", "ginger"]},
        "indoor": {"type": "boolean"},
        "toys": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "legs", "color", "indoor"],
    "additionalProperties": False,
}


def json_schema():
    r = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        max_tokens=96, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "cat", "strict": True, "schema": CAT_SCHEMA}},
    )
    content = r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop", (r.choices[0].finish_reason, content)
    jsonschema.validate(json.loads(content), CAT_SCHEMA)
    print(f"  json_schema reply: {content}")


def json_schema_unsupported():
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}}
    try:
        client.chat.completions.create(
            model="m", messages=MESSAGES, max_tokens=8,
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        )
    except openai.BadRequestError as e:
        assert "minimum" in str(e), e
        return
    raise AssertionError("an unsupported keyword was accepted")


def bad_request():
    try:
        client.chat.completions.create(model="m", messages=MESSAGES, n=2)
    except openai.BadRequestError as e:
        assert e.status_code == 400
        return
    raise AssertionError("n=2 was accepted")


for name, fn in [("models", models), ("chat", chat), ("chat stream", chat_stream),
                 ("completions", completions), ("json_object", json_object),
                 ("json_schema", json_schema), ("json_schema: unsupported keyword is a 400", json_schema_unsupported),
                 ("n=2 is a 400", bad_request)]:
    check(name, fn)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
