"""Where ``aic classify`` and ``aic jobs`` find the service: ``--url``/``--key``, else ``AIC_URL``/``AIC_API_KEY``,
else ``$XDG_CONFIG_HOME/aic/config.toml`` (``~/.config/aic/config.toml``), else the local default URL.

The URL is the API prefix (``http://host:8000/api/v1``); the server's root (``http://host:8000``, what a browser
shows for the web page) is taken to mean the default prefix below it."""

from __future__ import annotations

import os
import shlex
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

URL_ENV = "AIC_URL"
KEY_ENV = "AIC_API_KEY"
API_PREFIX = "/api/v1"
"""The service's default API_PREFIX."""
DEFAULT_URL = f"http://127.0.0.1:8000{API_PREFIX}"


class ConfigError(ValueError):
    """The config file cannot be read."""


@dataclass(frozen=True)
class Target:
    url: str
    api_key: str | None


def config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aic" / "config.toml"


def _from_file(path: Path) -> dict[str, str]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    found: dict[str, str] = {name: raw[name] for name in ("url", "api_key") if name in raw}
    bad = [name for name, value in found.items() if not isinstance(value, str)]
    if bad:
        raise ConfigError(f"{path}: {', '.join(bad)} must be a string")
    return found


def resolve(url: str | None, api_key: str | None, env: Mapping[str, str] | None = None) -> Target:
    """The first of flag, environment and config file that says, per value (the file is read only if needed)."""
    env = os.environ if env is None else env
    url = url or env.get(URL_ENV) or None
    api_key = api_key or env.get(KEY_ENV) or None
    if url is None or api_key is None:
        stored = _from_file(config_path(env))
        url = url or stored.get("url")
        api_key = api_key or stored.get("api_key")
    return Target(api_url(url or DEFAULT_URL), api_key)


def api_url(url: str) -> str:
    """``url`` without a trailing slash; a server root (no path) gets the default API prefix appended."""
    url = url.rstrip("/")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme in ("http", "https") and parsed.netloc and not parsed.path:
        return url + API_PREFIX
    return url


def export_line(url: str, api_key: str) -> str:
    """The shell line that points ``aic classify`` at a service."""
    return f"export {URL_ENV}={shlex.quote(url)} {KEY_ENV}={shlex.quote(api_key)}"
