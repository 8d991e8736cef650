"""Configuration from ``GRIDOPS_*`` environment variables, with working defaults.

Precedence: built-in defaults < environment < the mapping passed to ``create_app``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


class ConfigError(RuntimeError):
    """The configuration is missing or malformed; the message names the variable."""


def var_dir() -> Path:
    return Path(os.environ.get("GRIDOPS_VAR_DIR") or PROJECT_ROOT / "var").absolute()


def _as_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"GRIDOPS_{name} must be a boolean (1/0, true/false), got {raw!r}")


def _as_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"GRIDOPS_{name} must be an integer, got {raw!r}") from None


# name -> (default, parser). DATABASE_URL's default is resolved lazily from the local cluster.
SETTINGS: dict[str, tuple[Any, Any]] = {
    "ENV": ("development", str),
    "DATABASE_URL": (None, str),
    "SECRET_KEY": (None, str),
    "DB_POOL_SIZE": (5, _as_int),
    "DB_POOL_TIMEOUT": (10, _as_int),
    "DB_STATEMENT_TIMEOUT_MS": (30_000, _as_int),
    "LOG_LEVEL": ("INFO", str),
    "DEFAULT_LANGUAGE": ("zh", str),
    "SESSION_IDLE_MINUTES": (30, _as_int),
    # How many reverse proxies in front set X-Forwarded-For (0: none; docker-compose: 1).
    "TRUSTED_PROXIES": (0, _as_int),
    "SESSION_ABSOLUTE_HOURS": (12, _as_int),
    "LOGIN_MAX_FAILURES_ACCOUNT": (5, _as_int),
    "LOGIN_MAX_FAILURES_ADDRESS": (20, _as_int),
    "LOGIN_WINDOW_MINUTES": (15, _as_int),
    # Incident photos: served only through an authorised route, so never under static/.
    # PHOTO_DIR's default (var/photos) is resolved lazily, like DATABASE_URL's.
    "PHOTO_DIR": (None, str),
    "PHOTO_MAX_COUNT": (6, _as_int),  # per report or transition
    "PHOTO_MAX_BYTES": (10 * MB, _as_int),  # per photo, as uploaded
    # Where notifications go besides the in-app inbox: comma list of "inbox" (nothing more),
    # "log", or "package.module:Class" (an SMS or e-mail gateway); see notifications.senders.
    "NOTIFY_SENDERS": ("inbox", str),
}


def load_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Resolve the settings; raises ConfigError naming the variable that is wrong."""
    config: dict[str, Any] = {}
    for name, (default, parse) in SETTINGS.items():
        raw = os.environ.get(f"GRIDOPS_{name}")
        if raw is None or raw == "":
            config[name] = default
        elif parse in (_as_int, _as_bool):
            config[name] = parse(name, raw)
        else:
            config[name] = raw
    if overrides:
        config.update(overrides)
    if config["ENV"] not in {"development", "production", "testing"}:
        raise ConfigError(
            f"GRIDOPS_ENV must be development, production or testing, got {config['ENV']!r}"
        )
    if config["DEFAULT_LANGUAGE"] not in {"zh", "en"}:
        raise ConfigError("GRIDOPS_DEFAULT_LANGUAGE must be zh or en")
    _photo_settings(config)
    if not config["SECRET_KEY"]:
        if config["ENV"] == "production":
            raise ConfigError("GRIDOPS_SECRET_KEY must be set in production")
        # Development only: a per-process key; sessions do not survive a restart.
        config["SECRET_KEY"] = secrets.token_hex(32)
    return config


def _photo_settings(config: dict[str, Any]) -> None:
    """Resolve the photo folder and derive Flask's request-size cap from the photo limits."""
    for name in ("PHOTO_MAX_COUNT", "PHOTO_MAX_BYTES"):
        if int(config[name]) < 1:
            raise ConfigError(f"GRIDOPS_{name} must be at least 1, got {config[name]!r}")
    photo_dir = Path(config["PHOTO_DIR"] or var_dir() / "photos").absolute()
    static = (PROJECT_ROOT / "static").resolve()
    resolved = photo_dir.resolve()
    if resolved == static or static in resolved.parents:
        # Everything under static/ is served to anyone; photos are not public.
        raise ConfigError(f"GRIDOPS_PHOTO_DIR must not be inside {static}, got {photo_dir}")
    config["PHOTO_DIR"] = str(photo_dir)
    if "MAX_CONTENT_LENGTH" not in config:
        # A full set of photos plus room for the report and the multipart framing; a larger
        # body is refused (413) before any of it is parsed.
        config["MAX_CONTENT_LENGTH"] = (
            int(config["PHOTO_MAX_COUNT"]) * int(config["PHOTO_MAX_BYTES"]) + MB
        )


def database_url(config: Mapping[str, Any]) -> str:
    """The configured URL, else the embedded cluster's (``gridops db start`` makes it)."""
    url = config.get("DATABASE_URL")
    if url:
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            # Plain libpq URLs (as docker-compose and most hosts give) use psycopg 3.
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return str(url)
    from gridops.localdb import LocalCluster, LocalDBError, default_base

    try:
        return LocalCluster(default_base()).url()
    except LocalDBError as exc:
        raise ConfigError(str(exc)) from exc
