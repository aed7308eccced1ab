"""The chart's table of queue shard tags (charts/async-image-classifier/files/shard-tags.yaml) is what the code
computes: KEDA's triggers name the same shard streams the dispatchers read."""

from __future__ import annotations

import chart_shard_tags
import yaml
from redis.crc import key_slot


def test_the_charts_shard_tag_table_is_generated_from_the_code() -> None:
    assert chart_shard_tags.TABLE.read_text() == chart_shard_tags.table(), "stale: python tests/chart_shard_tags.py"
    loaded = yaml.safe_load(chart_shard_tags.TABLE.read_text())
    assert set(loaded) == {str(s) for s in range(1, chart_shard_tags.MAX_CHART_SHARDS + 1)}
    assert all(tuple(loaded[str(s)]) == chart_shard_tags.shard_tags(s) for s in range(1, 65))  # strings, as Helm reads


def test_each_shards_tag_lies_in_its_share_of_the_slots() -> None:
    # chart_shard_tags.shard_tags must equal aic.store.keys.shard_tags, which names the processes' streams
    assert chart_shard_tags.shard_tags(16) == (
        "q0.2", "q1.1", "q2.12", "q3.11", "q4.42", "q5.41", "q6.62", "q7.61",
        "q8.12", "q9.11", "q10.1", "q11.2", "q12.61", "q13.62", "q14.23", "q15.20",
    )  # fmt: skip
    for shards in (1, 3, 16, 64):
        slots = [key_slot(tag.encode()) for tag in chart_shard_tags.shard_tags(shards)]
        assert all(i * 16384 // shards <= slot < (i + 1) * 16384 // shards for i, slot in enumerate(slots))
