"""A stand-in for Ollama in tests: answers GET /api/tags (and /api/version) like Ollama does,
listing the models whose manifests are in the models directory. Standard library only."""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def tags(models_dir: Path) -> dict:
    models = []
    root = models_dir / "manifests" / "registry.ollama.ai" / "library"
    for manifest in sorted(root.glob("*/*")):
        data = json.loads(manifest.read_text())
        size = sum(layer.get("size", 0) for layer in data.get("layers", []))
        name = f"{manifest.parent.name}:{manifest.name}"
        models.append({"name": name, "model": name, "size": size, "digest": data.get("config", {}).get("digest")})
    return {"models": models}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/api/tags":
                body = json.dumps(tags(args.models)).encode()
            elif self.path == "/api/version":
                body = b'{"version": "standin"}'
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
