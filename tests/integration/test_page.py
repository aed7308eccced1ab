"""The web page at ``/`` in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver`` through Selenium;
no browser is downloaded): the key, an upload, live progress over the WebSocket, the top 5, readable errors,
keyboard only, phone width; and what the page is served with (CSP, no auth, no rate limit, not in the schema).

Picking a file with the keyboard alone opens the system's file dialog, which a headless browser has not; the
keyboard test tabs to the file input and types the path into it (``send_keys``), as WebDriver specifies."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import API_KEY, OTHER_TENANT_KEY, Stack
from helpers import jpeg
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from skimage import data as skdata

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 90


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,760"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def root_of(stack: Stack) -> str:
    return stack.base_url.removesuffix("/api/v1")


def fresh_page(browser: WebDriver, root: str) -> WebDriver:
    browser.get(f"{root}/")
    browser.execute_script("sessionStorage.clear(); localStorage.clear();")
    browser.get(f"{root}/")
    return browser


@pytest.fixture
def photos(tmp_path: Path) -> dict[str, Path]:
    names = {"cat": "chelsea.jpg", "text": "notes.jpg", "plain": "notes.txt", "big": "big.jpg"}
    files = {what: tmp_path / name for what, name in names.items()}
    files["cat"].write_bytes(jpeg())
    files["text"].write_text("a text file with a photo's name\n")
    files["plain"].write_text("a text file that says so\n")
    with files["big"].open("wb") as out:  # 11 MB starting like a JPEG: only its size is wrong
        out.write(b"\xff\xd8\xff\xe0")
        out.truncate(11 * 1000 * 1000)
    return files


def first_job(browser: WebDriver) -> WebElement:
    return browser.find_element(By.CSS_SELECTOR, "#jobs li.job")


def wait_for(browser: WebDriver, css: str) -> list[WebElement]:
    WebDriverWait(browser, WAIT_S).until(lambda b: b.find_elements(By.CSS_SELECTOR, css))
    return browser.find_elements(By.CSS_SELECTOR, css)


def classify(browser: WebDriver, key: str, photo: Path) -> None:
    browser.find_element(By.NAME, "api_key").send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(photo))
    browser.find_element(By.ID, "submit").click()


def requested_urls(browser: WebDriver) -> list[str]:
    """Every URL the page asked for since the last call (HTTP requests and WebSocket handshakes)."""
    urls = []
    for entry in browser.get_log("performance"):
        event = json.loads(entry["message"])["message"]
        if event["method"] == "Network.requestWillBeSent":
            urls.append(event["params"]["request"]["url"])
        elif event["method"] == "Network.webSocketCreated":
            urls.append(event["params"]["url"])
    return urls


def csp_violations(browser: WebDriver) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]


def test_the_page_classifies_chelsea_over_the_websocket_and_shows_egyptian_cat_first(
    stack: Stack, browser: WebDriver, photos: dict[str, Path]
) -> None:
    page = fresh_page(browser, root_of(stack))
    requested_urls(page)  # what loading the page asked for is not the point here
    assert len(page.find_elements(By.CSS_SELECTOR, "input[type=file]")) == 1
    classify(page, API_KEY, photos["cat"])
    rows = wait_for(page, "#jobs li.job [data-testid=prediction]")
    assert len(rows) == 5
    assert rows[0].text.startswith("Egyptian cat"), [r.text for r in rows]
    assert re.search(r"\d+\.\d%", rows[0].text)
    job = first_job(page)
    assert job.get_attribute("data-live") == "websocket"  # followed live, not polled
    assert page.execute_script("return sessionStorage.getItem('aic.api_key')") == API_KEY
    assert page.execute_script("return localStorage.length") == 0
    urls = requested_urls(page)
    assert any(url.startswith("ws://") and url.endswith("/ws") for url in urls), urls
    assert not [url for url in urls if API_KEY in url or urlsplit(url).query]  # no credential (nor query) in a URL
    assert csp_violations(page) == []
    if screenshot := os.environ.get("AIC_SCREENSHOT"):
        page.save_screenshot(screenshot)


def test_dropped_images_go_as_one_batch_and_each_gets_its_top_5(stack: Stack, browser: WebDriver) -> None:
    page = fresh_page(browser, root_of(stack))
    page.find_element(By.NAME, "api_key").send_keys(API_KEY)
    photos = {"chelsea.jpg": jpeg(), "coffee.jpg": jpeg(skdata.coffee())}
    page.execute_script(
        """
        const transfer = new DataTransfer();
        for (const [name, data] of Object.entries(arguments[0])) {
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
        }
        const zone = document.getElementById("drop");
        zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        """,
        {name: base64.b64encode(data).decode() for name, data in photos.items()},
    )
    WebDriverWait(page, WAIT_S).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "[data-state=completed]")) == 2)
    tops = {
        job.find_element(By.CSS_SELECTOR, ".name").text: job.find_element(By.CSS_SELECTOR, "[data-testid=prediction]")
        for job in page.find_elements(By.CSS_SELECTOR, "#jobs li.job")
    }
    assert tops["chelsea.jpg"].text.startswith("Egyptian cat")
    assert tops["coffee.jpg"].text.startswith("espresso")
    assert any(url.endswith("/api/v1/classify/batch") for url in requested_urls(page))


@pytest.mark.parametrize(
    ("photo", "message"),
    [
        ("big", "Too big: big.jpg is 10.5 MB; the limit is 10.0 MB."),  # the 11 MB file
        ("plain", "Unsupported type: notes.txt is text/plain; send JPEG, PNG or WebP."),
    ],
    ids=["too-big", "not-an-image-type"],
)
def test_a_file_the_page_refuses_shows_why_and_is_not_uploaded(
    stack: Stack, browser: WebDriver, photos: dict[str, Path], photo: str, message: str
) -> None:
    page = fresh_page(browser, root_of(stack))
    classify(page, API_KEY, photos[photo])
    (error,) = wait_for(page, "#jobs li.job .error")
    assert error.text == message
    assert first_job(page).get_attribute("data-job-id") is None  # refused before any upload


def test_the_service_refusing_a_file_shows_its_own_detail(
    stack: Stack, browser: WebDriver, photos: dict[str, Path]
) -> None:
    with httpx.Client(base_url=stack.base_url, headers={"X-API-Key": API_KEY}) as client:
        refused = client.post("/classify", files={"file": ("notes.jpg", photos["text"].read_bytes())})
    assert refused.status_code == 400
    page = fresh_page(browser, root_of(stack))
    classify(page, API_KEY, photos["text"])
    (error,) = wait_for(page, "#jobs li.job .error")
    assert error.text == refused.json()["detail"]


def test_a_wrong_key_is_shown_as_unauthorised(stack: Stack, browser: WebDriver, photos: dict[str, Path]) -> None:
    page = fresh_page(browser, root_of(stack))
    classify(page, "not-a-key-0123456789abcdef", photos["cat"])
    (error,) = wait_for(page, "#jobs li.job .error")
    assert error.text.startswith("Unauthorised: the API key was refused")
    alert = page.find_element(By.CSS_SELECTOR, "[role=alert]")
    assert alert.is_displayed() and alert.text.startswith("Unauthorised")


def test_rate_limiting_is_shown_with_its_retry_time(stack: Stack, browser: WebDriver, photos: dict[str, Path]) -> None:
    with stack.extra_api(RATE_LIMIT_PER_MINUTE="1", RATE_LIMIT_BURST="1") as (_, root):
        page = fresh_page(browser, root)
        classify(page, OTHER_TENANT_KEY, photos["cat"])  # the upload takes the one token; what follows is refused
        (error,) = wait_for(page, "#jobs li.job .error")
        assert re.fullmatch(r"Rate limited: try again in \d+ s\.", error.text), error.text


def test_the_page_sends_the_key_in_the_header_the_service_is_configured_for(
    stack: Stack, browser: WebDriver, photos: dict[str, Path]
) -> None:
    with stack.extra_api(API_KEY_HEADER="X-Tenant-Key") as (_, root):
        page = fresh_page(browser, root)
        classify(page, API_KEY, photos["cat"])
        rows = wait_for(page, "#jobs li.job [data-testid=prediction]")
        assert rows[0].text.startswith("Egyptian cat"), [r.text for r in rows]


def test_the_whole_flow_works_with_the_keyboard_alone(
    stack: Stack, browser: WebDriver, photos: dict[str, Path]
) -> None:
    page = fresh_page(browser, root_of(stack))
    keys = ActionChains(page)
    keys.send_keys(Keys.TAB).perform()
    assert page.switch_to.active_element.get_attribute("name") == "api_key"
    keys.send_keys(API_KEY).perform()
    ActionChains(page).send_keys(Keys.TAB).perform()
    file_input = page.switch_to.active_element
    assert file_input.get_attribute("type") == "file"
    file_input.send_keys(str(photos["cat"]))  # the file dialog's part (see the module's docstring)
    ActionChains(page).send_keys(Keys.TAB).perform()
    assert page.switch_to.active_element.get_attribute("id") == "submit"
    ActionChains(page).send_keys(Keys.SPACE).perform()
    rows = wait_for(page, "#jobs li.job [data-testid=prediction]")
    assert rows[0].text.startswith("Egyptian cat")
    assert page.find_element(By.ID, "jobs").get_attribute("aria-live") == "polite"


def test_the_page_fits_a_phone_screen(stack: Stack, browser: WebDriver, photos: dict[str, Path]) -> None:
    browser.set_window_size(390, 844)
    try:
        page = fresh_page(browser, root_of(stack))
        classify(page, API_KEY, photos["cat"])
        wait_for(page, "#jobs li.job [data-testid=prediction]")
        assert page.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        assert page.find_element(By.ID, "submit").size["width"] > 300  # a full-width button to tap
    finally:
        browser.set_window_size(1000, 760)


# --- how the page is served (no browser) -------------------------------------------------------------------

EXPECTED_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


def test_the_page_and_its_assets_carry_a_strict_policy_and_need_no_key(stack: Stack) -> None:
    root = root_of(stack)
    html = httpx.get(f"{root}/")
    assets = [httpx.get(f"{root}/static/{name}") for name in ("app.js", "app.css")]
    for response in (html, *assets):
        assert response.status_code == 200, response.text
        assert response.headers["content-security-policy"] == EXPECTED_CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert html.headers["content-type"] == "text/html; charset=utf-8"  # one charset, not two
    assert assets[0].headers["content-type"].startswith(("text/javascript", "application/javascript"))
    # nothing inline for the policy to refuse, nothing fetched from elsewhere
    assert not re.search(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=", html.text)
    assert not re.search(r"(src|href)=\"(https?:)?//", html.text)
    assert 'data-max-file-size="10485760"' in html.text and 'data-api-prefix="/api/v1"' in html.text


def test_the_page_is_not_rate_limited_and_not_in_the_schema_while_unknown_paths_stay_404(stack: Stack) -> None:
    with stack.extra_api(RATE_LIMIT_PER_MINUTE="1", RATE_LIMIT_BURST="1") as (_, root):
        answers = [httpx.get(f"{root}/") for _ in range(3)] + [httpx.get(f"{root}/static/app.js") for _ in range(3)]
        assert [a.status_code for a in answers] == [200] * 6
        assert not any("ratelimit-limit" in a.headers for a in answers)
        missing = httpx.get(f"{root}/static/nope.js")
        assert missing.status_code == 404 and missing.json()["error"] == "HTTP_ERROR"
        assert "content-security-policy" in missing.headers
        assert httpx.post(f"{root}/").json()["error"] == "HTTP_ERROR"
        paths = httpx.get(f"{root}/schema/openapi.json").json()["paths"]
        assert "/" not in paths and not [p for p in paths if p.startswith("/static")]


def test_the_page_lists_the_tenants_recent_jobs_when_it_opens_and_after_a_reload(
    stack: Stack, browser: WebDriver
) -> None:
    with stack.client() as client, stack.client(OTHER_TENANT_KEY) as other:
        mine = client.post("/classify", files={"file": ("cat.jpg", jpeg(), "image/jpeg")}).json()["job_id"]
        theirs = other.post("/classify", files={"file": ("cat.jpg", jpeg(), "image/jpeg")}).json()["job_id"]
    page = fresh_page(browser, root_of(stack))
    assert page.find_elements(By.CSS_SELECTOR, "#history li.job") == []  # no key yet: nothing to list
    page.execute_script("sessionStorage.setItem('aic.api_key', arguments[0]);", API_KEY)
    for _ in range(2):  # the page opening with the tab's key, then a reload: the history is the service's
        page.get(f"{root_of(stack)}/")
        (item,) = wait_for(page, f"#history li.job[data-job-id='{mine}']")
        assert page.find_elements(By.CSS_SELECTOR, f"#history li.job[data-job-id='{theirs}']") == []
        ids = [li.get_attribute("data-job-id") for li in page.find_elements(By.CSS_SELECTOR, "#history li.job")]
        assert ids[0] == mine  # newest first
    WebDriverWait(page, WAIT_S).until(lambda _: item.find_elements(By.CSS_SELECTOR, "button.show"))
    item.find_element(By.CSS_SELECTOR, "button.show").click()
    rows = wait_for(page, f"#history li.job[data-job-id='{mine}'] [data-testid=prediction]")
    assert rows[0].text.startswith("Egyptian cat"), [r.text for r in rows]
    assert csp_violations(page) == []


def requests_sent(browser: WebDriver) -> list[dict[str, Any]]:
    """Every HTTP request the page sent since the last call (method, url, headers)."""
    sent = []
    for entry in browser.get_log("performance"):
        event = json.loads(entry["message"])["message"]
        if event["method"] == "Network.requestWillBeSent":
            sent.append(event["params"]["request"])
    return sent


def test_a_file_over_max_file_size_goes_through_a_presigned_upload_to_the_store_and_a_small_one_does_not(
    s3_stack: Stack, browser: WebDriver, photos: dict[str, Path], tmp_path: Path
) -> None:
    assert s3_stack.s3 is not None
    cat = photos["cat"].read_bytes()
    small = tmp_path / "small.jpg"
    small.write_bytes(jpeg(quality=40))
    limit = len(cat) - 1  # chelsea is one byte over the limit: the service would refuse it as a form upload
    assert small.stat().st_size <= limit
    with s3_stack.extra_api(MAX_FILE_SIZE=str(limit)) as (_, root):
        csp = httpx.get(f"{root}/").headers["content-security-policy"]
        assert f"connect-src 'self' {s3_stack.s3.endpoint};" in csp  # the store's origin, and only it, besides ours
        page = fresh_page(browser, root)
        requests_sent(page)
        classify(page, API_KEY, photos["cat"])
        rows = wait_for(page, "#jobs li.job [data-testid=prediction]")
        assert rows[0].text.startswith("Egyptian cat"), [r.text for r in rows]
        job = first_job(page)
        assert job.get_attribute("data-upload") == "direct"
        sent = requests_sent(page)
        puts = [r for r in sent if r["method"] == "PUT"]
        bucket = f"{s3_stack.s3.endpoint}/{s3_stack.s3.bucket}/{s3_stack.s3_prefix}/acme/"
        assert len(puts) == 1 and puts[0]["url"].startswith(bucket), [(r["method"], r["url"]) for r in sent]
        submits = [r for r in sent if r["method"] == "POST" and r["url"].endswith("/api/v1/classify")]
        assert len(submits) == 1 and submits[0]["headers"]["Content-Type"] == "application/json"
        assert "multipart" not in json.dumps(submits)  # no image bytes through the API: only the upload id
        assert csp_violations(page) == []

        page = fresh_page(browser, root)
        requests_sent(page)
        classify(page, API_KEY, small)
        wait_for(page, "#jobs li.job [data-testid=prediction]")
        assert first_job(page).get_attribute("data-upload") is None
        sent = requests_sent(page)
        assert not [r for r in sent if r["method"] == "PUT" or r["url"].endswith("/uploads")], sent
        submits = [r for r in sent if r["method"] == "POST" and r["url"].endswith("/api/v1/classify")]
        assert len(submits) == 1 and submits[0]["headers"]["Content-Type"].startswith("multipart/form-data")
