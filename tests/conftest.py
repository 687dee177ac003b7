"""Suite-wide settings: GDAL defaults for HTTP reads; network access is limited to loopback
by pytest-socket (``--allow-hosts`` in pyproject.toml), so a test that would silently reach
out to the internet fails instead."""

from __future__ import annotations

import os

# GDAL must not list directories or probe side files on every /vsicurl/ open.
os.environ.setdefault("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
os.environ.setdefault("GDAL_HTTP_MAX_RETRY", "3")
os.environ.setdefault("GDAL_HTTP_RETRY_DELAY", "0.2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

# The demo world (generated once per session, shared by xdist workers) and its servers.
from demo_fixtures import demo_world, served_demo  # noqa: F401

# A real S3 API (moto's server on 127.0.0.1) for the object-storage tests.
from s3_fixtures import s3_bucket, s3_server  # noqa: F401
