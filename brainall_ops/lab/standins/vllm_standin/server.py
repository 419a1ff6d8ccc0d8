"""The OpenAI-compatible server of the vLLM stand-in.

Readiness like vLLM's: `/health` 200 with an empty body, `/v1/models` an OpenAI model list holding
the served name. "Unready" (503 on both) while loading (`load_s`) and whenever the unready file
exists and is empty or names this server's served name on a line; the file is read on each
request, so a test flips readiness without restarting anything.
"""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEFAULT_UNREADY_FILE = "/etc/vllm-standin/unready"


class StandIn:
    def __init__(self, model: str, served_name: str, max_model_len: int | None, load_s: float, unready_file: str):
        self.model = model
        self.served_name = served_name
        self.max_model_len = max_model_len
        self.ready_at = time.monotonic() + load_s
        self.unready_file = Path(unready_file)
        self.created = int(time.time())

    def ready(self) -> bool:
        if time.monotonic() < self.ready_at:
            return False
        try:
            text = self.unready_file.read_text(encoding="utf-8")
        except OSError:
            return True
        names = {line.strip() for line in text.splitlines() if line.strip()}
        return bool(names) and self.served_name not in names

    def models(self) -> dict:
        card = {
            "id": self.served_name,
            "object": "model",
            "created": self.created,
            "owned_by": "vllm",
            "root": self.model,
            "parent": None,
        }
        if self.max_model_len:
            card["max_model_len"] = self.max_model_len
        return {"object": "list", "data": [card]}


def make_handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "vllm-standin"

        def log_message(self, fmt: str, *args: object) -> None:  # journal, one line per request
            print(f"{self.address_string()} {fmt % args}", flush=True)

        def _send(self, status: int, body: bytes = b"", kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: dict) -> None:
            self._send(status, json.dumps(data).encode())

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200 if standin.ready() else 503)
            elif self.path == "/v1/models":
                if standin.ready():
                    self._json(200, standin.models())
                else:
                    self._json(503, {"error": {"message": "model is loading", "type": "ServiceUnavailable"}})
            elif self.path == "/version":
                self._json(200, {"version": "standin"})
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                request = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._json(400, {"error": {"message": "body is not JSON"}})
                return
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            if not standin.ready():
                self._json(503, {"error": {"message": "model is loading"}})
                return
            if request.get("model") != standin.served_name:
                self._json(404, {"error": {"message": f"The model `{request.get('model')}` does not exist."}})
                return
            tokens = max(1, min(int(request.get("max_tokens") or 16), 64))
            text = " ".join(["standin"] * tokens)
            usage = {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1}
            if self.path == "/v1/chat/completions":
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
            else:
                choice = {"index": 0, "text": text, "finish_reason": "length"}
            self._json(
                200,
                {
                    "id": "cmpl-standin",
                    "object": "chat.completion" if "chat" in self.path else "text_completion",
                    "created": int(time.time()),
                    "model": standin.served_name,
                    "choices": [choice],
                    "usage": usage,
                },
            )

    return Handler


def serve(
    model: str,
    served_name: str,
    host: str,
    port: int,
    max_model_len: int | None = None,
    load_s: float = 0.0,
    unready_file: str | None = None,
) -> ThreadingHTTPServer:
    """Start serving in a background thread; returns the server (`.shutdown()` to stop)."""
    unready = unready_file or os.environ.get("VLLM_STANDIN_UNREADY_FILE") or DEFAULT_UNREADY_FILE
    standin = StandIn(model, served_name, max_model_len, load_s, unready)
    server = ThreadingHTTPServer((host, port), make_handler(standin))
    server.daemon_threads = True
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True, name="vllm-standin"
    ).start()
    return server
