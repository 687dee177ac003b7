"""Secrets hygiene: a planted credential never reaches logs, error messages or provenance."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import REFERENCE

from gpp_cubes import secrets
from gpp_cubes.errors import ConfigError
from gpp_cubes.secrets import (
    MASK,
    RedactingFilter,
    get_credential,
    install_redaction,
    redact,
    redact_mapping,
    register_secret,
    uninstall_redaction,
)

REFERENCE_S2 = REFERENCE / "pc-sentinel-2-l2a-item-2019.json"

PLANTED_KEY = "pcKEY-5f0c2e9a71d84b63a0e5c9d7e4b1f2a8"
PLANTED_SIG = "PLANTEDs1gN4tUrE%2Bq9X%2FzW0rTy7uIoP%3D"
SAS_TOKEN = (
    "st=2024-05-01T10%3A00%3A00Z&se=2024-05-02T11%3A00%3A00Z&sp=rl&sv=2021-06-08&sr=c"
    "&skoid=c85c15d6-d1ae-42d4-af60-e2ca0f81359b&sktid=72f988bf-86f1-41af-91ab-2d7cd011db47"
    "&skt=2024-05-01T09%3A00%3A00Z&ske=2024-05-08T09%3A00%3A00Z&sks=b&skv=2021-06-08"
    f"&sig={PLANTED_SIG}"
)
# A service-account key file as Google issues them (the key itself is made up).
FAKE_PEM = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
    "q1w2e3r4t5y6u7i8o9p0PLANTEDPEMBODY\n-----END PRIVATE KEY-----\n"
)


@pytest.fixture(autouse=True)
def _clean_registry(monkeypatch: pytest.MonkeyPatch):
    secrets.forget_secrets()
    for var in ("PC_SDK_SUBSCRIPTION_KEY", "PC_SDK_SUBSCRIPTION_KEY_FILE", "EE_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    yield
    uninstall_redaction()
    secrets.forget_secrets()


# ------------------------------------------------------------------------------------------
# get_credential
# ------------------------------------------------------------------------------------------
def test_credential_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", f"  {PLANTED_KEY}\n")
    got = get_credential("Planetary Computer key", env_var="PC_SDK_SUBSCRIPTION_KEY")
    assert got == PLANTED_KEY


def test_credential_absent_is_none() -> None:
    assert (
        get_credential(
            "Planetary Computer key",
            env_var="PC_SDK_SUBSCRIPTION_KEY",
            file_env_var="PC_SDK_SUBSCRIPTION_KEY_FILE",
        )
        is None
    )


def test_credential_from_user_given_file_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "pc-key"
    key_file.write_text(PLANTED_KEY + "\n")
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY_FILE", str(key_file))
    kwargs = {"env_var": "PC_SDK_SUBSCRIPTION_KEY", "file_env_var": "PC_SDK_SUBSCRIPTION_KEY_FILE"}
    assert get_credential("PC key", **kwargs) == PLANTED_KEY
    # The value read from the file is masked from now on, though no env var holds it.
    assert PLANTED_KEY not in redact(f"signing with {PLANTED_KEY}")
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", "another-key-from-env")
    assert get_credential("PC key", **kwargs) == "another-key-from-env"


def test_missing_credential_file_names_variable_and_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.json"
    monkeypatch.setenv("EE_KEY_FILE", str(missing))
    with pytest.raises(ConfigError, match="EE_KEY_FILE") as info:
        get_credential("Earth Engine service account", env_var="EE_KEY", file_env_var="EE_KEY_FILE")
    assert str(missing) in str(info.value)


def test_service_account_file_secrets_are_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private_key_id = "0123456789abcdef0123456789abcdef01234567"
    account = {
        "type": "service_account",
        "project_id": "gpp-cubes-test",
        "private_key_id": private_key_id,
        "private_key": FAKE_PEM,
        "client_email": "gpp@gpp-cubes-test.iam.gserviceaccount.com",
    }
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(account))
    monkeypatch.setenv("EE_KEY_FILE", str(path))
    content = get_credential("Earth Engine", env_var="EE_KEY", file_env_var="EE_KEY_FILE")
    assert json.loads(content)["client_email"] == account["client_email"]
    # Not the file's exact text (that is masked whole): its fields, re-serialised.
    leaked = f"auth failed for key {private_key_id}: {json.dumps(account, indent=1)}"
    out = redact(leaked)
    assert private_key_id not in out
    assert "PLANTEDPEMBODY" not in out and "BEGIN PRIVATE KEY" not in out
    assert account["client_email"] in out  # not a secret: stays readable


# ------------------------------------------------------------------------------------------
# redact
# ------------------------------------------------------------------------------------------
def test_planted_env_token_is_redacted_from_exception_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", PLANTED_KEY)
    try:
        raise RuntimeError(f"401 Unauthorized: subscription key {PLANTED_KEY} rejected")
    except RuntimeError as err:
        message = redact(str(err))
    assert PLANTED_KEY not in message
    assert message == f"401 Unauthorized: subscription key {MASK} rejected"


def test_short_and_non_secret_env_values_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPP_SKIP_KEY", "1")  # too short to be a secret
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/run/secrets/ee.json")  # a path
    text = "site DE-Hai: 1 of 12 scenes dropped, key file /run/secrets/ee.json, NDVI 0.81"
    assert redact(text) == text


def test_sas_signature_stripped_from_hand_written_href() -> None:
    href = (
        "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/32/U/PB/2019/07/01/B04.tif"
        f"?{SAS_TOKEN}"
    )
    out = redact(f"failed to read {href} after 5 retries")
    assert PLANTED_SIG not in out and "c85c15d6" not in out and "sig=" + MASK in out
    # The href stays readable up to the query, so the log still names the file.
    assert out.startswith("failed to read https://sentinel2l2a01.blob.core.windows.net/")
    assert "B04.tif?st=***&se=***" in out and out.endswith(" after 5 retries")


def test_ordinary_query_strings_are_kept() -> None:
    url = "https://planetarycomputer.microsoft.com/api/stac/v1/search?collections=s2&limit=100"
    assert redact(url) == url


def test_subscription_key_query_and_header_are_masked() -> None:
    text = (
        "GET https://planetarycomputer.microsoft.com/api/sas/v1/token/sentinel2l2a01/s2"
        "?subscription-key=abcdefgh12345678 headers={'Ocp-Apim-Subscription-Key': "
        "'abcdefgh12345678'} Authorization: Bearer ya29.a0AfH6SMBx-planted-oauth-token"
    )
    out = redact(text)
    assert "abcdefgh12345678" not in out and "planted-oauth-token" not in out


def test_signed_planetary_computer_item_hrefs_are_redacted(monkeypatch: pytest.MonkeyPatch):
    """Sign a real PC item with planetary-computer itself (token cache pre-filled, so no
    network call), then check no signature survives logging or provenance."""
    if not REFERENCE_S2.is_file():
        pytest.skip(f"reference item {REFERENCE_S2} not available")
    pc = pytest.importorskip("planetary_computer")
    import pystac
    from planetary_computer import sas as pc_sas

    item = pystac.Item.from_dict(json.loads(REFERENCE_S2.read_text()))
    href = item.assets["B04"].href
    account = href.split("//", 1)[1].split(".", 1)[0]
    container = href.split(".net/", 1)[1].split("/", 1)[0]
    cache_key = f"{pc_sas.Settings.get().sas_url}/{account}/{container}"
    token = pc_sas.SASToken(token=SAS_TOKEN, expiry=datetime.now(UTC) + timedelta(hours=1))
    monkeypatch.setitem(pc_sas.TOKEN_CACHE, cache_key, token)

    signed = pc.sign(item)
    signed_href = signed.assets["B04"].href
    assert PLANTED_SIG in signed_href  # the library really signed it with our token

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("gpp_cubes.test_secrets.signing")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        install_redaction()
        logger.info("loading %s from %s", "B04", signed_href)
    finally:
        logger.removeHandler(handler)
    assert PLANTED_SIG not in stream.getvalue()
    assert href in stream.getvalue()  # the unsigned part stays for debugging

    provenance = {"items": [{"id": signed.id, "assets": {"B04": signed_href}}]}
    assert PLANTED_SIG not in json.dumps(redact_mapping(provenance))


@settings(max_examples=60, deadline=None)
@given(
    token=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEF0123456789-_", min_size=8, max_size=40),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
)
def test_registered_token_never_survives(token: str, before: str, after: str) -> None:
    register_secret(token)
    out = redact(before + token + after + token)
    assert token not in out
    secrets.forget_secrets()


# ------------------------------------------------------------------------------------------
# logging
# ------------------------------------------------------------------------------------------
def _capture(logger_name: str) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger(logger_name)
    logger.setLevel(logging.DEBUG)
    return logger, stream, handler


def test_planted_token_never_appears_in_log_output(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", PLANTED_KEY)
    install_redaction()
    # The handler is attached to the root logger *after* installation and the record comes
    # from a child logger: logger-level filters would miss it, the record factory does not.
    root_stream = io.StringIO()
    root_handler = logging.StreamHandler(root_stream)
    root_handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(root_handler)
    root.setLevel(logging.DEBUG)
    child = logging.getLogger("gpp_cubes.stac.search.deep.child")
    try:
        child.info("using key %s", PLANTED_KEY)
        child.warning({"headers": {"Ocp-Apim-Subscription-Key": PLANTED_KEY}})
        try:
            raise PermissionError(f"token {PLANTED_KEY} expired")
        except PermissionError:
            child.exception("request failed")
        child.error("retrying", stack_info=True)
    finally:
        root.removeHandler(root_handler)
        root.setLevel(old_level)
    out = root_stream.getvalue()
    assert PLANTED_KEY not in out
    assert out.count(MASK) >= 3
    assert "PermissionError" in out and "request failed" in out  # traceback kept, masked


def test_filter_alone_on_a_handler_redacts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", PLANTED_KEY)
    logger, stream, handler = _capture("gpp_models.test_secrets.filter")
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.debug("config: %r", {"subscription_key": PLANTED_KEY, "epochs": 3})
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert PLANTED_KEY not in out and "'epochs': 3" in out


def test_without_redaction_the_token_would_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: the capture set-up above does show secrets when nothing redacts them."""
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", PLANTED_KEY)
    logger, stream, handler = _capture("gpp_cubes.test_secrets.control")
    logger.addHandler(handler)
    try:
        logger.info("using key %s", PLANTED_KEY)
    finally:
        logger.removeHandler(handler)
    assert PLANTED_KEY in stream.getvalue()


# ------------------------------------------------------------------------------------------
# provenance / JSON outputs
# ------------------------------------------------------------------------------------------
def test_redact_mapping_masks_provenance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", PLANTED_KEY)
    provenance = {
        "site_id": "DE-Hai",
        "stac": {"endpoint": "https://planetarycomputer.microsoft.com/api/stac/v1"},
        "parameters": {"max_cloud": 80, "subscription_key": "not-in-env-but-named-secret"},
        "asset_keys": ["B02", "B03", "B04"],
        "note": f"signed with {PLANTED_KEY}",
        "items": ("S2A_1", "S2B_2"),
        "n_scenes": 12,
        "failed": None,
    }
    out = redact_mapping(provenance)
    text = json.dumps(out)
    assert PLANTED_KEY not in text and "not-in-env-but-named-secret" not in text
    assert out["asset_keys"] == ["B02", "B03", "B04"]  # harmless "key" names survive
    assert out["items"] == ["S2A_1", "S2B_2"] and out["n_scenes"] == 12
    assert out["failed"] is None and out["site_id"] == "DE-Hai"
    assert provenance["note"] == f"signed with {PLANTED_KEY}"  # input not modified
