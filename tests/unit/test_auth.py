"""API keys: parsing, hashing, lookup and where a client may send them."""

from __future__ import annotations

import pytest
from aic.core.settings import SettingsError
from aic.http.auth import KeyRing, presented_key


def test_keys_map_to_their_tenant() -> None:
    ring = KeyRing.parse("acme:aaaaaaaaaaaaaaaa1, globex:bbbbbbbbbbbbbbbb2")
    assert ring.tenant_for("aaaaaaaaaaaaaaaa1") == "acme"
    assert ring.tenant_for("bbbbbbbbbbbbbbbb2") == "globex"
    assert ring.tenant_for("cccccccccccccccc3") is None
    assert len(ring) == 2


def test_keys_are_kept_only_as_digests() -> None:
    ring = KeyRing.parse("acme:aaaaaaaaaaaaaaaa1")
    assert "aaaaaaaaaaaaaaaa1" not in repr(vars(ring))


@pytest.mark.parametrize("bad", ["nocolon", ":keyonlyaaaaaaaaaa", "acme:short"])
def test_malformed_entries_are_refused_without_echoing_the_key(bad: str) -> None:
    with pytest.raises(SettingsError) as info:
        KeyRing.parse(bad)
    secret = bad.partition(":")[2]
    assert not secret or secret not in str(info.value)


class _NoScan(dict[bytes, object]):
    """A key table that refuses to be walked: a lookup must go straight to the digest."""

    def items(self):  # type: ignore[no-untyped-def, override]
        raise AssertionError("the key ring walked every key")

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the key ring walked every key")

    def values(self):  # type: ignore[no-untyped-def, override]
        raise AssertionError("the key ring walked every key")


def test_a_key_is_looked_up_by_its_digest_in_one_step() -> None:
    ring = KeyRing.parse(",".join(f"t{i}:key-{i:016d}" for i in range(500)))
    vars(ring)["_pairs"] = _NoScan(vars(ring)["_pairs"])
    assert ring.tenant_for(f"key-{499:016d}") == "t499"
    assert ring.tenant_for("key-not-configured-0000") is None


def test_key_from_header_or_bearer() -> None:
    assert presented_key({"x-api-key": "k1"}, "X-API-Key") == "k1"
    assert presented_key({"authorization": "Bearer k2"}, "X-API-Key") == "k2"
    assert presented_key({"authorization": "Basic abc"}, "X-API-Key") is None
    assert presented_key({}, "X-API-Key") is None
