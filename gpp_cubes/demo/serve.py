"""Serve a demo world on 127.0.0.1: files over HTTP with Range support, items by a STAC API.

Two subprocesses, each in its own session (process group):

- ``python -m gpp_cubes.demo.fileserver PORT --bind 127.0.0.1`` answers Range requests on
  the world directory with 206, so GDAL's ``/vsicurl/`` reads COG tiles as it does from cloud
  storage (a server thread inside the reading process stalls GDAL: it probes side files
  while holding the GIL);
- ``rustac serve --addr 127.0.0.1:PORT <collections> <items>``: a real STAC API (core +
  item search, in-memory backend) answering pystac-client's ``/search``.

Stored items carry hrefs relative to the world directory; they are made absolute
(``http://127.0.0.1:FILES_PORT/...``) into a temporary directory at serve time. Leaving the
context manager sends SIGTERM to both process groups (SIGKILL after 5 s) and removes the
temporary directory, so nothing is left running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpp_cubes.errors import GppError, StacError

from .world import COLLECTIONS, MARKER, World


@dataclass(frozen=True)
class ServedWorld:
    """A demo world being served.

    Attributes
    ----------
    stac_url : str
        Root of the STAC API (``http://127.0.0.1:PORT``), for ``pystac_client.Client.open``.
    files_url : str
        Root URL of the world's files (``http://127.0.0.1:PORT``).
    world : World
        The world.
    pids : tuple of int
        Process ids of the file server and the STAC API.
    """

    stac_url: str
    files_url: str
    world: World
    pids: tuple[int, ...] = ()

    def file_stats(self, *, reset: bool = False) -> dict[str, Any]:
        """What the file server has answered since it started or was last reset.

        Parameters
        ----------
        reset : bool, default False
            Start counting afresh after reading.

        Returns
        -------
        dict
            ``requests`` (method -> count), ``ranged_gets``, ``body_bytes`` [bytes],
            ``status`` (code -> count) and ``cpu_s``, the server process's CPU time since
            the last reset [s] (see :class:`gpp_cubes.demo.fileserver.Stats`).
        """
        return file_server_stats(self.files_url, reset=reset)

    def reset_file_stats(self) -> None:
        """Start the file server's counts afresh."""
        file_server_stats(self.files_url, reset=True)


def file_server_stats(files_url: str, *, reset: bool = False) -> dict[str, Any]:
    """The counts of a :mod:`gpp_cubes.demo.fileserver` at ``files_url`` (see
    :meth:`ServedWorld.file_stats`)."""
    from .fileserver import STATS_PATH

    url = files_url.rstrip("/") + STATS_PATH + ("?reset=1" if reset else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rustac() -> str:
    exe = shutil.which("rustac") or str(Path(sys.executable).with_name("rustac"))
    if not Path(exe).exists():
        raise StacError("the `rustac` command is not installed (pip install rustac)")
    return exe


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen, what: str, target: str,
                timeout: float, output: Callable[[], str], error: type[Exception]) -> None:
    """Poll ``ready`` every 50 ms until it holds; ``error`` if ``proc`` exits or time runs out.

    ``ready`` may raise OSError (the server is not up yet); the last one is in the timeout
    message. ``output`` gives what the process printed, shown when it exits early.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise error(f"{what} exited with code {proc.returncode} before answering "
                        f"{target}: {output().strip()[-2000:]}")
        try:
            if ready():
                return
        except OSError as e:  # urllib.error.URLError is an OSError
            last = e
        time.sleep(0.05)
    raise error(f"{what} did not answer {target} within {timeout:.0f} s"
                + (f" ({last})" if last else ""))


def _wait(url: str, proc: subprocess.Popen, name: str, timeout: float = 30.0) -> None:
    def answers() -> bool:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200

    _wait_until(answers, proc, name, url, timeout, lambda: _log_tail(proc), StacError)


def wait_for_port(port: int, proc: subprocess.Popen, what: str, *, timeout: float = 60.0,
                  log: Path | None = None) -> None:
    """Wait until a subprocess accepts TCP connections on a port of 127.0.0.1.

    Parameters
    ----------
    port : int
        Port on 127.0.0.1 the process is to listen on.
    proc : subprocess.Popen
        The process; if it exits first, the error carries the end of its output.
    what : str
        What the process is, for the error message (e.g. ``"moto server"``).
    timeout : float, default 60
        Seconds to wait [s].
    log : Path, optional
        File the process writes its output to; without it, its stderr pipe (if any) is
        read once it has exited.

    Raises
    ------
    GppError
        If the process exits, or does not listen within ``timeout``.
    """
    def listens() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    def output() -> str:
        if log is not None:
            return log.read_text(errors="replace") if log.exists() else ""
        return proc.stderr.read().decode(errors="replace") if proc.stderr else ""

    _wait_until(listens, proc, what, f"on 127.0.0.1:{port}", timeout, output, GppError)


def stop_process_group(proc: subprocess.Popen, *, timeout: float = 5.0) -> None:
    """Stop a process started with ``start_new_session=True``, with all its children.

    SIGTERM to its process group, then SIGKILL if the process has not exited within
    ``timeout``; the process is reaped either way. Nothing happens if it has already exited.

    Parameters
    ----------
    proc : subprocess.Popen
        The process, leader of its own process group (session).
    timeout : float, default 5
        Seconds to wait after SIGTERM, and again after SIGKILL [s].

    Raises
    ------
    subprocess.TimeoutExpired
        If the process outlives SIGKILL by ``timeout`` (stuck in the kernel).
    """
    if proc.poll() is not None:
        return
    # The group may already be gone (the process exited between poll and kill).
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


_LOGS: dict[int, Path] = {}


def _log_tail(proc: subprocess.Popen) -> str:
    log = _LOGS.get(proc.pid)
    return log.read_text(errors="replace") if log and log.exists() else ""


def _start(args: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    # The servers log one line per request: send it to a file, never to an undrained pipe
    # (a full pipe buffer blocks the server after a few hundred requests).
    with open(log, "wb") as sink:
        proc = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
    _LOGS[proc.pid] = log
    return proc


def write_served_items(world: World, files_url: str, stac_url: str, out: Path) -> list[Path]:
    """Collections and item collections with absolute hrefs, ready for ``rustac serve``."""
    paths = []
    for cid in COLLECTIONS:
        cpath = world.collection_path(cid)
        if not cpath.exists():
            continue
        coll = json.loads(cpath.read_text())
        p = out / f"{cid}.collection.json"
        p.write_text(json.dumps(coll))
        paths.append(p)
        items = world.items(cid, base_url=files_url)
        for it in items:
            it["links"] = [
                {"rel": "collection", "href": f"{stac_url}/collections/{cid}",
                 "type": "application/json"},
                {"rel": "parent", "href": f"{stac_url}/collections/{cid}",
                 "type": "application/json"},
                {"rel": "root", "href": f"{stac_url}/", "type": "application/json"},
            ]
        if items:
            p = out / f"{cid}.items.json"
            p.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
            paths.append(p)
    return paths


@contextmanager
def serve_world(world: World, *, timeout: float = 60.0) -> Iterator[ServedWorld]:
    """Serve a world's files and items on 127.0.0.1 while the context is open.

    Parameters
    ----------
    world : World
        A generated world (:func:`gpp_cubes.demo.generate_world`).
    timeout : float, default 60
        Seconds to wait for each server to answer.

    Yields
    ------
    ServedWorld
        ``stac_url`` for pystac-client and ``files_url`` for the assets.

    Raises
    ------
    StacError
        If a server cannot be started or does not answer.
    """
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="gpp-demo-serve-"))
        stack.callback(shutil.rmtree, tmp, True)
        files = stack.enter_context(serve_files(world.root, timeout=timeout, probe=MARKER))
        stac_port = free_port()
        stac_url = f"http://127.0.0.1:{stac_port}"
        paths = write_served_items(world, files.url, stac_url, tmp)
        stac = stack.enter_context(serve_stac(paths, port=stac_port, timeout=timeout))
        yield ServedWorld(stac_url=stac.url, files_url=files.url, world=world,
                          pids=(files.pid, stac.pid))


@dataclass(frozen=True)
class LocalServer:
    """A server subprocess on 127.0.0.1: its root URL and process id."""

    url: str
    pid: int


@contextmanager
def _serve(args: list[str], port: int, probe_url: str, name: str, timeout: float,
           cwd: Path | None = None) -> Iterator[LocalServer]:
    with tempfile.TemporaryDirectory(prefix="gpp-serve-") as logs:
        proc = _start(args, Path(logs) / "server.log", cwd=cwd)
        try:
            _wait(probe_url, proc, name, timeout)
            yield LocalServer(url=f"http://127.0.0.1:{port}", pid=proc.pid)
        finally:
            stop_process_group(proc)
            _LOGS.pop(proc.pid, None)


@contextmanager
def serve_files(directory: str | Path, *, port: int | None = None, timeout: float = 60.0,
                probe: str = "") -> Iterator[LocalServer]:
    """Serve a directory over HTTP, with Range requests, on 127.0.0.1.

    GDAL's ``/vsicurl/`` needs Range requests (Python's ``http.server`` ignores them), which
    :mod:`gpp_cubes.demo.fileserver` answers. It runs as another process: in-process servers
    stall GDAL, which holds the GIL while probing side files.

    Parameters
    ----------
    directory : path
        Directory to serve.
    port : int, optional
        Port (default: a free one).
    timeout : float, default 60
        Seconds to wait for the server to answer [s].
    probe : str, default ""
        Path (relative to the root) that must answer 200 before the server counts as up.
    """
    port = port or free_port()
    with _serve([sys.executable, "-m", "gpp_cubes.demo.fileserver", str(port), "--bind",
                 "127.0.0.1", "--directory", str(Path(directory).absolute())],
                port, f"http://127.0.0.1:{port}/{probe}", "the demo file server",
                timeout, cwd=Path(directory)) as server:
        yield server


@contextmanager
def serve_stac(paths: list[Path], *, port: int | None = None,
               timeout: float = 60.0) -> Iterator[LocalServer]:
    """Serve collections and item collections (JSON files) as a STAC API on 127.0.0.1.

    ``rustac serve`` with its in-memory backend: core and item search (GET and POST), which
    is what pystac-client's ``search`` needs.

    Parameters
    ----------
    paths : list of Path
        Collection JSON files and FeatureCollections of their items.
    port : int, optional
        Port (default: a free one).
    timeout : float, default 60
        Seconds to wait for the API to answer [s].
    """
    port = port or free_port()
    with _serve([_rustac(), "serve", "--addr", f"127.0.0.1:{port}", *map(str, paths)], port,
                f"http://127.0.0.1:{port}/collections", "the STAC API (rustac serve)",
                timeout) as server:
        yield server


def serve_forever(world: World) -> None:
    """Serve a world until interrupted (Ctrl-C or SIGTERM), printing the URLs."""
    stop = {"flag": False}

    def _handler(signum: int, frame: object) -> None:
        stop["flag"] = True

    old = signal.signal(signal.SIGTERM, _handler)
    try:
        with serve_world(world) as served:
            print(f"STAC API: {served.stac_url}\nfiles:    {served.files_url}", flush=True)
            while not stop["flag"]:
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
