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


def test_tokens_are_priced_per_million_by_model_or_any_and_by_the_hour() -> None:
    from decimal import Decimal

    from neocloud.model.billing import Tokens as Used
    from neocloud.model.billing import invoice

    prices = {("*", "prompt-tokens"): [(0.0, Decimal("0.10"))], ("*", "completion-tokens"): [(0.0, Decimal("0.40"))],
              ("smol", "completion-tokens"): [(0.0, Decimal("1.00")), (9000.0, Decimal("2.00"))]}  # set during hour 2
    used = [Used("t", "smol", 0.0, 1_000_000, 250_000), Used("t", "smol", 7200.0, 0, 500_000),
            Used("t", "other", 3600.0, 2_000_000, 0), Used("someone-else", "smol", 0.0, 9, 9)]
    bill = invoice("t", 0.0, 10_800.0, [], [], prices, tokens=used)
    lines = {line["kind"]: (line["tokens"], line["price"], line["amount"]) for line in bill["lines"]}
    assert lines == {"prompt tokens of other": (2_000_000, Decimal("0.1000"), Decimal("0.20")),
                     "completion tokens of smol": (750_000, Decimal("1.6667"), Decimal("1.25")),
                     "prompt tokens of smol": (1_000_000, Decimal("0.1000"), Decimal("0.10"))}
    assert bill["total"] == Decimal("1.55")
