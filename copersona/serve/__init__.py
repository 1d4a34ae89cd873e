"""The persona service: ``copersona serve`` (FastAPI on uvicorn) over the inference runtime."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from copersona.config import HarnessConfig, ServeConfig
from copersona.serve.app import KeyLimits, create_app
from copersona.serve.service import Answer, PersonaService

__all__ = ["Answer", "KeyLimits", "PersonaService", "create_app", "open_app"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_app(
    store: str | Path,
    harness: HarnessConfig,
    settings: ServeConfig,
    *,
    api_keys: Path | None = None,
    host: str = "127.0.0.1",
):
    """The ASGI app for ``store`` with its service opened (a bad store or spec fails here, not later).

    Without API keys the service answers anyone, so it only binds to a loopback address.
    """
    if api_keys is None and not _loopback(host):
        raise ValueError(f"serving on {host} needs --api-keys FILE (without keys only a loopback address is allowed)")
    keys = KeyLimits.read(api_keys, settings.max_concurrent_per_key)
    service = PersonaService(store, harness)
    service.open()
    return create_app(service, settings, keys), service
