"""Tokens read from OpenAI-compatible answers as they pass: whole JSON, or streamed events split
anywhere; a streamed completion's request asks for its usage."""

from __future__ import annotations

import json

from neocloud.serve.usage import Meter, Tokens, ask_usage


def test_a_json_answers_usage() -> None:
    m = Meter("application/json")
    body = json.dumps({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 7}}).encode()
    for i in range(0, len(body), 5):
        m.feed(body[i:i + 5])
    assert m.tokens == Tokens(12, 7)


def test_a_streamed_answers_last_usage_split_anywhere() -> None:
    events = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in (
        {"choices": [{"delta": {"content": "Hi"}}], "usage": None},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}})) + b"data: [DONE]\n\n"
    m = Meter("text/event-stream; charset=utf-8")
    for i in range(0, len(events), 7):
        m.feed(events[i:i + 7])
    assert m.tokens == Tokens(9, 3)


def test_no_usage_or_a_bad_one_is_none() -> None:
    m = Meter("application/json")
    m.feed(b'{"usage": {"prompt_tokens": -1}}')
    assert m.tokens is None
    other = Meter("text/plain")
    other.feed(b'{"usage": {"prompt_tokens": 1}}')
    assert other.tokens is None


def test_a_streamed_completion_asks_for_its_usage() -> None:
    asked = json.loads(ask_usage("/v1/chat/completions", b'{"stream": true, "messages": []}'))
    assert asked["stream_options"] == {"include_usage": True}
    kept = b'{"stream": true, "stream_options": {"include_usage": false}}'
    assert ask_usage("/v1/chat/completions", kept) == kept  # the caller said no
    assert ask_usage("/v1/embeddings", b'{"stream": true}') == b'{"stream": true}'
    assert ask_usage("/v1/completions", b'{"stream": false}') == b'{"stream": false}'
