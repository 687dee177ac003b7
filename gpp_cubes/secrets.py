"""Credentials in, never out: read them from the environment or a user-given file, and redact
them from everything the pipeline writes (logs, error messages, provenance, outputs).

Where credentials come from (nothing else is consulted: no config files, no home-directory
token caches of our own):

- Planetary Computer: ``PC_SDK_SUBSCRIPTION_KEY`` (or a file named by
  ``PC_SDK_SUBSCRIPTION_KEY_FILE``, e.g. a Docker/Kubernetes secret mount);
- Earth Engine: a service-account JSON key file named by ``GOOGLE_APPLICATION_CREDENTIALS``.

What is redacted by :func:`redact`:

- every value read through :func:`get_credential` (and the secret fields of a JSON key file);
- the values of environment variables whose *name* looks secret (``*KEY*``, ``*TOKEN*``,
  ``*SECRET*``, ``*PASSWORD*``...; at least 8 characters, so flags such as ``1`` survive);
- the Azure SAS token of signed Planetary Computer hrefs (``...?st=..&se=..&sig=..``): the
  values of its parameters, with the href itself kept readable;
- ``subscription-key=`` query parameters and ``Ocp-Apim-Subscription-Key`` headers;
- PEM private keys (the ``private_key`` of a service-account file) and Google OAuth access
  tokens (``ya29.``).

Naming a URL in a message (an endpoint, a file that failed) uses :func:`public_url`, which
drops the query string whole; free text goes through :func:`redact`, which keeps the text
readable and masks only the secrets in it. This module is the only place either is done.

References
----------
Microsoft, "Grant limited access to Azure Storage resources using shared access signatures
(SAS)", query parameters ``sv, ss, srt, sp, se, st, spr, sip, sr, sig, skoid, sktid, skt, ske,
sks, skv, si, sdd``. Planetary Computer, "Using tokens for data access" (SAS-signed hrefs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gpp_cubes.errors import ConfigError

__all__ = [
    "MASK",
    "RedactingFilter",
    "forget_secrets",
    "get_credential",
    "install_redaction",
    "public_url",
    "redact",
    "redact_mapping",
    "register_secret",
    "uninstall_redaction",
]

#: What a redacted value is replaced with.
MASK = "***"

#: Shorter values are never treated as secrets (they would mask ordinary words and numbers).
MIN_SECRET_LENGTH = 8

#: Names (of environment variables or mapping keys) that hold secrets.
_SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|SIGNATURE|(^|_)SAS($|_)|(^|_)SIG($|_)",
    re.IGNORECASE,
)
#: ... but these hold paths, ids or public settings (their *files* are read separately).
_NOT_SECRET_NAME = re.compile(
    r"_FILE$|_PATH$|_DIR$|APPLICATION_CREDENTIALS$|_ID$|KEYBOARD|KEYMAP|TOKENIZERS",
    re.IGNORECASE,
)
#: Mapping keys (provenance, configs) whose values are secret. Stricter than the
#: environment-variable rule: provenance has harmless keys such as ``asset_keys``.
_SECRET_FIELD = re.compile(
    r"(?:^|[_\-.])(?:(?:api|subscription|access|private|secret|account|sas|ocp-apim-subscription)"
    r"[_\-]?key|(?:access|refresh|auth|id|sas|bearer|session)?[_\-]?token|(?:client[_\-])?secret"
    r"|password|passwd|credentials?|sig|signature|sas)$",
    re.IGNORECASE,
)
#: Keys of a service-account / OAuth JSON file whose values are secret.
_JSON_SECRET_FIELDS = ("private_key", "private_key_id", "client_secret", "refresh_token")

#: Azure SAS query parameters (see module references).
_SAS_PARAMS = frozenset(
    [
        "sv",
        "ss",
        "srt",
        "sp",
        "se",
        "st",
        "spr",
        "sip",
        "sr",
        "sig",
        "skoid",
        "sktid",
        "skt",
        "ske",
        "sks",
        "skv",
        "si",
        "sdd",
    ]
)
_QUERY = re.compile(r"\?([^\s\"'<>`]*)")
_QUERY_PARAM_SECRET = re.compile(
    r"(?P<name>(?:subscription-key|subscription_key|access_token|api[-_]?key|token)=)"
    r"[^&\s\"'<>`]+",
    re.IGNORECASE,
)
_HEADER_SECRET = re.compile(
    r"(?P<name>(?:Ocp-Apim-Subscription-Key|Authorization|X-Api-Key)['\"]?\s*[:=]\s*"
    r"(?:Bearer\s+|Basic\s+)?['\"]?)[^\s'\",}]+",
    re.IGNORECASE,
)
_PEM = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL
)
_GOOGLE_TOKEN = re.compile(r"\bya29\.[0-9A-Za-z_\-]{10,}")

_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember ``value`` so that :func:`redact` masks it from now on.

    Parameters
    ----------
    value : str or None
        A credential; ``None`` and values shorter than 8 characters are ignored.
    """
    if value and len(value.strip()) >= MIN_SECRET_LENGTH:
        with _lock:
            _registered.add(value.strip())


def forget_secrets() -> None:
    """Forget every value given to :func:`register_secret` (for tests and long sessions)."""
    with _lock:
        _registered.clear()


def get_credential(name: str, *, env_var: str, file_env_var: str | None = None) -> str | None:
    """Read a credential from the environment or from a file the user names.

    The value of ``env_var`` wins; otherwise, if ``file_env_var`` names an environment
    variable holding a path, that file's content (stripped) is returned. The value is
    registered for redaction (:func:`redact`); for a JSON key file, its secret fields
    (``private_key``, ``private_key_id``, ``client_secret``, ``refresh_token``) too.

    Parameters
    ----------
    name : str
        What the credential is, for error messages (e.g. ``"Planetary Computer key"``).
    env_var : str
        Environment variable holding the credential itself (``PC_SDK_SUBSCRIPTION_KEY``).
    file_env_var : str, optional
        Environment variable holding the path of a file with the credential
        (``GOOGLE_APPLICATION_CREDENTIALS``, a mounted Docker/Kubernetes secret).

    Returns
    -------
    str or None
        The credential, or ``None`` when neither variable is set (anonymous access).

    Raises
    ------
    ConfigError
        ``file_env_var`` names a file that does not exist or cannot be read. The message
        names the variable and the path, never the content.
    """
    value = os.environ.get(env_var, "").strip()
    if value:
        register_secret(value)
        return value
    if not file_env_var:
        return None
    path_text = os.environ.get(file_env_var, "").strip()
    if not path_text:
        return None
    path = Path(path_text).expanduser()
    try:
        content = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError as err:
        raise ConfigError(f"{name}: {file_env_var} points to {path}, which does not exist") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"{name}: cannot read {path} (named by {file_env_var}): {type(err).__name__}"
        ) from err
    if not content:
        raise ConfigError(f"{name}: {path} (named by {file_env_var}) is empty")
    register_secret(content)
    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in _JSON_SECRET_FIELDS:
            if isinstance(parsed.get(key), str):
                register_secret(parsed[key])
    return content


def _env_secrets() -> set[str]:
    return {
        value.strip()
        for key, value in os.environ.items()
        if _SECRET_NAME.search(key)
        and not _NOT_SECRET_NAME.search(key)
        and len(value.strip()) >= MIN_SECRET_LENGTH
    }


def _known_secrets() -> list[str]:
    with _lock:
        known = set(_registered)
    known |= _env_secrets()
    # Longest first: a secret that contains another one is masked whole.
    return sorted(known, key=len, reverse=True)


def _redact_query(match: re.Match[str]) -> str:
    query = match.group(1)
    params = query.split("&")
    names = {p.split("=", 1)[0].lower() for p in params}
    if "sig" not in names:
        return match.group(0)
    out = []
    for param in params:
        key, sep, _value = param.partition("=")
        out.append(f"{key}={MASK}" if sep and key.lower() in _SAS_PARAMS else param)
    return "?" + "&".join(out)


def public_url(url: str) -> str:
    """``url`` without user info, query string and fragment (where credentials travel).

    Parameters
    ----------
    url : str
        An endpoint or asset href.

    Returns
    -------
    str
        ``scheme://host[:port]/path`` (host lower-cased, as URLs compare); a local path is
        returned unchanged.
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    with contextlib.suppress(ValueError):  # a malformed port: keep the host alone
        if parts.port:
            host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact(text: str, *, urls: Iterable[str] = ()) -> str:
    """Mask every known credential and signature in ``text``.

    Parameters
    ----------
    text : str
        A log message, an error message, an href, a JSON document...
    urls : iterable of str, optional
        Hrefs the text may quote (e.g. the asset a read error is about): each is replaced
        by its :func:`public_url` first.

    Returns
    -------
    str
        ``text`` with secrets replaced by ``***`` (see the module docstring for what is
        recognised). Text without secrets is returned unchanged.

    Examples
    --------
    >>> redact("https://x.blob.core.windows.net/a/B04.tif?st=2024&se=2025&sp=rl&sig=Ab%2Bc")
    'https://x.blob.core.windows.net/a/B04.tif?st=***&se=***&sp=***&sig=***'
    """
    for url in urls:
        if url and url in text:
            text = text.replace(url, public_url(url))
    return _redact_known(text, _known_secrets())


def _redact_known(text: Any, secrets: Sequence[str]) -> str:
    """:func:`redact` with the known secrets listed once by the caller (for many texts)."""
    if not isinstance(text, str):
        text = str(text)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _PEM.sub(MASK, text)
    text = _GOOGLE_TOKEN.sub(MASK, text)
    text = _QUERY.sub(_redact_query, text)
    text = _QUERY_PARAM_SECRET.sub(lambda m: m.group("name") + MASK, text)
    return _HEADER_SECRET.sub(lambda m: m.group("name") + MASK, text)


def redact_mapping(obj: Any) -> Any:
    """A copy of a JSON-like object (provenance, configs) with every secret masked.

    Values under keys that name a secret (``subscription_key``, ``api_key``, ``token``,
    ``access_token``, ``password``, ``private_key``, ``sig``...; not ``asset_keys`` or
    ``key``) are replaced whole; every other string goes through :func:`redact`.

    Parameters
    ----------
    obj : dict, list, tuple, str or scalar
        The object; it is not modified.

    Returns
    -------
    Same structure with secrets masked (tuples become lists, as in JSON).
    """
    # The secrets are listed once: a provenance record holds thousands of strings (hrefs,
    # item ids) and listing them scans the environment.
    return _redact_tree(obj, _known_secrets())


#: An http(s) URL with a query string (SAS tokens and signatures travel there).
_URL_WITH_QUERY = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")


def scrub_provenance(obj: Any) -> Any:
    """The JSON-ready copy of a provenance record that a store may keep.

    Every URL loses its query string (a provenance record needs where a file was, never the
    signature that opened it), every value becomes JSON (unknown objects as text, so nothing
    escapes as a ``repr`` later), and then :func:`redact_mapping` masks secret fields and
    secrets in free text (a token inside an error message).

    Parameters
    ----------
    obj : dict, list, tuple, str or scalar
        The provenance record; it is not modified.
    """

    def strip(o: Any) -> Any:
        if isinstance(o, Mapping):
            return {k: strip(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [strip(v) for v in o]
        return _URL_WITH_QUERY.sub(r"\1", o) if isinstance(o, str) else o

    return redact_mapping(json.loads(json.dumps(strip(obj), default=str)))


def _redact_tree(obj: Any, secrets: Sequence[str]) -> Any:
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            secret_key = isinstance(key, str) and _SECRET_FIELD.search(key) is not None
            out[key] = (MASK if secret_key and value not in (None, "")
                        else _redact_tree(value, secrets))
        return out
    if isinstance(obj, list | tuple):
        return [_redact_tree(v, secrets) for v in obj]
    if isinstance(obj, str):
        return _redact_known(obj, secrets)
    return obj


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the message, its arguments and tracebacks.

    The record is rendered (``record.getMessage()``) and redacted once; its ``args`` are
    cleared so handlers cannot format the raw arguments again. Attach it to *handlers*
    (logger-level filters do not see records propagated from child loggers), or use
    :func:`install_redaction`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def _redact_record(record: logging.LogRecord) -> None:
    if getattr(record, "_gpp_redacted", False):
        return
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: keep what logging would show, redacted
        message = f"{record.msg} {record.args}"
    record.msg = redact(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._gpp_redacted = True


_FILTER = RedactingFilter()
_previous_factory: Callable[..., logging.LogRecord] | None = None


def install_redaction(loggers: Iterable[str] = ("", "gpp_cubes", "gpp_models")) -> None:
    """Redact every log record of this process from now on.

    Installs a log-record factory that redacts each record when it is created (so records
    reach every handler, including ones added later, already masked), and attaches
    :class:`RedactingFilter` to the named loggers and their current handlers as a second
    line. Idempotent.

    Parameters
    ----------
    loggers : iterable of str
        Logger names (``""`` is the root logger).
    """
    global _previous_factory
    with _lock:
        if _previous_factory is None:
            previous = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                _redact_record(record)
                return record

            logging.setLogRecordFactory(factory)
            _previous_factory = previous
    for name in loggers:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)


def uninstall_redaction(loggers: Iterable[str] = ("", "gpp_cubes", "gpp_models")) -> None:
    """Undo :func:`install_redaction` (restore the record factory, detach the filter)."""
    global _previous_factory
    with _lock:
        if _previous_factory is not None:
            logging.setLogRecordFactory(_previous_factory)
            _previous_factory = None
    for name in loggers:
        logger = logging.getLogger(name)
        logger.removeFilter(_FILTER)
        for handler in logger.handlers:
            handler.removeFilter(_FILTER)
