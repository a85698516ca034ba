"""The web console in a real browser: headless Chromium (Debian's chromium + chromium-driver)
driven by Selenium, against gust servers started by crates/gust/tests/console.rs (or by hand).

Where things are comes from the environment:

    GUST_CONSOLE_URL        http://127.0.0.1:PORT of a server started with --token
    GUST_CONSOLE_TOKEN      that token
    GUST_CONSOLE_OPEN_URL   http://127.0.0.1:PORT of a server without a token (loopback)
    GUST_CONSOLE_WASM       a folder with echo.wasm, fail.wasm and markup.wasm (compiled guests)
    GUST_CHROMIUM           the browser (default /usr/bin/chromium)
    GUST_CHROMEDRIVER       its driver (default /usr/bin/chromedriver)

Every test makes its own uniquely named functions, so tests are independent of their order.
"""

import base64
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import pytest

REQUIRED_ENV = ["GUST_CONSOLE_URL", "GUST_CONSOLE_TOKEN", "GUST_CONSOLE_OPEN_URL", "GUST_CONSOLE_WASM"]
_missing = [k for k in REQUIRED_ENV if not os.environ.get(k)]
if _missing:
    raise pytest.UsageError(
        "the browser suite needs running gust servers; missing environment: "
        + ", ".join(_missing)
        + " (crates/gust/tests/console.rs sets them)"
    )

# Selenium must use the given driver and never download one.
os.environ.setdefault("SE_OFFLINE", "true")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

URL = os.environ["GUST_CONSOLE_URL"].rstrip("/")
TOKEN = os.environ["GUST_CONSOLE_TOKEN"]
OPEN_URL = os.environ["GUST_CONSOLE_OPEN_URL"].rstrip("/")
WASM = os.environ["GUST_CONSOLE_WASM"]
CHROMIUM = os.environ.get("GUST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GUST_CHROMEDRIVER", "/usr/bin/chromedriver")

WAIT_S = 15


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wasm(name):
    with open(os.path.join(WASM, f"{name}.wasm"), "rb") as f:
        return f.read()


class Api:
    """The native /v1 API of one server, as a plain HTTP client (what a deploy script does)."""

    def __init__(self, base, token):
        self.base = base
        self.token = token

    def call(self, method, path, body=None, headers=None, raw=False):
        data = None
        hdrs = dict(headers or {})
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            if isinstance(body, (bytes, bytearray)):
                data = bytes(body)
            else:
                data = json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                payload = r.read()
                status, rhdrs = r.status, r.headers
        except urllib.error.HTTPError as e:
            payload, status, rhdrs = e.read(), e.code, e.headers
        if raw:
            return status, rhdrs, payload
        return status, (json.loads(payload) if payload and payload[:1] in b"{[" else payload)

    def ok(self, method, path, body=None, headers=None):
        status, got = self.call(method, path, body, headers)
        assert 200 <= status < 300, f"{method} {path}: {status} {got}"
        return got

    def deploy(self, name, code, config=None):
        body = {"name": name, "config": config or {}, "code_b64": base64.b64encode(code).decode()}
        return self.ok("POST", "/v1/functions", body)

    def put_code(self, name, code):
        return self.ok("PUT", f"/v1/functions/{name}/code", code, {"Content-Type": "application/wasm"})

    def publish(self, name):
        return self.ok("POST", f"/v1/functions/{name}/versions")["version"]

    def invoke(self, name, payload=b"{}", mode=None):
        headers = {"Content-Type": "application/json"}
        if mode:
            headers["Invocation-Type"] = mode
        status, hdrs, body = self.call("POST", f"/v1/functions/{name}/invoke", payload, headers, raw=True)
        assert status in (200, 202), f"invoke {name}: {status} {body!r}"
        return hdrs["gust-invocation-id"], body

    def record(self, inv_id, until=lambda r: True, timeout=15):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            status, got = self.call("GET", f"/v1/invocations/{inv_id}")
            if status == 200:
                last = got
                if until(got):
                    return got
            time.sleep(0.1)
        raise AssertionError(f"invocation {inv_id} did not get there in {timeout}s: {last}")


@pytest.fixture(scope="session")
def api():
    return Api(URL, TOKEN)


@pytest.fixture(scope="session")
def open_api():
    return Api(OPEN_URL, None)


@pytest.fixture(scope="session")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="gust-chromium-")
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ]:
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


class Console:
    """The console in the browser: navigation and waits."""

    def __init__(self, driver, base):
        self.d = driver
        self.base = base

    def open(self, route="#/functions"):
        """Loads the console afresh (a new document, as a typed address or a reload does)."""
        self.d.get("about:blank")
        self.d.get(f"{self.base}/console/{route}")

    def go(self, route):
        """Client-side navigation (the hash), as a link click does."""
        self.d.execute_script("location.hash = arguments[0]", route)

    def wait(self, cond, timeout=WAIT_S, what="the condition"):
        try:
            # The console re-renders pages: an element read a moment ago may be gone.
            return WebDriverWait(
                self.d, timeout, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]
            ).until(lambda d: cond())
        except Exception as e:
            main = self.d.find_element(By.ID, "main").text[:2000]
            raise AssertionError(f"timed out waiting for {what}; the page shows:\n{main}") from e

    def find(self, css, timeout=WAIT_S):
        return self.wait(lambda: self.first(css), timeout, f"an element {css!r}")

    def first(self, css):
        found = self.d.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found else None

    def all(self, css):
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def text_of(self, css):
        el = self.first(css)
        return el.text if el else ""

    def wait_text(self, css, needle, timeout=WAIT_S):
        return self.wait(lambda: needle in self.text_of(css), timeout, f"{needle!r} in {css!r}")

    def heading(self):
        return self.text_of("main h1")

    def sign_in(self, token=TOKEN):
        self.open("#/functions")
        box = self.find("#token")
        box.clear()
        box.send_keys(token)
        self.find("form.signin button[type=submit]").click()
        self.wait(lambda: self.heading() == "Functions", what="the functions page after signing in")

    def errors(self):
        """Script errors and Content-Security-Policy violations logged since the last call (a
        request answered 401 or 404, which the console expects at times, is not one)."""
        bad = ("Uncaught", "Content Security Policy", "Refused to")
        return [e for e in self.d.get_log("browser") if any(b in e.get("message", "") for b in bad)]


@pytest.fixture
def console(browser):
    """The console of the server with a token, signed in."""
    c = Console(browser, URL)
    c.open("#/functions")
    browser.execute_script("sessionStorage.clear()")
    c.sign_in()
    c.errors()  # start each test with a clean log
    return c


@pytest.fixture
def open_console(browser):
    """The console of the server without a token."""
    c = Console(browser, OPEN_URL)
    c.open("#/functions")
    browser.execute_script("sessionStorage.clear()")
    c.errors()
    return c
