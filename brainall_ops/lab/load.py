"""A bounded HTTP load loop for the cluster's lab tests and bench (standard library only).

Every request is counted: its start, latency, status, which backend served it (the lab app's
JSON says port and pid) or the error. It stops by itself: after `requests` requests, after
`max_seconds`, or when `stop` is set, whichever comes first.

Clients keep their connections alive like real ones. Before reusing a connection a client checks
that the server has not closed it meanwhile (as urllib3 does); a GET that still meets a connection
closed under it before any byte of the answer is re-sent once on a new connection, as RFC 9112
section 9.3.1.1 allows for idempotent requests. Those re-sends are counted apart (`resent`),
never hidden: a request counts as failed when it gets no 2xx answer in the end.
"""

from __future__ import annotations

import http.client
import json
import select
import statistics
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    start: float  # seconds since the load began
    latency: float
    status: int | None
    port: int | None = None
    pid: int | None = None
    error: str | None = None
    resent: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def end(self) -> float:
        return self.start + self.latency


@dataclass
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def count(self) -> int:
        return len(self.samples)

    @property
    def failed(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    @property
    def resent(self) -> int:
        return sum(1 for s in self.samples if s.resent)

    def latency_ms(self, quantile: float) -> float:
        latencies = sorted(s.latency for s in self.samples if s.ok)
        if not latencies:
            return float("nan")
        if len(latencies) == 1:
            return latencies[0] * 1000
        return statistics.quantiles(latencies, n=1000, method="inclusive")[int(quantile * 1000) - 1] * 1000

    @property
    def throughput(self) -> float:
        return sum(1 for s in self.samples if s.ok) / self.seconds if self.seconds else 0.0

    def ports(self, since: float = 0.0, until: float = float("inf")) -> dict[int, int]:
        out: dict[int, int] = {}
        for s in self.samples:
            if s.ok and s.port is not None and since <= s.start < until:
                out[s.port] = out.get(s.port, 0) + 1
        return out

    def pids(self, port: int, since: float = 0.0, until: float = float("inf")) -> set[int]:
        return {s.pid for s in self.samples if s.ok and s.port == port and s.pid and since <= s.start < until}

    def summary(self) -> str:
        errors: dict[str, int] = {}
        for s in self.failed:
            key = s.error or f"HTTP {s.status}"
            errors[key] = errors.get(key, 0) + 1
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "none"
        return (
            f"{self.count} requests in {self.seconds:.1f}s, {len(self.failed)} failed ({detail}), "
            f"{self.resent} re-sent after a closed keep-alive; p50 {self.latency_ms(0.5):.1f} ms, "
            f"p99 {self.latency_ms(0.99):.1f} ms, {self.throughput:.0f} req/s"
        )


class _Client:
    def __init__(self, host: str, port: int, timeout: float, keepalive: bool) -> None:
        self.host, self.port, self.timeout, self.keepalive = host, port, timeout, keepalive
        self.conn: http.client.HTTPConnection | None = None
        self.used = False  # the connection has carried a request already

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is not None and self.used and self._dropped():
            self.close()
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.used = False
        return self.conn

    def _dropped(self) -> bool:
        sock = self.conn.sock if self.conn else None
        if sock is None:
            return True
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)  # an idle connection is readable only when the server closed it

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn, self.used = None, False

    def send(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, bool]:
        """(status, body, resent). Only a GET is ever re-sent."""
        headers = {} if self.keepalive else {"Connection": "close"}
        for attempt in (0, 1):
            conn = self._connection()
            reused = self.used
            try:
                conn.request(method, path, body=body, headers=headers)
                self.used = True
                response = conn.getresponse()
                body = response.read()
                if not self.keepalive or response.will_close:
                    self.close()
                return response.status, body, attempt == 1
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if reused and attempt == 0 and method == "GET":
                    continue  # closed under us before any answer: re-send once (idempotent GET)
                raise
            except (OSError, http.client.HTTPException):
                self.close()
                raise
        raise AssertionError("unreachable")


def run_load(
    host: str,
    port: int = 80,
    path: str = "/",
    *,
    requests: int = 3000,
    concurrency: int = 4,
    max_seconds: float = 60.0,
    rate: float | None = None,
    stop: threading.Event | None = None,
    keepalive: bool = True,
    timeout: float = 10.0,
    origin: float | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> LoadResult:
    """Send up to `requests` requests (GET, or `method` with `body`) from `concurrency` clients (paced
    at `rate` per second in all, or as fast as they go), for at most `max_seconds` or until `stop`."""
    result = LoadResult()
    lock = threading.Lock()
    issued = 0
    begin = time.monotonic() if origin is None else origin  # the samples' clock starts here

    def next_slot() -> int | None:
        nonlocal issued
        with lock:
            if issued >= requests or time.monotonic() - begin >= max_seconds or (stop and stop.is_set()):
                return None
            issued += 1
            return issued - 1

    def worker() -> None:
        client = _Client(host, port, timeout, keepalive)
        try:
            while (slot := next_slot()) is not None:
                if rate:
                    delay = begin + slot / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                t0 = time.monotonic()
                try:
                    status, answer, resent = client.send(method, path, body)
                    served: dict = {}
                    if 200 <= status < 300:
                        try:
                            served = json.loads(answer)
                        except ValueError:
                            served = {}
                    sample = Sample(
                        t0 - begin, time.monotonic() - t0, status, served.get("port"), served.get("pid"), None, resent
                    )
                except (OSError, http.client.HTTPException) as exc:
                    sample = Sample(t0 - begin, time.monotonic() - t0, None, error=type(exc).__name__)
                with lock:
                    result.samples.append(sample)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.monotonic() - begin
    result.samples.sort(key=lambda s: s.start)
    return result


class BackgroundLoad:
    """`run_load` in a thread: start it, do something to the cluster, then `finish()`."""

    def __init__(self, host: str, port: int = 80, **kwargs: object) -> None:
        self.stop = threading.Event()
        self.began = 0.0
        self._result: LoadResult | None = None
        self._thread = threading.Thread(target=self._run, args=(host, port), kwargs=kwargs, daemon=True)

    def _run(self, host: str, port: int, **kwargs: object) -> None:
        self._result = run_load(host, port, stop=self.stop, origin=self.began, **kwargs)  # type: ignore[arg-type]

    def start(self) -> BackgroundLoad:
        self.began = time.monotonic()
        self._thread.start()
        return self

    def now(self) -> float:
        """Seconds since the load began (the samples' clock)."""
        return time.monotonic() - self.began

    def finish(self, tail_s: float = 1.0) -> LoadResult:
        time.sleep(tail_s)
        self.stop.set()
        self._thread.join()
        assert self._result is not None
        return self._result
