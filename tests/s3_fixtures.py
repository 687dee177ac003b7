"""A real S3 API for the tests: moto's standalone server on 127.0.0.1, one bucket per test.

Import the fixtures in ``conftest.py`` (like :mod:`demo_fixtures`)::

    from s3_fixtures import s3_bucket, s3_server  # noqa: F401

``s3_server`` (session) starts ``python -m moto.server`` on a free loopback port as a
subprocess in its own session and points this process at it through the standard variables
(``AWS_ENDPOINT_URL``, dummy ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``; the shared
config and credential files are pointed at a missing file, so nothing of the user's AWS
set-up is used); ``s3_bucket`` creates an empty bucket for one test with boto3 and gives
its ``s3://`` URL. Subprocesses (Dask workers, a killed build) get :attr:`S3Server.env`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass(frozen=True)
class S3Server:
    """A running moto server: its endpoint and the environment that reaches it."""

    endpoint: str
    pid: int
    env: dict[str, str] = field(default_factory=dict)

    def create_bucket(self, name: str | None = None) -> str:
        """Create an empty bucket; its ``s3://`` URL."""
        import boto3

        name = name or f"gpp-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1").create_bucket(
            Bucket=name)
        return f"s3://{name}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 for the session; this process's AWS_* point at it."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    from gpp_cubes.demo.serve import free_port, stop_process_group, wait_for_port

    home = tmp_path_factory.mktemp("s3-server")
    log = home / "moto.log"
    port = free_port()
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, cwd=home, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "gpp-test-key-id",
           "AWS_SECRET_ACCESS_KEY": "gpp-test-secret-access-key",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(home / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials")}
    saved = {k: os.environ.get(k) for k in env}
    try:
        wait_for_port(port, proc, "moto server", log=log)
        os.environ.update(env)
        yield S3Server(endpoint=endpoint, pid=proc.pid, env=env)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop_process_group(proc, timeout=10)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket of the session's S3 server: ``s3://gpp-<random>``."""
    return s3_server.create_bucket()
