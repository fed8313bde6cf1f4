"""A small HTTP service for the tests, run as a service's replica (its code, uploaded): it listens
on $PORT and says which replica answered; /stream sends server-sent events one by one; /slow
answers after a pause; /health is ready once `ready` exists in its directory (or at once)."""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WHO = {"replica": int(os.environ["NEOCLOUD_JOB_ID"]), "version": os.environ.get("VERSION", "")}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            ok = os.environ.get("WAIT_READY") is None or os.path.exists("ready")
            self._send(200 if ok else 503, b"ok" if ok else b"starting")
        elif self.path.startswith("/slow"):
            time.sleep(float(self.path.partition("?s=")[2] or 0.5))
            self._send(200, json.dumps(WHO).encode())
        elif self.path == "/stream":
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(5):
                event = f"data: {json.dumps({'n': i, **WHO})}\n\n".encode()
                self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                self.wfile.flush()
                time.sleep(0.2)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._send(200, json.dumps({**WHO, "path": self.path,
                                        "auth": self.headers.get("authorization")}).encode())

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/v1/chat/completions":
            return self._chat(json.loads(body))
        self._send(200, json.dumps({**WHO, "echo": body.decode()}).encode())

    def _chat(self, request: dict) -> None:
        """OpenAI's shape, one word a token: the prompt's words in, as many words out as asked."""
        prompt = sum(len(m["content"].split()) for m in request["messages"])
        words = ["word"] * int(request.get("max_tokens", 3))
        usage = {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)}
        if not request.get("stream"):
            answer = {"object": "chat.completion", "choices": [{"message": {"role": "assistant",
                                                                            "content": " ".join(words)}}],
                      "usage": usage}
            return self._send(200, json.dumps(answer).encode())
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        events = [{"choices": [{"delta": {"content": w}}]} for w in words]
        if (request.get("stream_options") or {}).get("include_usage"):
            events.append({"choices": [], "usage": usage})
        for e in [*(f"data: {json.dumps(e)}" for e in events), "data: [DONE]"]:
            chunk = f"{e}\n\n".encode()
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


if __name__ == "__main__":
    print(f"replica {WHO['replica']} on port {os.environ['PORT']}", flush=True)
    ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
    sys.exit(0)
