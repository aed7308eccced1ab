"""The page's Content-Security-Policy: ``connect-src`` names the object store's origin only when one is configured
(the page PUTs large images to presigned URLs there), and never more than that origin."""

from __future__ import annotations

import pytest
from aic.core.settings import ObjectStoreSettings
from aic.http.page import CONTENT_SECURITY_POLICY, content_security_policy, store_origins


def origins(url: str | None, browser_origin: str | None = None, **env: str) -> tuple[str, ...]:
    return store_origins(ObjectStoreSettings(object_store_url=url, object_store_browser_origin=browser_origin), env)


def test_without_an_object_store_the_page_connects_to_its_own_origin_only() -> None:
    assert origins(None) == ()
    assert origins("file:///srv/uploads") == ()  # a file:// store signs no URL: nothing for a browser to reach
    assert "connect-src 'self';" in CONTENT_SECURITY_POLICY
    assert content_security_policy() == CONTENT_SECURITY_POLICY


@pytest.mark.parametrize(
    ("url", "env", "expected"),
    [
        ("s3://b/p", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000/"}, ("http://127.0.0.1:9000",)),
        (
            "s3://b/p",
            {"AWS_ENDPOINT_URL_S3": "https://minio.example.org/x", "AWS_ENDPOINT_URL": "http://other:1"},
            ("https://minio.example.org",),
        ),
        (
            "s3://b/p",
            {"AWS_REGION": "eu-west-1"},
            ("https://s3.eu-west-1.amazonaws.com", "https://b.s3.eu-west-1.amazonaws.com"),
        ),
        ("s3://b", {}, ("https://s3.us-east-1.amazonaws.com", "https://b.s3.us-east-1.amazonaws.com")),
        ("gs://b/p", {}, ("https://storage.googleapis.com",)),
        ("az://c/p", {"AZURE_STORAGE_ACCOUNT_NAME": "acct"}, ("https://acct.blob.core.windows.net",)),
    ],
)
def test_the_store_origin_comes_from_the_endpoint_or_the_clouds_host_names(
    url: str, env: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert origins(url, **env) == expected
    policy = content_security_policy(expected)
    assert f"connect-src 'self' {' '.join(expected)};" in policy


def test_a_configured_browser_origin_wins_and_only_origins_are_kept() -> None:
    found = origins(
        "s3://b/p",
        "https://cdn.example.org/uploads javascript:alert(1) https://u:p@b.example.org:8443",
        AWS_ENDPOINT_URL="http://127.0.0.1:9000",
    )
    assert found == ("https://cdn.example.org", "https://b.example.org:8443")
    assert origins(None, "https://cdn.example.org") == ()  # no store: no direct uploads, nothing to allow
