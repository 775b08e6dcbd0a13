"""The Azure tutorial's studio steps clicked through on Switchyard's studio page in headless
Chromium, each checked through the admin API too. Run by tests/studio.rs:

    python studio_test.py  (env: STUDIO_URL, ADMIN_TOKEN, SAMPLE_DIR, SHOTS_DIR)

STUDIO_URL is the admin plane (the page is its `/`); SAMPLE_DIR the seed's managed/sample
folder; screenshots of each tab go to SHOTS_DIR.
"""

import json
import os
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

URL = os.environ["STUDIO_URL"].rstrip("/")
TOKEN = os.environ["ADMIN_TOKEN"]
SAMPLE = os.environ["SAMPLE_DIR"]
SHOTS = os.environ["SHOTS_DIR"]
MODEL_1 = [11055.977245525679, 4503.079536107787]
os.makedirs(SHOTS, exist_ok=True)


def step(text):
    print("step:", text, flush=True)


def api(method, path, body=None, content_type="application/json", query=""):
    data = body.encode() if isinstance(body, str) else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(URL + path + query, data=data, method=method,
                                 headers={"Authorization": "Bearer " + TOKEN, "Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text.strip().startswith(("{", "[")) else text)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "null")


def wait_api(what, probe, limit=180):
    deadline = time.monotonic() + limit
    while True:
        last = probe()
        if last is True:
            return
        if time.monotonic() > deadline:
            raise AssertionError("never happened through the admin API: {} (last: {})".format(what, last))
        time.sleep(0.1)


def endpoint():
    return api("GET", "/v1/endpoint")[1]


def deployment(name):
    return api("GET", "/v1/deployments/" + name)[1]


opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic", "--window-size=1366,900"):
    opts.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
wait = WebDriverWait(driver, 120, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException, NoSuchElementException))


def by_id(i):
    return driver.find_element(By.ID, i)


def retry(action):
    """Cards are redrawn when a deployment's JSON changes: find the element again if it was."""
    for _ in range(50):
        try:
            return action()
        except StaleElementReferenceException:
            time.sleep(0.05)
    return action()


def text_now(i):
    return retry(lambda: by_id(i).text)


# The failure message is made only on timeout: reading the element's text up front raced with
# the page redrawing it (a stale element before the wait had even started).
def text_is(i, expected):
    try:
        wait.until(lambda d: d.find_element(By.ID, i).text.strip() == expected)
    except TimeoutException:
        raise AssertionError("#{} never read {!r} (it reads {!r})".format(i, expected, text_now(i)))


def text_has(i, part):
    try:
        wait.until(lambda d: part in d.find_element(By.ID, i).text)
    except TimeoutException:
        raise AssertionError("#{} never contained {!r} (it reads {!r})".format(i, part, text_now(i)))


def visible(i):
    return wait.until(EC.visibility_of_element_located((By.ID, i)), "#{} never became visible".format(i))


def fill(i, value):
    def go():
        el = by_id(i)
        el.clear()
        el.send_keys(str(value))
    retry(go)


def click(i):
    retry(lambda: by_id(i).click())


def shot(name):
    driver.save_screenshot(os.path.join(SHOTS, name + ".png"))


def tab(name):
    click("tab-" + name)
    visible("panel-" + name)


def open_traffic(blue, green, mirror=None):
    click("update-traffic")
    visible("traffic-dialog")
    fill("traffic-blue", blue)
    if green is not None:
        fill("traffic-green", green)
    box = by_id("mirror-enable")
    if (mirror is not None) != box.is_selected():
        box.click()
    if mirror is not None:
        Select(by_id("mirror-deployment")).select_by_value(mirror[0])
        if mirror[1] is not None:
            fill("mirror-percent", mirror[1])
    click("traffic-save")


def test_on_page(name, request_file):
    tab("test")
    Select(by_id("test-deployment")).select_by_value(name)
    with open(request_file) as f:
        fill("test-input", f.read())
    driver.execute_script("document.getElementById('test-status').textContent = ''")
    click("test-run")
    text_is("test-status", "200")
    text_is("test-served-by", name)
    return json.loads(text_now("test-output"))


try:
    step("the CLI's first steps (endpoint, blue with all traffic) through the admin API")
    with open(os.path.join(SAMPLE, "endpoint.yml")) as f:
        assert api("PUT", "/v1/endpoint", f.read(), "application/yaml")[0] == 201
    with open(os.path.join(SAMPLE, "blue-deployment.yml")) as f:
        status, body = api("PUT", "/v1/deployments/blue", f.read(), "application/yaml",
                           "?all_traffic=true&base_dir=" + urllib.request.quote(SAMPLE))
        assert status == 201, body
    wait_api("blue serves all traffic", lambda: endpoint()["traffic"] == {"blue": 100} or endpoint()["traffic"])

    step("the page asks for the admin token")
    driver.get(URL + "/")
    visible("token-dialog")
    fill("token-input", TOKEN)
    click("token-save")

    step("see blue (Details)")
    visible("endpoint-details")
    text_is("ep-auth-mode", "key")
    text_is("ep-traffic", "blue 100%")
    text_is("state-blue", "Succeeded")
    assert text_now("ep-scoring-uri") == endpoint()["scoring_uri"]
    text_is("instances-blue", "1 ready of 1")
    shot("details")

    step("test blue (Test tab, first deployment preselected)")
    tab("test")
    assert Select(by_id("test-deployment")).first_selected_option.text == "blue"
    got = test_on_page("blue", os.path.join(SAMPLE, "sample-request.json"))
    assert all(abs(a - b) <= 1e-6 * b for a, b in zip(got, MODEL_1)), got
    assert text_now("test-time").endswith(" ms")
    shot("test")

    step("scale blue to 2 from its card")
    tab("details")
    click("edit-blue")
    fill("scale-input-blue", 2)
    click("scale-save-blue")
    text_is("instances-blue", "2 ready of 2")
    d = deployment("blue")
    assert d["instance_count"] == 2 and d["instances"]["ready"] == 2, d

    step("add green from its YAML file")
    click("add-deployment")
    visible("add-dialog")
    by_id("add-file").send_keys(os.path.join(SAMPLE, "green-deployment.yml"))
    wait.until(lambda d: by_id("add-name").get_attribute("value") == "green", "the picked file's name: was not read")
    fill("add-base", SAMPLE)
    click("add-submit")
    text_has("add-progress", "green: Succeeded")
    shot("add-deployment")
    click("add-cancel")
    assert deployment("green")["provisioning_state"] == "Succeeded"
    assert endpoint()["traffic"] == {"blue": 100, "green": 0}
    visible("card-green")

    step("test green pinned")
    got = test_on_page("green", os.path.join(SAMPLE, "sample-request.json"))
    assert got and got != MODEL_1, got
    tab("details")

    step("a refused traffic update shows the control plane's message and changes nothing")
    open_traffic(90, 20)
    visible("traffic-error")
    text_has("traffic-error", "100")
    shot("update-traffic-refused")
    refused_sum = text_now("traffic-error")
    fill("traffic-blue", 100)
    fill("traffic-green", 0)
    click("mirror-enable")
    Select(by_id("mirror-deployment")).select_by_value("blue")
    click("traffic-save")
    wait.until(lambda d: text_now("traffic-error") != refused_sum, "no new message for a mirror to a live deployment")
    assert "live" in text_now("traffic-error"), text_now("traffic-error")
    click("traffic-cancel")
    ep = endpoint()
    assert ep["traffic"] == {"blue": 100, "green": 0} and not any(ep["mirror_traffic"].values()), ep

    step("mirror 10% to green (the default percentage)")
    open_traffic(100, 0, ("green", None))
    text_is("ep-mirror-traffic", "green 10%")
    assert endpoint()["mirror_traffic"] == {"green": 10}
    with open(os.path.join(SAMPLE, "sample-request.json")) as f:
        request = f.read()

    def copies_scored():
        for _ in range(10):
            status, body = api("POST", "/v1/endpoint/invoke", request)
            assert status == 200, body
        mirror = deployment("green").get("mirror", {})
        return mirror.get("copied", 0) > 0 or mirror

    wait_api("green scored mirror copies", copies_scored)

    step("Monitoring shows charts, with the mirror comparison while the rule is on")
    tab("monitoring")
    visible("mirror-figure")
    visible("legend-blue")
    text_has("mirror-summary", "green · 10%")
    # The charts are fed by /v1/metrics: blue's series has a rate and a p50 by now.
    wait.until(lambda d: d.execute_script(
        "return (state.series.blue || []).some(p => p.rate > 0 && p.p50 > 0)"), "no rate or latency reading for blue")
    shot("monitoring")

    step("Logs shows green's lines, mirror copies marked")
    tab("logs")
    Select(by_id("logs-deployment")).select_by_value("green")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#logs-output .mirror-line"), "no mirror line in green's logs")
    shot("logs")

    step("mirror off")
    tab("details")
    open_traffic(100, 0, None)
    text_is("ep-mirror-traffic", "none")
    assert not any(endpoint()["mirror_traffic"].values()), endpoint()

    step("Rollout: a refused plan shows the control plane's message and starts nothing")
    tab("rollout")
    text_is("rollout-none", "No rollout has been started on this endpoint.")
    Select(by_id("rollout-to")).select_by_value("green")
    fill("rollout-steps", "100,50")
    fill("rollout-step-duration", "500ms")
    fill("rollout-min-requests", 3)
    fill("rollout-max-error-rate", 0.5)
    click("rollout-start")
    visible("rollout-error")
    text_has("rollout-error", "live percents must increase, got 50 after 100")
    shot("rollout-refused")
    assert api("GET", "/v1/endpoint/rollout")[0] == 404
    assert endpoint()["traffic"] == {"blue": 100, "green": 0}, endpoint()

    step("Rollout: start 50,100 to green from the page, pause and resume it, and see it succeed")
    fill("rollout-steps", "50,100")
    click("rollout-start")
    text_is("rollout-status", "running")
    wait.until(lambda d: not by_id("rollout-error").is_displayed(), "the old refusal stayed on screen")
    status, r = api("GET", "/v1/endpoint/rollout")
    assert status == 200 and r["to"] == "green" and r["plan"]["steps"] == "50,100", r
    assert r["plan"]["step_duration"] == "500ms" and r["plan"]["min_requests"] == 3, r
    text_is("rollout-target", "green")
    # With no traffic yet the step holds (it needs 3 answers from green), so pausing is safe.
    click("rollout-pause")
    text_is("rollout-status", "paused")
    assert api("GET", "/v1/endpoint/rollout")[1]["status"] == "paused"
    assert by_id("rollout-pause").get_attribute("disabled") is not None
    by_id("rollout-resume").send_keys("\n")  # keyboard: Enter on the focused button
    text_is("rollout-status", "running")

    def rollout_ends(how):
        """Sends traffic for the rollout's gates; True once it ended `how` (and never otherwise)."""
        def probe():
            for _ in range(10):
                status, body = api("POST", "/v1/endpoint/invoke", request)
                assert status == 200, body
            r = api("GET", "/v1/endpoint/rollout")[1]
            assert r["status"] in ("running", how), r
            return r["status"] == how or r["step"]
        return probe

    wait_api("the rollout to green succeeded", rollout_ends("succeeded"), limit=60)
    text_is("rollout-status", "succeeded")
    text_is("rollout-step", "100 (2 of 2)")
    text_has("rollout-passed", "50: ")
    text_has("rollout-events", "green")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#rollout-events li")) >= 3
    assert by_id("rollout-abort").get_attribute("disabled") is not None
    shot("rollout")
    r = api("GET", "/v1/endpoint/rollout")[1]
    assert [p["step"] for p in r["passed"]] == ["50", "100"] and r["rollback"] is None, r
    assert endpoint()["traffic"] == {"blue": 0, "green": 100}, endpoint()

    step("Rollout: back to blue with a p99 limit no deployment meets rolls itself back, the reason shown")
    Select(by_id("rollout-to")).select_by_value("blue")
    fill("rollout-max-p99-ms", 0.001)
    click("rollout-start")
    text_is("rollout-target", "blue")
    wait_api("the rollout to blue rolled back", rollout_ends("rolled_back"), limit=60)
    text_is("rollout-status", "rolled_back")
    visible("rollout-rollback")
    text_has("rollout-rollback", "gate p99_ms")
    text_has("rollout-rollback", "limit 0.001")
    shot("rollout-rolled-back")
    r = api("GET", "/v1/endpoint/rollout")[1]
    assert r["rollback"]["gate"] == "p99_ms" and r["rollback"]["step"] == "50", r
    assert endpoint()["traffic"] == {"blue": 0, "green": 100}, endpoint()
    tab("details")
    text_is("ep-traffic", "green 100%")

    step("90/10")
    open_traffic(90, 10)
    text_is("ep-traffic", "blue 90%, green 10%")
    assert endpoint()["traffic"] == {"blue": 90, "green": 10}
    shot("details-rollout")

    step("a refused delete (green has live traffic) says why and deletes nothing")
    click("delete-green")
    visible("confirm-dialog")
    click("confirm-yes")
    visible("confirm-error")
    assert "traffic" in text_now("confirm-error"), text_now("confirm-error")
    click("confirm-no")
    assert deployment("green")["name"] == "green"

    step("0/100")
    open_traffic(0, 100)
    text_is("ep-traffic", "green 100%")
    assert endpoint()["traffic"] == {"blue": 0, "green": 100}

    step("delete blue, with a confirmation")
    click("delete-blue")
    visible("confirm-dialog")
    text_has("confirm-text", "blue")
    click("confirm-yes")
    wait.until(lambda d: not d.find_elements(By.ID, "card-blue"), "blue's card stayed")
    assert [d["name"] for d in api("GET", "/v1/deployments")[1]] == ["green"]
    shot("details-after")

    step("Consume: the key hidden until asked, and snippets")
    tab("consume")
    assert text_now("consume-key") == "••••••••"
    click("show-key")
    key = api("GET", "/v1/endpoint/keys")[1]["primaryKey"]
    text_is("consume-key", key)
    assert key in text_now("snippet-curl") and endpoint()["scoring_uri"] in text_now("snippet-python")
    shot("consume")

    step("keyboard: arrow keys move between tabs")
    by_id("tab-consume").send_keys("\ue012")  # ArrowLeft
    visible("panel-monitoring")
    print("studio: all steps passed", flush=True)
except Exception:
    shot("failure")
    with open(os.path.join(SHOTS, "failure.html"), "w") as f:
        f.write(driver.page_source)
    raise
finally:
    driver.quit()
