"""Sealing webhook secrets: AES-GCM under a key derived from the settings, bound to the tenant, rotatable."""

from __future__ import annotations

import pytest
from aic.core.webhooks import new_secret
from aic.store.sealing import PREFIX, SealedSecretError, Sealer, open_unsealed

OLD, NEW = "old-sealing-key-0123456789abcdef", "new-sealing-key-0123456789abcdef"


def sealer(key: str, previous: str = "") -> Sealer:
    found = Sealer.from_settings(key, previous)
    assert found is not None
    return found


def test_a_sealed_secret_opens_for_its_tenant_and_shows_nothing_of_the_secret() -> None:
    secret = new_secret()
    sealed = sealer(NEW).seal(secret, "acme")
    assert sealed.startswith(PREFIX) and "whsec_" not in sealed and secret[6:] not in sealed
    assert sealer(NEW).open(sealed, "acme") == (secret, False)
    assert sealer(NEW).seal(secret, "acme") != sealed, "a fresh nonce every time"


def test_a_sealed_secret_does_not_open_for_another_tenant_or_after_tampering() -> None:
    sealed = sealer(NEW).seal(new_secret(), "acme")
    with pytest.raises(SealedSecretError, match="another tenant"):
        sealer(NEW).open(sealed, "globex")
    flipped = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(SealedSecretError):
        sealer(NEW).open(flipped, "acme")


def test_rotation_opens_with_the_previous_key_and_asks_for_a_reseal() -> None:
    secret = new_secret()
    sealed_old = sealer(OLD).seal(secret, "acme")
    assert sealer(NEW, previous=OLD).open(sealed_old, "acme") == (secret, True)
    with pytest.raises(SealedSecretError, match="which this process does not have"):
        sealer(NEW).open(sealed_old, "acme")


def test_plain_values_from_before_sealing_open_and_ask_for_a_seal() -> None:
    assert sealer(NEW).open("whsec_plain", "acme") == ("whsec_plain", True)
    assert open_unsealed("whsec_plain") == "whsec_plain"
    with pytest.raises(SealedSecretError, match="no WEBHOOK_SECRETS_KEY"):
        open_unsealed(sealer(NEW).seal("whsec_x", "acme"))


def test_without_a_key_nothing_is_sealed() -> None:
    assert Sealer.from_settings("") is None
