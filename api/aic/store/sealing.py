"""Secrets at rest: tenants' webhook signing secrets are kept in Redis sealed with AES-256-GCM, so a Redis dump, a
replica or an AOF file does not leak them.

The key is derived (HKDF-SHA256) from ``WEBHOOK_SECRETS_KEY``, else from ``SECRET_KEY``; every API replica and
dispatcher must share it. Rotating it: set the new value and keep the old one in ``WEBHOOK_SECRETS_KEY_PREVIOUS``
until every secret has been read once (each read reseals what the previous key sealed). A sealed value names its
key by a short id and is bound to its tenant (the tenant is the AEAD's associated data), so a sealed value moved
to another tenant's hash does not open.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from aic.core.errors import ServiceUnavailableError
from aic.core.settings import WebhookSettings

log = logging.getLogger("aic.store")

PREFIX: Final = "sealed:v1:"
_INFO: Final = b"aic webhook secrets v1"


class SealedSecretError(ServiceUnavailableError):
    """A sealed value that this process cannot open: no key, another key, or tampered data. A configuration
    problem of this replica (503 to a client); the value in Redis is left as it is."""


def _derive(material: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(material.encode())


class Sealer:
    """Seals with the current key; opens with the current or the previous one."""

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self.keys = keys
        self._ciphers = {self.key_id(key): AESGCM(key) for key in keys}  # by key id, the current one first
        self._current_id = self.key_id(keys[0])

    @classmethod
    def for_webhooks(cls, settings: WebhookSettings) -> Sealer | None:
        """The sealer every API replica and dispatcher builds alike from WEBHOOK_SECRETS_KEY(_PREVIOUS) and
        SECRET_KEY: one rule, so the two sides never derive different keys."""
        return cls.from_settings(settings.sealing_key, settings.webhook_secrets_key_previous)

    @classmethod
    def from_settings(cls, key: str, previous: str = "") -> Sealer | None:
        """None when no key is configured: secrets are then stored as they are (a warning says so)."""
        if not key:
            log.warning("webhook secrets are stored unsealed: set WEBHOOK_SECRETS_KEY (or SECRET_KEY)")
            return None
        return cls(tuple(_derive(material) for material in (key, previous) if material))

    @staticmethod
    def key_id(key: bytes) -> str:
        return hashlib.sha256(key).hexdigest()[:8]

    def seal(self, value: str, tenant: str) -> str:
        nonce = os.urandom(12)
        sealed = self._ciphers[self._current_id].encrypt(nonce, value.encode(), tenant.encode())
        return f"{PREFIX}{self._current_id}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, value: str, tenant: str) -> tuple[str, bool]:
        """The plain secret and whether it should be sealed again (plain, or sealed with the previous key)."""
        if not value.startswith(PREFIX):
            return value, True
        kid, _, payload = value.removeprefix(PREFIX).partition(":")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise SealedSecretError(f"webhook secret sealed with key {kid}, which this process does not have")
        try:
            raw = base64.b64decode(payload, validate=True)
            plain = cipher.decrypt(raw[:12], raw[12:], tenant.encode()).decode()
        except Exception:
            raise SealedSecretError("webhook secret does not open: tampered, or another tenant's") from None
        return plain, kid != self._current_id


def open_unsealed(value: str) -> str:
    """A value read without a sealer: plain text passes, a sealed one cannot be used."""
    if value.startswith(PREFIX):
        raise SealedSecretError("webhook secrets are sealed, but no WEBHOOK_SECRETS_KEY / SECRET_KEY is set here")
    return value
