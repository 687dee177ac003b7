"""Fixtures of the reliability suite: the demo world and fault-injecting proxies in front of it.

Every proxy is a subprocess (``faultproxy.py``) on a free 127.0.0.1 port, in its own session,
stopped by its process id when the test ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpp_cubes.demo.serve import free_port, stop_process_group, wait_for_port

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
        wait_for_port(port, proc, "faultproxy", timeout=20)
        yield Proxy(url=f"http://127.0.0.1:{port}", log=log, pid=proc.pid)
    finally:
        stop_process_group(proc)
        proc.stderr.close()


@pytest.fixture
def proxy_factory(tmp_path: Path):
    """``proxy_factory(upstream, fault, **kw)``: a context manager starting a fault proxy."""
    def make(upstream: str, fault: str = "none", **kw) -> contextmanager:
        return fault_proxy(upstream, tmp_path, fault, **kw)
    return make
