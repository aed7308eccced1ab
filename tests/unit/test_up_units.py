"""`aic up`'s pure parts: the models line, the observability lines."""

from __future__ import annotations

from aic.local.up import describe_routes, observability
from aic.store.routes import Route


def test_each_alias_is_shown_once_with_the_model_it_serves() -> None:
    routes = {
        "v1.0": Route({"efficientnet-lite0": 100}, "efficientnet-lite0"),
        "latest": Route({"efficientnet-lite0": 100}, "efficientnet-lite0"),
    }
    assert describe_routes(routes) == "latest -> efficientnet-lite0; v1.0 -> efficientnet-lite0"


def test_a_split_alias_shows_its_models_by_weight() -> None:
    routes = {"latest": Route({"lite0-v2": 10, "lite0-v1": 90}, "lite0-v1")}
    assert describe_routes(routes) == "latest -> lite0-v1 90, lite0-v2 10 (by weight)"
    assert describe_routes({}) == "none (the model repository is empty)"


def test_the_dispatchers_metrics_line_names_its_port_or_says_it_is_off() -> None:
    on = observability("http://127.0.0.1:8000", {"METRICS_HOST": "127.0.0.1", "METRICS_PORT": "41234"})
    assert "http://127.0.0.1:41234/metrics (dispatcher; probes /livez, /readyz)" in on[0]
    off = observability("http://127.0.0.1:8000", {"METRICS_PORT": "0"})
    assert "off (dispatcher: METRICS_PORT=0)" in off[0]
