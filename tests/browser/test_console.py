"""The console's journeys in headless Chromium: sign in, see a deployed function, edit alias
weights, invoke and read the log, filter invocations, read a failed invocation's timeline, see
charts, and markup from functions shown as text (never run)."""

import os

import pytest
from conftest import TOKEN, URL, Console, unique, wasm
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

TERMINAL = ("SUCCEEDED", "FAILED", "EXPIRED")


def terminal(r):
    return r["state"] in TERMINAL


def test_signing_in_with_a_token_and_out_again(browser):
    c = Console(browser, URL)
    c.open("#/workers")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    c.find("#token")
    assert c.heading() == "Sign in to gust"
    assert c.first("#signout").is_displayed() is False

    # A wrong token is refused and nothing is kept.
    c.find("#token").send_keys("not-the-token" + Keys.ENTER)
    c.wait_text("#signin-error", "not accepted")
    assert browser.execute_script("return sessionStorage.length") == 0

    # The right one opens the page first asked for; it is kept in this tab only, never in the URL.
    box = c.find("#token")
    box.clear()
    box.send_keys(TOKEN + Keys.ENTER)
    c.wait(lambda: c.heading() == "Workers", what="the workers page asked for before signing in")
    assert TOKEN not in browser.current_url
    assert TOKEN in browser.execute_script("return Object.values(sessionStorage)")
    assert TOKEN not in browser.page_source
    browser.refresh()
    c.wait(lambda: c.heading() == "Workers", what="still signed in after a reload")

    # A token the server stops accepting (revoked, or the server restarted with another) sends
    # the next request back to sign-in.
    browser.execute_script("sessionStorage.setItem(Object.keys(sessionStorage)[0], 'revoked-token')")
    c.go("#/functions")
    c.find("#token")
    c.wait_text("#signin-error", "refused")
    c.find("#token").send_keys(TOKEN + Keys.ENTER)
    c.wait(lambda: c.heading() == "Functions", what="the functions page after signing in again")

    # Signing out forgets the token.
    c.find("#signout").click()
    c.find("#token")
    assert browser.execute_script("return sessionStorage.length") == 0
    browser.refresh()
    c.find("#token")
    assert not c.errors()


def test_a_server_without_a_token_needs_no_sign_in(open_console, open_api):
    name = unique("open")
    open_api.deploy(name, wasm("echo"))
    c = open_console
    c.open(f"#/functions?q={name}")
    c.find(f'tr[data-name="{name}"]')
    assert c.first("#token") is None
    assert "No token required" in c.text_of("#who")
    assert not c.first("#signout").is_displayed()
    assert not c.errors()


def test_a_function_deployed_through_the_api_shows_in_the_list(console, api):
    name = unique("listed")
    other = unique("unrelated")
    config = {
        "memory_mb": 64,
        "timeout_ms": 2500,
        "description": "Says it back",
        "env": {"DB_PASSWORD": "hunter2-not-for-screens"},
    }
    api.deploy(name, wasm("echo"), config)
    api.deploy(other, wasm("echo"))
    console.open("#/functions")
    console.find(f'tr[data-name="{name}"]')

    # "/" focuses the filter; typing narrows the list (on the server's pages) and the URL follows.
    console.find("main h1")
    ActionChains(console.d).send_keys("/").perform()
    assert console.d.switch_to.active_element.get_attribute("id") == "function-filter"
    ActionChains(console.d).send_keys(name).perform()
    console.wait(lambda: console.first(f'tr[data-name="{other}"]') is None, what="the filter to drop other names")
    console.find(f'tr[data-name="{name}"]')
    assert f"q={name}" in console.d.current_url

    console.find(f'tr[data-name="{name}"] a').click()
    console.wait(lambda: console.heading() == name, what="the function page")
    page = console.text_of("main")
    assert "64 MB" in page and "2.50 s" in page and "Says it back" in page
    assert "DB_PASSWORD" in console.text_of("#env-names")
    assert "hunter2-not-for-screens" not in console.d.page_source, "an environment value reached the page"
    assert "Unreserved" in console.text_of("#reserved-concurrency")

    # Reserved concurrency, set from the page and read back through the API.
    console.find("#set-concurrency").click()
    box = console.find("#concurrency-value")
    box.clear()
    box.send_keys("7" + Keys.ENTER)
    console.wait_text("#reserved-concurrency", "7 at most")
    assert api.ok("GET", f"/v1/functions/{name}/concurrency")["reserved_concurrency"] == 7

    # Back returns to the filtered list.
    console.d.back()
    console.find(f'tr[data-name="{name}"]')
    assert not console.errors()


def test_alias_weights_are_edited_and_saved(console, api):
    name = unique("weights")
    api.deploy(name, wasm("echo"))
    v1 = api.publish(name)
    api.put_code(name, wasm("fail"))
    v2 = api.publish(name)
    api.ok("PUT", f"/v1/functions/{name}/aliases/live", {"version": v1})

    console.go(f"#/functions/{name}/aliases")
    console.find('tr[data-alias="live"] .edit-alias').click()
    console.find("#alias-dialog")
    Select(console.find("#alias-secondary")).select_by_value(str(v2))
    # The slider moves by keyboard (10% to 25%), and the number follows.
    slider = console.find("#alias-share")
    slider.send_keys(*([Keys.ARROW_RIGHT] * 15))
    assert console.find("#alias-share-number").get_attribute("value") == "25"
    console.wait_text("#alias-preview", f"version {v2}: 25%")
    console.find("#alias-save").click()
    console.wait(lambda: console.first("#alias-dialog") is None, what="the dialog to close")
    console.wait_text('tr[data-alias="live"]', f"version {v2}: 25%")

    got = api.ok("GET", f"/v1/functions/{name}/aliases/live")
    assert got["version"] == v1
    assert got["weights"] == {str(v2): 0.25}

    # A share typed as a number; Esc closes the editor without saving.
    console.find('tr[data-alias="live"] .edit-alias').click()
    share = console.find("#alias-share-number")
    share.clear()
    share.send_keys("12.5")
    console.wait_text("#alias-preview", "12.5%")
    ActionChains(console.d).send_keys(Keys.ESCAPE).perform()
    console.wait(lambda: console.first("#alias-dialog") is None, what="Esc to close the dialog")
    assert api.ok("GET", f"/v1/functions/{name}/aliases/live")["weights"] == {str(v2): 0.25}

    console.find('tr[data-alias="live"] .edit-alias').click()
    share = console.find("#alias-share-number")
    share.clear()
    share.send_keys("12.5")
    console.find("#alias-save").click()
    console.wait_text('tr[data-alias="live"]', "12.5%")
    assert api.ok("GET", f"/v1/functions/{name}/aliases/live")["weights"] == {str(v2): 0.125}

    # Back to one version.
    console.find('tr[data-alias="live"] .edit-alias').click()
    Select(console.find("#alias-secondary")).select_by_value("")
    console.find("#alias-save").click()
    console.wait_text('tr[data-alias="live"]', f"version {v1}: 100%")
    assert api.ok("GET", f"/v1/functions/{name}/aliases/live")["weights"] == {}
    assert not console.errors()


def test_invoking_shows_the_result_and_the_log(console, api):
    name = unique("invoke")
    api.deploy(name, wasm("echo"))
    console.go(f"#/functions/{name}/invoke")
    payload = console.find("#payload")
    payload.clear()
    payload.send_keys('{"hello": "console"}')
    console.find("#invoke-button").click()
    console.wait_text("#invoke-status", "Succeeded")
    assert '"hello": "console"' in console.text_of("#invoke-result pre.result-text")
    console.wait_text("#invoke-log", "echo: invoked")
    assert console.text_of("#invoke-report").startswith("REPORT RequestId: ")
    assert "Duration:" in console.text_of("#invoke-report")

    # The record's page, linked from the result.
    console.find("#invoke-record-link").click()
    console.wait(lambda: console.heading().startswith("Invocation"), what="the invocation page")
    console.wait_text("#invocation-log", "echo: invoked")

    # A function error, invoked with Ctrl+Enter from the payload box.
    failing = unique("invoke-fail")
    api.deploy(failing, wasm("fail"))
    console.go(f"#/functions/{failing}/invoke")
    console.find("#payload").send_keys(Keys.CONTROL, Keys.ENTER)
    console.wait_text("#invoke-status", "Function error")
    console.wait_text("#invoke-log", "fail: bad input")
    assert not console.errors()


def test_invocations_are_filtered_by_state_and_time(console, api):
    name = unique("filter")
    api.deploy(name, wasm("echo"))
    ok = [api.invoke(name)[0] for _ in range(3)]
    api.put_code(name, wasm("fail"))
    bad, _ = api.invoke(name)
    for inv in ok + [bad]:
        api.record(inv, terminal)

    console.go(f"#/functions/{name}/invocations")
    console.wait(lambda: len(console.all("#invocations-table tbody tr")) == 4, what="4 invocations listed")
    Select(console.find("#filter-state")).select_by_value("FAILED")
    console.wait(lambda: "state=FAILED" in console.d.current_url, what="the state in the URL")
    console.wait(lambda: len(console.all("#invocations-table tbody tr")) == 1, what="the failed one only")
    row = console.find("#invocations-table tbody tr")
    assert row.get_attribute("data-state") == "FAILED"
    assert row.find_element(By.CSS_SELECTOR, "a").text == bad
    Select(console.find("#filter-state")).select_by_value("SUCCEEDED")
    console.wait(lambda: len(console.all('#invocations-table tbody tr[data-state="SUCCEEDED"]')) == 3, what="the 3 that succeeded")
    assert not console.all('#invocations-table tbody tr[data-state="FAILED"]')

    # Back goes to the previous filter.
    console.d.back()
    console.wait(lambda: len(console.all("#invocations-table tbody tr")) == 1, what="the FAILED filter again")

    # Received before a time earlier than all of them: nothing matches.
    console.d.execute_script("document.getElementById('filter-before').value = '2001-02-03T04:05:06'")
    console.find("#apply-filters").click()
    console.wait(lambda: "received_before=" in console.d.current_url, what="the time in the URL")
    console.wait_text("main", "No invocation matches")

    # Received before just after the first: only the first.
    first = api.record(ok[0])["received_at"]
    second = api.record(ok[1])["received_at"]
    if second > first:
        console.go(f"#/functions/{name}/invocations?received_before={first + 1}")
        console.wait(lambda: len(console.all("#invocations-table tbody tr")) == 1, what="only the first invocation")
        assert console.find("#invocations-table tbody tr a").text == ok[0]
    assert not console.errors()


def test_a_failed_invocation_shows_its_attempts_on_the_timeline(console, api):
    name = unique("retry")
    api.deploy(name, wasm("fail"), {"retry": {"max_retries": 1, "base_delay_ms": 50}})
    inv, _ = api.invoke(name, mode="async")
    api.record(inv, lambda r: r["state"] == "FAILED", timeout=30)

    # Through the list, as an operator would: failed ones, then the row's link.
    console.go(f"#/functions/{name}/invocations?state=FAILED")
    console.find(f'#invocations-table a[href$="{inv}"]').click()
    console.wait(lambda: console.heading().startswith("Invocation"), what="the invocation page")
    console.find("#timeline")
    events = [(li.get_attribute("data-event"), li.get_attribute("data-epoch")) for li in console.all("#timeline li")]
    assert events[0][0] == "received", events
    for wanted in [("started", "1"), ("completed", "1"), ("started", "2"), ("completed", "2")]:
        assert wanted in events, f"{wanted} not in {events}"
    assert any(e == "retry due" for e, _ in events), events
    assert events.index(("completed", "1")) < events.index(("started", "2")), events
    timeline = console.text_of("#timeline")
    assert "Attempt started" in timeline and "attempt 2" in timeline
    assert "FAILED" in timeline and "RETRY_WAIT" in timeline
    assert console.text_of("#invocation-error")
    assert "fail: bad input" in console.text_of("#invocation-log")
    summary = console.text_of("main")
    assert "Attempts\n2" in summary or "Attempts 2" in summary
    assert not console.errors()


def test_charts_render_with_data(console, api):
    name = unique("charts")
    api.deploy(name, wasm("echo"))
    ids = [api.invoke(name)[0] for _ in range(5)]
    api.put_code(name, wasm("fail"))
    ids += [api.invoke(name)[0] for _ in range(2)]
    for inv in ids:
        api.record(inv, terminal)
    status, _ = api.call("GET", f"/v1/functions/{name}/stats?window=15m&step=15s")
    if status == 404:
        pytest.skip("GET /v1/functions/{name}/stats is not on this server yet")

    console.go(f"#/functions/{name}/metrics?window=15m")
    console.find("#charts svg.chart path.series")
    paths = console.all("#charts path.series")
    keys = {p.get_attribute("data-series") for p in paths}
    assert {"invocations", "errors", "throttles", "p50_ms", "p99_ms", "concurrency", "cold_starts"} <= keys, keys
    for p in paths:
        assert p.get_attribute("d").startswith("M"), p.get_attribute("d")
    assert len(console.all("#charts svg.chart")) == 6
    stats = console.text_of(".stat-row")
    assert "Invocations\n7" in stats or "Invocations 7" in stats, stats
    assert "Errors\n2" in stats or "Errors 2" in stats, stats

    # The window picker.
    console.find('.segmented a[href*="window=6h"]').click()
    console.wait(lambda: "window=6h" in console.d.current_url, what="the 6 hour window")
    console.wait(lambda: console.first('.segmented a[aria-current="true"]').text == "6 hours", what="6 hours picked")
    console.find("#charts path.series")

    # A function with no traffic: an empty state, not empty charts.
    idle = unique("idle")
    api.deploy(idle, wasm("echo"))
    console.go(f"#/functions/{idle}/metrics")
    console.wait_text("main", "No invocations ended")
    assert not console.all("#charts")
    assert not console.errors()


def test_markup_in_logs_results_and_descriptions_shows_as_text(console, api):
    name = unique("markup")
    description = '<img src=x onerror="window.__gustXss=3">desc'
    api.deploy(name, wasm("markup"), {"description": description})
    console.open(f"#/functions?q={name}")
    console.wait_text(f'tr[data-name="{name}"]', description)

    console.go(f"#/functions/{name}/invoke")
    console.find("#invoke-button").click()
    console.wait_text("#invoke-log", '<img src=x onerror="window.__gustXss=1">')
    assert "<script>window.__gustXss=2</script><b>bold?</b>" in console.text_of("#invoke-result pre.result-text")
    assert description in console.text_of("main .subtitle")
    console.find("#invoke-record-link").click()
    console.wait_text("#invocation-log", "<script>window.__gustXss=2</script>")

    # No element was made from it: no image, no script, no bold; nothing ran.
    assert not console.all("main img, main script, main b")
    assert console.d.execute_script("return window.__gustXss") is None
    assert not console.errors()


def test_workers_queues_and_schedules_are_listed(console, api):
    queue = unique("q")
    api.ok("POST", "/v1/queues", {"name": queue})
    fn = unique("scheduled")
    api.deploy(fn, wasm("echo"))
    schedule = unique("s")
    api.ok("PUT", f"/v1/schedules/{schedule}", {"expression": "rate(1 hour)", "function": fn})

    console.go("#/workers")
    console.wait(lambda: console.heading() == "Workers", what="the workers page")
    console.wait(lambda: console.first("#workers-table") or "No remote workers" in console.text_of("main"), what="workers or their empty state")

    console.go("#/queues")
    console.find(f'#queues-table a[href="#/queues/{queue}"]').click()
    console.wait(lambda: console.heading() == queue, what="the queue page")
    console.wait_text("main", "ApproximateNumberOfMessages")

    console.go("#/schedules")
    console.wait_text("#schedules-table", schedule)
    assert "rate(1 hour)" in console.text_of("#schedules-table")
    console.find(f'#schedules-table a[href="#/functions/{fn}"]').click()
    console.wait(lambda: console.heading() == fn, what="the schedule's function")

    # Keyboard: "?" lists the shortcuts, Esc closes them, "g f" goes to functions.
    console.find("main h1")
    ActionChains(console.d).send_keys("?").perform()
    console.find("dialog[open]")
    ActionChains(console.d).send_keys(Keys.ESCAPE).perform()
    console.wait(lambda: console.first("dialog[open]") is None, what="Esc to close the shortcuts")
    ActionChains(console.d).send_keys("g", "w").perform()
    console.wait(lambda: console.heading() == "Workers", what="g w to open workers")
    assert not console.errors()


@pytest.mark.skipif(not os.environ.get("GUST_CONSOLE_SCREENSHOTS"), reason="set GUST_CONSOLE_SCREENSHOTS=DIR to save screenshots")
def test_screenshots_of_the_main_pages(console, api):
    """Not a check: saves PNGs of the main pages (for docs) into GUST_CONSOLE_SCREENSHOTS."""
    out = os.environ["GUST_CONSOLE_SCREENSHOTS"]
    os.makedirs(out, exist_ok=True)
    name = unique("thumbnail")
    api.deploy(name, wasm("echo"), {"description": "Makes thumbnails", "env": {"BUCKET": "b"}})
    v1 = api.publish(name)
    api.ok("PUT", f"/v1/functions/{name}/aliases/live", {"version": v1, "description": "production"})
    for _ in range(20):
        api.invoke(name, b'{"image": "cat.png"}')
    retry = unique("resize")
    api.deploy(retry, wasm("fail"), {"retry": {"max_retries": 1, "base_delay_ms": 50}})
    inv, _ = api.invoke(retry, mode="async")
    api.record(inv, lambda r: r["state"] == "FAILED", timeout=30)
    console.d.set_window_size(1280, 1000)
    shots = [
        ("functions", "#/functions", "#functions-table"),
        ("function", f"#/functions/{name}", "#env-names"),
        ("metrics", f"#/functions/{name}/metrics?window=15m", "#charts"),
        ("aliases", f"#/functions/{name}/aliases", "#aliases-table"),
        ("invocations", f"#/functions/{name}/invocations", "#invocations-table"),
        ("timeline", f"#/invocations/{inv}", "#timeline"),
    ]
    for label, route, ready in shots:
        console.go(route)
        console.find(ready)
        console.d.save_screenshot(os.path.join(out, f"console-{label}.png"))
    console.go(f"#/functions/{name}/invoke")
    console.find("#invoke-button").click()
    console.find("#invoke-log")
    console.d.save_screenshot(os.path.join(out, "console-invoke.png"))
    # Dark (the OS's preference) and a phone's width.
    console.d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    console.go(f"#/functions/{name}/metrics?window=15m")
    console.find("#charts")
    console.d.save_screenshot(os.path.join(out, "console-metrics-dark.png"))
    console.go(f"#/invocations/{inv}")
    console.find("#timeline")
    console.d.save_screenshot(os.path.join(out, "console-timeline-dark.png"))
    console.d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    console.d.set_window_size(400, 860)
    console.go(f"#/functions/{name}")
    console.find("#env-names")
    console.d.save_screenshot(os.path.join(out, "console-narrow.png"))
    console.d.set_window_size(1280, 900)
