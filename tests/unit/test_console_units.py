"""The CLI's pure parts: where the URL and key come from, what counts as an image before uploading, the exit code
of each client error, and the JSON line of a job."""

from __future__ import annotations

from pathlib import Path

import pytest
from aic.client import AuthenticationError, BadRequest, Conflict, NotFound, RateLimited, ServiceUnreachable
from aic.client.errors import ServiceUnavailable
from aic.client.models import ErrorResponse, Prediction, Result, Status
from aic.console.commands import ExitCode, InputError, exit_code_of, read_image
from aic.console.config import API_PREFIX, DEFAULT_URL, ConfigError, api_url, config_path, export_line, resolve
from aic.console.view import Outcome
from aic.core.settings import ApiSettings


def write_config(home: Path, text: str) -> None:
    path = home / "aic" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(text)


def test_flags_win_over_environment_which_wins_over_the_config_file(tmp_path: Path) -> None:
    write_config(tmp_path, 'url = "http://file/api/v1"\napi_key = "file-key"\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path), "AIC_URL": "http://env/api/v1/", "AIC_API_KEY": "env-key"}
    assert resolve("http://flag/api/v1", "flag-key", env) == resolve("http://flag/api/v1", "flag-key", {})
    assert resolve(None, None, env).url == "http://env/api/v1" and resolve(None, None, env).api_key == "env-key"
    only_file = resolve(None, None, {"XDG_CONFIG_HOME": str(tmp_path)})
    assert (only_file.url, only_file.api_key) == ("http://file/api/v1", "file-key")
    mixed = resolve(None, None, {"XDG_CONFIG_HOME": str(tmp_path), "AIC_API_KEY": "env-key"})
    assert (mixed.url, mixed.api_key) == ("http://file/api/v1", "env-key")


def test_without_any_source_the_url_is_the_local_default_and_there_is_no_key(tmp_path: Path) -> None:
    target = resolve(None, None, {"XDG_CONFIG_HOME": str(tmp_path)})
    assert (target.url, target.api_key) == (DEFAULT_URL, None)


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("http://host:8000", "http://host:8000/api/v1"),  # the server root, as the web page's address shows it
        ("http://host:8000/", "http://host:8000/api/v1"),
        ("https://aic.example.com", "https://aic.example.com/api/v1"),
        ("http://host:8000/api/v1/", "http://host:8000/api/v1"),
        ("https://gateway.example.com/aic/api/v1", "https://gateway.example.com/aic/api/v1"),  # a path: as given
    ],
)
def test_a_server_root_means_its_default_api_prefix(tmp_path: Path, given: str, used: str) -> None:
    assert api_url(given) == used
    assert resolve(given, None, {"XDG_CONFIG_HOME": str(tmp_path)}).url == used
    assert resolve(None, None, {"XDG_CONFIG_HOME": str(tmp_path), "AIC_URL": given}).url == used
    assert ApiSettings().api_prefix == API_PREFIX


def test_the_config_file_lives_under_xdg_config_home_else_dot_config(tmp_path: Path) -> None:
    assert config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "aic" / "config.toml"
    assert config_path({}) == Path.home() / ".config" / "aic" / "config.toml"


@pytest.mark.parametrize("text", ["url = ", 'api_key = 42\nurl = "x"\n'])
def test_a_broken_config_file_is_an_error_naming_it(tmp_path: Path, text: str) -> None:
    write_config(tmp_path, text)
    with pytest.raises(ConfigError, match=r"config\.toml"):
        resolve(None, None, {"XDG_CONFIG_HOME": str(tmp_path)})


def test_the_export_line_quotes_for_the_shell() -> None:
    assert export_line("http://h:8000/api/v1", "k'ey") == "export AIC_URL=http://h:8000/api/v1 AIC_API_KEY='k'\"'\"'ey'"


@pytest.mark.parametrize(
    "head", [b"\xff\xd8\xff\xe0rest", b"\x89PNG\r\n\x1a\nrest", b"RIFF\x10\x00\x00\x00WEBPVP8 "], ids=str
)
def test_jpeg_png_and_webp_are_read(tmp_path: Path, head: bytes) -> None:
    path = tmp_path / "photo"
    path.write_bytes(head)
    assert read_image(path).content == head and read_image(path).filename == "photo"


def test_a_text_file_a_missing_file_and_a_directory_are_refused_with_their_name(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("hello")
    for path, reason in [
        (tmp_path / "notes.jpg", "not a JPEG, PNG or WebP image"),
        (tmp_path / "gone.jpg", "no such file"),
        (tmp_path, "is a directory"),
    ]:
        with pytest.raises(InputError) as caught:
            read_image(path)
        assert str(caught.value) == f"{path}: {reason}"


def error(kind: type[Exception], status: int) -> Exception:
    return kind(status, ErrorResponse(error="X", detail="d", timestamp="t"))


def test_each_client_error_has_its_exit_code() -> None:
    assert exit_code_of(error(AuthenticationError, 401)) == ExitCode.AUTH
    assert exit_code_of(error(BadRequest, 400)) == ExitCode.BAD_INPUT
    assert exit_code_of(error(NotFound, 404)) == ExitCode.BAD_INPUT
    assert exit_code_of(error(Conflict, 409)) == ExitCode.JOB_FAILED
    for kind, status in ((RateLimited, 429), (ServiceUnavailable, 503)):
        assert exit_code_of(error(kind, status)) == ExitCode.UNREACHABLE
    assert exit_code_of(ServiceUnreachable("refused")) == ExitCode.UNREACHABLE
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4]


def test_a_json_line_has_the_top_k_and_the_error_of_a_failed_job() -> None:
    done = Status(job_id="j", status="completed", progress=100, stage="completed", updated_at="t")
    predictions = [Prediction(class_name=f"c{i}", confidence=0.1, class_id=i) for i in range(5)]
    result = Result(
        job_id="j",
        predictions=predictions,
        processing_time=0.1,
        model_version="latest",
        image_metadata={},
        created_at="t",
    )
    line = Outcome("a.jpg", "j", done, result).record(top_k=2)
    assert line["status"] == "completed" and [p["class_name"] for p in line["predictions"]] == ["c0", "c1"]
    failed = Status(
        job_id="j",
        status="failed",
        progress=40,
        stage=None,
        updated_at="t",
        error_code="INVALID_IMAGE",
        error_message="bad",
    )
    line = Outcome("a.jpg", "j", failed).record(top_k=5)
    assert (line["status"], line["error_code"], line["error_message"]) == ("failed", "INVALID_IMAGE", "bad")
    assert "predictions" not in line
    assert Outcome("a.jpg", "j", submitted_status="pending").record(top_k=5) == {
        "file": "a.jpg",
        "job_id": "j",
        "status": "pending",
    }
