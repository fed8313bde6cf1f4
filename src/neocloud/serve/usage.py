"""Tokens from OpenAI-compatible answers, read as they stream past the gateway: the `usage` an
answer carries (prompt and completion tokens), in a JSON body or in the server-sent events of a
streamed one (its last chunk, which an engine sends when the request asks `stream_options:
{include_usage: true}`: the gateway asks it for every streamed completion)."""

from __future__ import annotations

import json
from dataclasses import dataclass

LIMIT = 1 << 20  # of a JSON answer kept to read its usage; a longer one is not metered by tokens
COMPLETIONS = ("/chat/completions", "/completions")


@dataclass(frozen=True, slots=True)
class Tokens:
    prompt: int
    completion: int


def ask_usage(path: str, body: bytes) -> bytes:
    """A streamed completion's request, asking the engine to send its usage as the last event."""
    if not path.rstrip("/").endswith(COMPLETIONS) or b'"stream"' not in body:
        return body
    try:
        request = json.loads(body)
    except ValueError:
        return body
    if not isinstance(request, dict) or request.get("stream") is not True:
        return body
    options = request.get("stream_options")
    if options is None or (isinstance(options, dict) and "include_usage" not in options):
        request["stream_options"] = {**(options or {}), "include_usage": True}
        return json.dumps(request).encode()
    return body


class Meter:
    """Feed it an answer's bytes as they pass; `tokens` is the last usage it carried."""

    def __init__(self, content_type: str) -> None:
        self.events = content_type.startswith("text/event-stream")
        self.json = content_type.startswith("application/json")
        self._buf = bytearray()
        self._usage: Tokens | None = None

    def feed(self, chunk: bytes) -> None:
        if self.events:
            self._buf += chunk
            *lines, rest = self._buf.split(b"\n")
            self._buf = bytearray(rest)
            for line in lines:
                if line.startswith(b"data:") and b'"usage"' in line:
                    self._read(bytes(line[5:]))
        elif self.json and len(self._buf) + len(chunk) <= LIMIT:
            self._buf += chunk
        else:
            self.json = False
            self._buf.clear()

    @property
    def tokens(self) -> Tokens | None:
        if self.json and self._buf:
            self._read(bytes(self._buf))
            self._buf.clear()
        return self._usage

    def _read(self, data: bytes) -> None:
        try:
            usage = json.loads(data).get("usage")
            prompt, completion = int(usage["prompt_tokens"]), int(usage.get("completion_tokens") or 0)
        except (ValueError, AttributeError, TypeError, KeyError):
            return
        if prompt >= 0 and completion >= 0:
            self._usage = Tokens(prompt, completion)
