"""The readiness probe (units' ExecStartPost and the migration gate) against the test's small
OpenAI-compatible server on loopback, standing where vLLM's process would be. Not real vLLM."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from brainall_ops.inference import probe
from brainall_ops.lab.standins.vllm_standin.server import serve


@pytest.fixture
def unready_file(tmp_path: Path) -> Path:
    return tmp_path / "unready"


@pytest.fixture
def server(unready_file: Path) -> Iterator[ThreadingHTTPServer]:
    httpd = serve("/models/mistral-7b", "mistral-7b", "127.0.0.1", 0, 8192, unready_file=str(unready_file))
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url_of(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def test_ready_when_health_is_200_and_the_served_name_is_listed(server: ThreadingHTTPServer) -> None:
    status = probe.check("mistral-7b", url_of(server), None)
    assert (status.ready, status.reason) == (True, "ready")


def test_another_served_name_is_not_ready(server: ThreadingHTTPServer) -> None:
    status = probe.check("llama-3.3-70b", url_of(server), None)
    assert not status.ready
    assert status.reason == "/v1/models lists ['mistral-7b'], not 'llama-3.3-70b'"


def test_the_stand_in_told_to_stay_unready_answers_503(server: ThreadingHTTPServer, unready_file: Path) -> None:
    unready_file.write_text("mistral-7b\n")
    assert probe.check("mistral-7b", url_of(server), None).reason == "/health answered 503"
    unready_file.write_text("some-other-model\n")
    assert probe.check("mistral-7b", url_of(server), None).ready
    unready_file.write_text("")  # empty: every stand-in on the host stays unready
    assert not probe.check("mistral-7b", url_of(server), None).ready


def test_nothing_listening_is_not_ready() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), object) as unused:  # type: ignore[arg-type]
        port = unused.server_address[1]
    status = probe.check("mistral-7b", f"http://127.0.0.1:{port}", None)
    assert not status.ready and status.reason.startswith("no answer")


def test_a_unit_that_is_not_active_is_not_ready(server: ThreadingHTTPServer) -> None:
    # This machine has no systemd as PID 1: the unit reads as not active, never as ready.
    status = probe.check("mistral-7b", url_of(server), "vllm@mistral-7b.service")
    assert not status.ready and "vllm@mistral-7b.service is" in status.reason


def test_check_prints_one_json_line_per_endpoint(server: ThreadingHTTPServer, capsys: pytest.CaptureFixture) -> None:
    url = url_of(server)
    code = probe.main(["check", "--endpoint", f"mistral-7b={url}", "--endpoint", f"whisper={url}"])
    # (the in-process stand-in logs its requests to stdout too)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert code == 1
    assert [(s["name"], s["ready"]) for s in lines] == [("mistral-7b", True), ("whisper", False)]


def test_wait_fails_with_why_and_the_note(
    server: ThreadingHTTPServer, unready_file: Path, capsys: pytest.CaptureFixture
) -> None:
    unready_file.write_text("mistral-7b\n")
    code = probe.main(
        [
            "wait",
            "--endpoint",
            f"mistral-7b={url_of(server)}",
            "--timeout",
            "1",
            "--interval",
            "0.2",
            "--note",
            "ollama keeps serving",
        ]
    )
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        f"not ready after 1 s: mistral-7b at {url_of(server)}: /health answered 503; ollama keeps serving"
    )


def test_wait_returns_once_the_model_becomes_ready(server: ThreadingHTTPServer, unready_file: Path) -> None:
    unready_file.write_text("mistral-7b\n")
    became_ready = threading.Event()

    def load() -> None:
        became_ready.wait(10)
        unready_file.unlink()

    loader = threading.Thread(target=load)
    loader.start()
    became_ready.set()
    ready, statuses, _ = probe.wait_all([("mistral-7b", url_of(server))], {}, timeout_s=30, interval_s=0.1)
    loader.join()
    assert ready and statuses[0].reason == "ready"


def test_bad_endpoint_syntax_is_refused() -> None:
    with pytest.raises(SystemExit, match="expected NAME=VALUE"):
        probe.main(["check", "--endpoint", "http://127.0.0.1:1"])
