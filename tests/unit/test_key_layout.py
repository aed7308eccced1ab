"""``KEY_LAYOUT_BEFORE``: the layout names it accepts (strictly) and how the guard names layouts."""

from __future__ import annotations

import pytest
from aic.core import settings as settings_mod
from aic.core.settings import RedisSettings, SettingsError
from aic.store import keys, layout


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [("standalone", (False, 1)), ("shards:4", (False, 4)), ("shards:1", (False, 1)), ("cluster:16", (True, 16))],
)
def test_a_layout_name_parses_to_cluster_and_shards(raw: str, parsed: tuple[bool, int]) -> None:
    assert settings_mod.parse_layout(raw) == parsed


@pytest.mark.parametrize("raw", ["cluster", "shards", "shards:0", "shards:1025", "cluster:04", "shards:²", "S:4",
                                 "standalone:1", "cluster:-1", "shards: 4"])  # fmt: skip
def test_anything_else_is_a_settings_error_naming_the_setting(raw: str) -> None:
    with pytest.raises(SettingsError, match="KEY_LAYOUT_BEFORE"):
        settings_mod.load(RedisSettings, {"KEY_LAYOUT_BEFORE": raw})


def test_the_layout_in_effect_is_refused_as_the_previous_one() -> None:
    with pytest.raises(SettingsError, match="is the layout these settings use"):
        settings_mod.load(RedisSettings, {"KEY_LAYOUT_BEFORE": "cluster:16", "REDIS_CLUSTER": "true"})


def test_unset_means_no_migration() -> None:
    assert settings_mod.load(RedisSettings, {}).layout_before is None


def test_the_guard_names_layouts_as_the_setting_does() -> None:
    for names in (keys.LEGACY, keys.Keyspace(shards=4), keys.Keyspace(shards=16, cluster=True)):
        before = RedisSettings(key_layout_before=layout.layout_name(names), queue_shards=2).layout_before
        assert before == (names.cluster, names.shards)
