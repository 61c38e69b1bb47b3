"""Settings: built-in defaults < hybridflow.toml < HYBRIDFLOW_* environment < command-line flags.

Every key is declared once in ``FIELDS`` with its parser; the same parser validates the file, the environment
and the flags, so a bad value is reported the same way wherever it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridflow.errors import ConfigError

ENV_PREFIX = "HYBRIDFLOW_"
CONFIG_ENV = "HYBRIDFLOW_CONFIG"
DEFAULT_CONFIG_FILE = "hybridflow.toml"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
MAX_DURATION = 3650 * 86400.0  # longer is a typo, and past what dates can hold on every database
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, None: 1}


def parse_duration(value: Any) -> float:
    """Seconds from ``90s``, ``30m``, ``2h``, ``1d``, ``500ms`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 90s, 30m or 2h")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"expected a positive duration like 90s, 30m or 2h, got {str(value)[:40]}")
    else:
        match = _DURATION.match(str(value).lower())
        if not match:
            raise ValueError(f"expected a duration like 90s, 30m or 2h, got {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_DURATION:
        raise ValueError(f"{value!r} is longer than ten years")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration: 7200 -> '2h', 90 -> '90s'."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def span(seconds: float) -> str:
    """A length of time for people: '45 s', '12 min', '1 h 12 min', '3 d 4 h'."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def parse_size(value: Any) -> int:
    """Bytes from ``1048576``, ``512KiB`` or ``8MB``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(str(value))
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"expected a size like 8MB or 1048576, got {value!r}")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower() or None]


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    try:
        return int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ValueError(f"expected an integer, got {value!r}") from None


def parse_port(value: Any) -> int:
    port = parse_int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"expected a port between 0 and 65535, got {port}")
    return port


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def parse_optional_str(value: Any) -> str | None:
    return parse_str(value) or None


def parse_url(value: Any) -> str:
    text = parse_str(value).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", text):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return text


DEFAULT_REPLY_CAP = (20, 600.0)  # model replies per chat, in a rolling window of seconds


def parse_reply_cap(value: Any) -> tuple[int, float]:
    """``20/10m`` -> (20, 600.0): at most 20 model replies per chat in any 10 minutes; ``off`` -> (0, 0.0)."""
    text = str(value).strip().lower()
    if text in ("off", "0", "none"):
        return 0, 0.0
    count, slash, window = text.partition("/")
    if not slash or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"expected replies/window such as 20/10m, or off; got {value!r}")
    seconds = parse_duration(window.strip())
    if seconds <= 0:
        raise ValueError(f"the window of {value!r} must be longer than 0 s")
    return int(count), seconds


FOREVER = ("forever", "off", "never")  # a retention that keeps rows for good
MIN_MESSAGE_RETENTION = 2 * 86400.0  # tombstones answer Evolution's retries and replays for this long at least


def parse_retention(value: Any) -> float | None:
    """How long rows are kept: a duration longer than 0 (``30d``), or None for ``forever`` (also ``off``)."""
    if isinstance(value, str) and value.strip().lower() in FOREVER:
        return None
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"expected a duration longer than 0 such as 30d, or forever; got {value!r}")
    return seconds


def parse_message_retention(value: Any) -> float | None:
    """``parse_retention``, at least two days: a deleted message's id must outlive Evolution's retries."""
    seconds = parse_retention(value)
    if seconds is not None and seconds < MIN_MESSAGE_RETENTION:
        raise ValueError(f"{value!r} is shorter than {format_duration(MIN_MESSAGE_RETENTION)}: Evolution retries and "
                         "replays webhooks for longer, and a deleted message must not be new again; give 2d or more, "
                         "or forever")
    return seconds


def format_retention(seconds: float | None) -> str:
    """A retention as people type it: ``30d`` or ``forever``."""
    return "forever" if seconds is None else format_duration(seconds)


def parse_proxies(value: Any) -> tuple[str, ...] | None:
    """Addresses or networks of reverse proxies whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed:
    ``127.0.0.1, 10.0.0.0/8`` (a list in the file); empty: none."""
    items = value if isinstance(value, list) else parse_str(value).split(",")
    found = []
    for item in items:
        text = parse_str(item).strip()
        if not text:
            continue
        try:
            found.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ValueError(f"expected IP addresses or networks such as 127.0.0.1, 10.0.0.0/8; got {text!r}") from None
    return tuple(found) or None


def parse_optional_url(value: Any) -> str | None:
    return parse_url(value) if parse_str(value).strip() else None


def parse_log_format(value: Any) -> str:
    text = parse_str(value).lower()
    if text not in {"auto", "json", "console"}:
        raise ValueError(f"expected json, console or auto, got {value!r}")
    return text


def parse_sqlite_synchronous(value: Any) -> str:
    text = parse_str(value).lower()
    if text not in {"full", "normal"}:
        raise ValueError(f"expected full or normal, got {value!r}")
    return text


def parse_log_level(value: Any) -> str:
    text = parse_str(value).lower()
    if text not in {"debug", "info", "warning", "error"}:
        raise ValueError(f"expected debug, info, warning or error, got {value!r}")
    return text


def database_url_to_async(url: str) -> str:
    """Translate ``sqlite:///x.db`` / ``postgresql://...`` to the async drivers SQLAlchemy needs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"expected sqlite:///path.db or postgresql://user:pass@host:port/db, got {url!r}")
    scheme = scheme.lower()
    if scheme in {"sqlite", "sqlite+aiosqlite"}:
        return f"sqlite+aiosqlite://{rest}"
    if scheme in {"postgresql", "postgres", "postgresql+asyncpg"}:
        return f"postgresql+asyncpg://{rest}"
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:///path.db or postgresql://...")


def parse_database_url(value: Any) -> str:
    text = parse_str(value).strip()
    database_url_to_async(text)  # validates
    return text


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of HybridFlow, after precedence has been applied."""

    database_url: str = "sqlite:///hybridflow.db"
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None
    ollama_host: str = "http://127.0.0.1:11434"
    ollama_model: str = "llama3.2"
    ollama_timeout: float = 120.0
    evolution_url: str = "http://127.0.0.1:8080"
    evolution_timeout: float = 30.0
    resume_after: float = 7200.0
    debounce: float = 3.0
    history_limit: int = 20
    admin_token: str | None = None
    trusted_proxies: tuple[str, ...] | None = None  # networks whose X-Forwarded-* headers the console believes
    secret_key: str | None = None
    log_format: str = "auto"
    log_level: str = "info"
    sqlite_synchronous: str = "full"  # full: a 200 survives a power loss; normal: it survives a crash of serve
    max_body_size: int = 8 * 1024 * 1024
    sweep_interval: float = 30.0
    reply_lease: float = 300.0
    max_attempts: int = 5
    capture_path: str | None = None
    metrics: bool = False
    retain_raw: float | None = 30 * 86400.0  # None: forever
    retain_messages: float | None = None  # None: forever
    source: str | None = None  # the config file that was read, if any

    @property
    def async_database_url(self) -> str:
        return database_url_to_async(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.async_database_url.startswith("sqlite")


FIELDS: dict[str, Callable[[Any], Any]] = {
    "database_url": parse_database_url,
    "host": parse_str,
    "port": parse_port,
    "public_url": parse_optional_url,
    "ollama_host": parse_url,
    "ollama_model": parse_str,
    "ollama_timeout": parse_duration,
    "evolution_url": parse_url,
    "evolution_timeout": parse_duration,
    "resume_after": parse_duration,
    "debounce": parse_duration,
    "history_limit": parse_int,
    "admin_token": parse_optional_str,
    "trusted_proxies": parse_proxies,
    "secret_key": parse_optional_str,
    "log_format": parse_log_format,
    "sqlite_synchronous": parse_sqlite_synchronous,
    "log_level": parse_log_level,
    "max_body_size": parse_size,
    "sweep_interval": parse_duration,
    "reply_lease": parse_duration,
    "max_attempts": parse_int,
    "capture_path": parse_optional_str,
    "metrics": parse_bool,
    "retain_raw": parse_retention,
    "retain_messages": parse_message_retention,
}


def _convert(key: str, value: Any, origin: str) -> Any:
    try:
        return FIELDS[key](value)
    except ValueError as exc:
        raise ConfigError(f"invalid value for '{key}' in {origin}: {exc}") from None


def find_config_file(explicit: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    """The file named by --config, else $HYBRIDFLOW_CONFIG, else ./hybridflow.toml when it exists."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    if environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (from ${CONFIG_ENV})")
        return path
    local = Path(DEFAULT_CONFIG_FILE)
    return local if local.is_file() else None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in FIELDS:
            raise ConfigError(f"unknown key '{key}' in {path}{_did_you_mean(key, FIELDS)}")
        values[key] = _convert(key, value, str(path))
    return values


# HYBRIDFLOW_* names that are not settings but are still ours: the config file's path, the test suite's own.
_OTHER_ENV = (CONFIG_ENV,)
_OTHER_ENV_PREFIXES = (ENV_PREFIX + "TEST_",)


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _read_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    known = {ENV_PREFIX + key.upper() for key in FIELDS}
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in known and name not in _OTHER_ENV \
                and not name.startswith(_OTHER_ENV_PREFIXES):
            raise ConfigError(f"unknown environment variable {name}{_did_you_mean(name, known)}; "
                              "`hybridflow.toml.example` lists every setting")
    values: dict[str, Any] = {}
    for key in FIELDS:
        name = ENV_PREFIX + key.upper()
        if name in environ:
            values[key] = _convert(key, environ[name], f"environment variable {name}")
    return values


def load_settings(
    config_path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Apply defaults < file < environment < ``overrides`` (command-line flags; None values are ignored)."""
    environ = os.environ if environ is None else environ
    path = find_config_file(config_path, environ)
    values: dict[str, Any] = {}
    if path is not None:
        values.update(_read_file(path))
    values.update(_read_environ(environ))
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _convert(key, value, f"option --{key.replace('_', '-')}")
    return dataclasses.replace(Settings(), source=str(path) if path else None, **values)
