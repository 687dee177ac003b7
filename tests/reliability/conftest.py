"""Fixtures of the reliability suite: the demo world and fault-injecting proxies in front of it.

Every proxy is a subprocess (``faultproxy.py``) on a free 127.0.0.1 port, in its own session,
stopped by its process id when the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpp_cubes.demo.serve import free_port

PROXY = Path(__file__).with_name("faultproxy.py")


@dataclass(frozen=True)
class Proxy:
    """A running fault proxy: its URL and the log of the faults it injected."""

    url: str
    log: Path
    pid: int

    def faults(self) -> list[dict]:
        """The injected faults so far (one dict per fault: ``fault``, ``key``, ``t``)."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"faultproxy exited with {proc.returncode}: "
                               f"{proc.stderr.read().decode() if proc.stderr else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"faultproxy did not listen on port {port} within {timeout} s")


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM the process group of ``proc`` (SIGKILL after 5 s) and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    if proc.stderr:
        proc.stderr.close()


@contextmanager
def fault_proxy(upstream: str, log_dir: Path, fault: str = "none", *, rate: float = 0.3,
                times: int = 1, match: str = "", timeout_s: float = 1.0,
                rewrite: Sequence[str] = ()) -> Iterator[Proxy]:
    """Run ``faultproxy.py`` in front of ``upstream`` while the context is open."""
    port = free_port()
    log = log_dir / f"faults-{port}.jsonl"
    args = [sys.executable, str(PROXY), "--upstream", upstream, "--port", str(port),
            "--fault", fault, "--rate", str(rate), "--times", str(times),
            "--timeout-s", str(timeout_s), "--log", str(log)]
    if match:
        args += ["--match", match]
    for r in rewrite:
        args += ["--rewrite", r]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        _wait_port(port, proc)
        yield Proxy(url=f"http://127.0.0.1:{port}", log=log, pid=proc.pid)
    finally:
        stop_process(proc)


@pytest.fixture
def proxy_factory(tmp_path: Path):
    """``proxy_factory(upstream, fault, **kw)``: a context manager starting a fault proxy."""
    def make(upstream: str, fault: str = "none", **kw) -> contextmanager:
        return fault_proxy(upstream, tmp_path, fault, **kw)
    return make
