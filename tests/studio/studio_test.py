"""Switchyard's studio page clicked through in headless Chromium, each step checked through the
admin API too. Run by tests/studio.rs:

    python studio_test.py  (env: STUDIO_URL, ADMIN_TOKEN, SAMPLE_DIR, SHOTS_DIR,
                            STUDIO_SCENARIO, MODELS_DIR)

STUDIO_SCENARIO picks what is clicked: `tutorial` (the default) the Azure tutorial's studio
steps on one endpoint; `endpoints` the Endpoints list of a server holding several (each
endpoint's own page, an action on one leaving the other alone, the browser's Back and
Forward); `seed` the seed's studio tab from its first step (Models → Register → From local
files for model-1 and model-2, Deploy → Real-time endpoint for blue on a new endpoint and green
on the existing one, then the page's own steps). STUDIO_URL is the admin plane (the page is its
`/`); SAMPLE_DIR the seed's managed/sample folder (model-1/ and model-2/ are two folders up);
MODELS_DIR the repository's models/ (for `endpoints`); screenshots go to SHOTS_DIR. Every
scenario ends with the contract check: every call the page made is a route of the admin API's
document, under /v1/endpoints (the page names its endpoint in every call) or the asset store's
routes (models, environments, uploads, code: the workspace's, CONTRACT §11).
"""

import json
import os
import re
import sys
import tempfile
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
SCENARIO = os.environ.get("STUDIO_SCENARIO", "tutorial")
MODELS = os.environ.get("MODELS_DIR", "")
MODEL_1 = [11055.977245525679, 4503.079536107787]
# The seed's endpoint.yml names it; every admin call of the tutorial names it (the page's own
# calls do too, checked at the end).
EP_NAME = "my-endpoint"
EP_PATH = "/v1/endpoints/" + EP_NAME
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
    return api("GET", EP_PATH)[1]


def deployment(name):
    return api("GET", EP_PATH + "/deployments/" + name)[1]


opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic", "--window-size=1366,900"):
    opts.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
# What the page sends and reads is recorded (tests/contract/record.js) and checked against the
# admin API's OpenAPI document at the end: a page that drifts from the server fails here.
CONTRACT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "contract")
sys.path.insert(0, CONTRACT)
import openapi_contract  # noqa: E402

with open(os.path.join(CONTRACT, "record.js")) as f:
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": f.read()})
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


def style_of(css_selector, prop):
    return driver.execute_script(
        "return getComputedStyle(document.querySelector(arguments[0]))[arguments[1]]", css_selector, prop)


def assert_wraps_words(css_selector):
    """Words are not split mid-word (word-break normal); long tokens still wrap (overflow-wrap)."""
    wb, ow = style_of(css_selector, "wordBreak"), style_of(css_selector, "overflowWrap")
    assert wb == "normal" and ow in ("anywhere", "break-word"), "{}: word-break {}, overflow-wrap {}".format(css_selector, wb, ow)


def no_card_overflows():
    wide = driver.execute_script(
        "return [...document.querySelectorAll('.card')].filter(c => c.scrollWidth > c.clientWidth).map(c => c.id)")
    assert not wide, "cards wider than their box (text not wrapped): {}".format(wide)


def admin_requests():
    """The admin API paths the page fetched since the last performance.clearResourceTimings()."""
    return driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).pathname).filter(p => p.startsWith('/v1/'))")


def failed_requests():
    return driver.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.responseStatus >= 400)"
        ".map(e => new URL(e.name).pathname + ' ' + e.responseStatus)")


def only_list_probes(what):
    """Over three more polls, the Endpoints list only reads the list (/v1/endpoints, never a
    404): no request of an endpoint's page or tab, and nothing that fails."""
    driver.execute_script("performance.setResourceTimingBufferSize(10000); performance.clearResourceTimings()")
    wait.until(lambda d: admin_requests().count("/v1/endpoints") >= 3, "the page stopped polling")
    others = [p for p in admin_requests() if p != "/v1/endpoints"]
    assert not others, "{}: the page still fired {}".format(what, others)
    assert not failed_requests(), "{}: requests that failed: {}".format(what, failed_requests())


def page_says(part):
    """The page's message line says `part` (read as text: a notice hides itself after 8 s)."""
    read = "return document.getElementById('message').textContent"
    try:
        wait.until(lambda d: part in d.execute_script(read))
    except TimeoutException:
        raise AssertionError("the page never said {!r} (it says {!r})".format(part, driver.execute_script(read)))


def location_hash():
    return driver.execute_script("return location.hash")


def at_hash(expected):
    try:
        wait.until(lambda d: location_hash() == expected)
    except TimeoutException:
        raise AssertionError("the address never read {!r} (it reads {!r})".format(expected, location_hash()))


def on_list():
    """The Endpoints list is shown (and no endpoint's page)."""
    at_hash("#/endpoints")
    visible("view-list")
    assert not by_id("view-endpoint").is_displayed(), "an endpoint's page is shown beside the list"


def list_rows():
    return [r.get_attribute("id") for r in driver.find_elements(By.CSS_SELECTOR, "#endpoint-rows tr")]


def console_errors():
    """The browser console's errors since the last read, less the page's first call's 401 (the
    list's, how it learns that this server wants the admin token)."""
    logs = driver.get_log("browser")
    return [e["message"] for e in logs if e["level"] == "SEVERE"
            and not (e["message"].split(" ")[0].endswith("/v1/endpoints") and "status of 401" in e["message"])]


def tabs_off():
    return [t for t in ("test", "logs", "monitoring", "consume", "rollout")
            if by_id("tab-" + t).get_attribute("disabled") is not None]


def set_checked(i, on):
    if by_id(i).is_selected() != on:
        click(i)


def mirror_copies_scored(request, target="green"):
    """Sends ten requests through the endpoint; True once `target` scored mirror copies (else
    its mirror share, for the failure message)."""
    for _ in range(10):
        status, body = api("POST", EP_PATH + "/invoke", request)
        assert status == 200, body
    mirror = deployment(target).get("mirror", {})
    return mirror.get("copied", 0) > 0 or mirror


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


def tutorial():
    """The Azure tutorial's studio steps on the seed's one endpoint."""
    step("no endpoint yet: the page opens on the Endpoints list, which says so, and fires nothing that can 404")
    driver.get(URL + "/")
    visible("token-dialog")
    assert "--" not in text_now("token-dialog"), text_now("token-dialog")
    fill("token-input", TOKEN)
    click("token-save")
    visible("no-endpoint")
    on_list()
    assert not by_id("endpoints-table").is_displayed() and not list_rows(), list_rows()
    visible("create-endpoint")
    only_list_probes("without an endpoint")
    shot("no-endpoint")
    errors = console_errors()
    assert not errors, "console errors on load: {}".format(errors)
    favicon = driver.execute_script("return document.querySelector('link[rel=icon]').href")
    assert favicon.endswith("/favicon.ico"), favicon

    step("the CLI's first steps (endpoint, blue with all traffic) through the admin API")
    with open(os.path.join(SAMPLE, "endpoint.yml")) as f:
        assert api("PUT", EP_PATH, f.read(), "application/yaml")[0] == 201
    with open(os.path.join(SAMPLE, "blue-deployment.yml")) as f:
        status, body = api("PUT", EP_PATH + "/deployments/blue", f.read(), "application/yaml",
                           "?all_traffic=true&base_dir=" + urllib.request.quote(SAMPLE))
        assert status == 201, body
    wait_api("blue serves all traffic", lambda: endpoint()["traffic"] == {"blue": 100} or endpoint()["traffic"])

    step("the Endpoints list notices the endpoint: its state, traffic, deployments and scoring URI")
    visible("endpoint-row-" + EP_NAME)
    assert not by_id("no-endpoint").is_displayed()
    text_is("list-traffic-" + EP_NAME, "blue 100%")
    text_is("list-deployments-" + EP_NAME, "1: blue")
    text_is("list-state-" + EP_NAME, "Succeeded")
    text_is("list-uri-" + EP_NAME, endpoint()["scoring_uri"])
    assert endpoint()["scoring_uri"].endswith("/endpoints/{}/score".format(EP_NAME)), endpoint()["scoring_uri"]
    shot("endpoints")

    step("see blue (Details): the endpoint's row opens its page with its tabs")
    click("open-" + EP_NAME)
    at_hash("#/endpoints/" + EP_NAME)
    visible("endpoint-details")
    assert not by_id("view-list").is_displayed()
    text_is("endpoint-name", "· " + EP_NAME)
    wait.until(lambda d: not tabs_off(), "tabs stayed off with an endpoint")
    text_is("ep-auth-mode", "key")
    text_is("ep-traffic", "blue 100%")
    text_is("state-blue", "Succeeded")
    assert text_now("ep-scoring-uri") == endpoint()["scoring_uri"]
    text_is("instances-blue", "1 ready of 1")
    assert_wraps_words("#state-blue")
    assert_wraps_words("#ep-scoring-uri")
    no_card_overflows()
    errors = console_errors()
    assert not errors, "console errors: {}".format(errors)
    shot("details")

    step("test blue (Test tab, first deployment preselected)")
    tab("test")
    assert Select(by_id("test-deployment")).first_selected_option.text == "blue"
    got = test_on_page("blue", os.path.join(SAMPLE, "sample-request.json"))
    assert all(abs(a - b) <= 1e-6 * b for a, b in zip(got, MODEL_1)), got
    assert text_now("test-time").endswith(" ms")
    assert_wraps_words("#test-output")
    shot("test")

    step("scale blue to 2 from its card")
    tab("details")
    click("edit-blue")
    fill("scale-input-blue", 2)
    click("scale-save-blue")
    text_is("instances-blue", "2 ready of 2")
    d = deployment("blue")
    assert d["instance_count"] == 2 and d["instances"]["ready"] == 2, d

    step("a Failed deployment is never the mirror target Update traffic preselects")
    broken = tempfile.mkdtemp(prefix="studio-broken-")
    with open(os.path.join(broken, "model.onnx"), "w") as f:
        f.write("not an onnx model")
    status, body = api("PUT", EP_PATH + "/deployments/broken", {"model": {"path": broken}})
    assert status == 201, body
    wait_api("broken failed to load", lambda: deployment("broken")["provisioning_state"] == "Failed" or deployment("broken"))
    text_is("state-broken", "Failed")
    visible("error-broken")
    assert_wraps_words("#error-broken")
    no_card_overflows()
    click("update-traffic")
    visible("traffic-dialog")
    click("mirror-enable")
    mirror_to = Select(by_id("mirror-deployment"))
    assert mirror_to.first_selected_option.get_attribute("value") != "broken", "the Failed deployment was preselected"
    option = by_id("mirror-deployment").find_element(By.CSS_SELECTOR, "option[value=broken]")
    assert not option.is_enabled() and "Failed" in option.text, option.text
    shot("update-traffic-failed")
    click("traffic-save")
    text_has("traffic-error", "Choose the deployment that gets the mirrored copies")
    click("traffic-cancel")
    assert not any(endpoint()["mirror_traffic"].values()), endpoint()
    click("delete-broken")
    visible("confirm-dialog")
    click("confirm-yes")
    wait.until(lambda d: not d.find_elements(By.ID, "card-broken"), "broken's card stayed")

    step("add green from its YAML file: without the folder, the error points at the folder field")
    click("add-deployment")
    visible("add-dialog")
    fill("add-base", "")
    by_id("add-file").send_keys(os.path.join(SAMPLE, "green-deployment.yml"))
    wait.until(lambda d: by_id("add-name").get_attribute("value") == "green", "the picked file's name: was not read")
    click("add-submit")
    visible("add-error")
    for part in ("Folder of the YAML file", "the folder that holds green-deployment.yml", "model.path ../../model-2/model/", "code_configuration.code ../../model-2/onlinescoring/",
                 "environment.conda_file ../../model-2/environment/conda.yaml"):
        text_has("add-error", part)
    assert driver.execute_script("return document.activeElement.id") == "add-base"
    assert by_id("add-base").get_attribute("aria-invalid") == "true"
    shot("add-deployment-no-folder")
    assert api("GET", EP_PATH + "/deployments/green")[0] == 404, "a refused add created green"
    fill("add-base", "/no/such/switchyard/folder")
    click("add-submit")
    text_has("add-error", "check that it is the folder the YAML file is in")
    assert api("GET", EP_PATH + "/deployments/green")[0] == 404, "a refused add created green"
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

    step("Update traffic keeps a running total; a refused update shows the control plane's message and changes nothing")
    click("update-traffic")
    visible("traffic-dialog")
    text_is("traffic-total", "Total: 100%")
    fill("traffic-blue", 90)
    fill("traffic-green", 20)
    text_is("traffic-total", "Total: 110% (must be 0 or 100)")
    assert "bad" in by_id("traffic-total").get_attribute("class")
    click("traffic-cancel")
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
    text_is("traffic-total", "Total: 100%")
    wait.until(lambda d: text_now("traffic-error") != refused_sum, "no new message for a mirror to a live deployment")
    assert "live" in text_now("traffic-error"), text_now("traffic-error")
    assert_wraps_words("#traffic-error")
    click("traffic-cancel")
    ep = endpoint()
    assert ep["traffic"] == {"blue": 100, "green": 0} and not any(ep["mirror_traffic"].values()), ep

    step("mirror 10% to green (the default percentage)")
    open_traffic(100, 0, ("green", None))
    text_is("ep-mirror-traffic", "green 10%")
    assert endpoint()["mirror_traffic"] == {"green": 10}
    with open(os.path.join(SAMPLE, "sample-request.json")) as f:
        request = f.read()
    wait_api("green scored mirror copies", lambda: mirror_copies_scored(request))

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

    step("Data: green's data_collector (request and response logging) turned on; a request to green shows in the Data tab, newest first, with its collection and request id")
    status, body = api("PATCH", EP_PATH + "/deployments/green", {"data_collector": {"collections": {
        "request": {"enabled": "True"}, "response": {"enabled": "True"}}}})
    assert status == 200, body
    wait_api("green collects", lambda: deployment("green")["provisioning_state"] == "Succeeded" and
             deployment("green").get("data_collector_status") is not None or deployment("green"))
    tab("details")
    got = test_on_page("green", os.path.join(SAMPLE, "sample-request.json"))
    tab("data")
    Select(by_id("data-deployment")).select_by_value("green")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#data-rows tr")) >= 2, "green's two records never showed")
    rows = driver.find_elements(By.CSS_SELECTOR, "#data-rows tr")
    collections = sorted(r.find_elements(By.TAG_NAME, "td")[1].text for r in rows[:2])
    assert collections == ["request", "response"], [r.text for r in rows]
    text_has("data-status", "request, response")
    text_has("data-status", "2 written")
    tab("details")
    text_has("data-of-green", "request, response at sampling rate 1; 2 written, 0 dropped, 0 refused by the disk")
    tab("data")
    Select(by_id("data-collection")).select_by_value("response")
    wait.until(lambda d: all(r.find_elements(By.TAG_NAME, "td")[1].text == "response"
                             for r in d.find_elements(By.CSS_SELECTOR, "#data-rows tr")), "the collection filter")
    assert json.dumps(got, separators=(",", ":"))[:40] in driver.find_element(By.ID, "data-rows").text.replace(" ", ""), got
    shot("data")
    tab("details")

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
    assert api("GET", EP_PATH + "/rollout")[0] == 404
    assert endpoint()["traffic"] == {"blue": 100, "green": 0}, endpoint()

    step("Rollout: start 50,100 to green from the page, pause and resume it, and see it succeed")
    fill("rollout-steps", "50,100")
    click("rollout-start")
    text_is("rollout-status", "running")
    wait.until(lambda d: not by_id("rollout-error").is_displayed(), "the old refusal stayed on screen")
    status, r = api("GET", EP_PATH + "/rollout")
    assert status == 200 and r["to"] == "green" and r["plan"]["steps"] == "50,100", r
    assert r["plan"]["step_duration"] == "500ms" and r["plan"]["min_requests"] == 3, r
    text_is("rollout-target", "green")
    # With no traffic yet the step holds (it needs 3 answers from green), so pausing is safe.
    click("rollout-pause")
    text_is("rollout-status", "paused")
    assert api("GET", EP_PATH + "/rollout")[1]["status"] == "paused"
    assert by_id("rollout-pause").get_attribute("disabled") is not None
    by_id("rollout-resume").send_keys("\n")  # keyboard: Enter on the focused button
    text_is("rollout-status", "running")

    def rollout_ends(how):
        """Sends traffic for the rollout's gates; True once it ended `how` (and never otherwise)."""
        def probe():
            for _ in range(10):
                status, body = api("POST", EP_PATH + "/invoke", request)
                assert status == 200, body
            r = api("GET", EP_PATH + "/rollout")[1]
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
    r = api("GET", EP_PATH + "/rollout")[1]
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
    r = api("GET", EP_PATH + "/rollout")[1]
    assert r["rollback"]["gate"] == "p99_ms" and r["rollback"]["step"] == "50", r
    assert endpoint()["traffic"] == {"blue": 0, "green": 100}, endpoint()
    text_is("rollout-no-evidence", "No window judged on evidence (the plan has no confidence, or no step ended yet).")

    step("Rollout: back to blue judged on evidence, with too little traffic to decide: inconclusive, then rolled back, each judged window in the Evidence table")
    by_id("rollout-max-p99-ms").clear()
    fill("rollout-confidence", 0.95)
    fill("rollout-max-extensions", 1)
    # Blue (score.py) answers in about twice green's time: a margin of 10 lets it through,
    # so the error gate's lack of evidence is what decides.
    fill("rollout-max-latency-increase", 10)
    Select(by_id("rollout-on-inconclusive")).select_by_value("rollback")
    # Strict first: at this endpoint's trickle the plan cannot gather its evidence, so the
    # server refuses it upfront and the page says why; nothing starts.
    click("rollout-strict")
    click("rollout-start")
    visible("rollout-error")
    text_has("rollout-error", "strict: this plan cannot gather the evidence it needs")
    assert api("GET", EP_PATH + "/rollout")[1]["to"] == "blue" and api("GET", EP_PATH + "/rollout")[1]["status"] == "rolled_back"
    click("rollout-strict")
    click("rollout-start")
    text_is("rollout-target", "blue")
    wait_api("the evidence rollout to blue rolled back", rollout_ends("rolled_back"), limit=60)
    text_is("rollout-status", "rolled_back")
    text_has("rollout-rollback", "stayed inconclusive after 1 extension(s)")
    visible("rollout-needs")
    needs = driver.find_elements(By.CSS_SELECTOR, "#rollout-needs-rows tr")
    assert len(needs) == len(api("GET", EP_PATH + "/rollout")[1]["needs"]["steps"]), [n.text for n in needs]
    visible("rollout-evidence")
    rows = driver.find_elements(By.CSS_SELECTOR, "#rollout-evidence-rows tr")
    assert len(rows) == 4, [r.text for r in rows]
    assert [r.text.split()[2] for r in rows] == ["error_increase", "latency_increase"] * 2, [r.text for r in rows]
    assert all("inconclusive" in r.text for r in rows[0::2]), [r.text for r in rows]
    assert all(r.text.split()[3] in ("pass", "inconclusive") and "median" in r.text for r in rows[1::2]), [r.text for r in rows]
    assert "errors of" in rows[0].text, rows[0].text
    assert "rolled_back_inconclusive" in rows[-1].text, rows[-1].text
    shot("rollout-evidence")
    r = api("GET", EP_PATH + "/rollout")[1]
    assert r["plan"]["confidence"] == 0.95 and r["plan"]["max_extensions"] == 1, r["plan"]
    assert r["plan"]["max_latency_increase"] == 10, r["plan"]
    assert [w["decision"] for w in r["judged"]] == ["extended", "rolled_back_inconclusive"], r["judged"]
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
    # The server's hint names the CLI command; the page names its own button.
    assert "online-endpoint" not in text_now("confirm-error") and "--" not in text_now("confirm-error"), text_now("confirm-error")
    assert "Update traffic" in text_now("confirm-error"), text_now("confirm-error")
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
    assert [d["name"] for d in api("GET", EP_PATH + "/deployments")[1]] == ["green"]
    shot("details-after")

    step("Consume: the key hidden until asked, and snippets")
    tab("consume")
    assert text_now("consume-key") == "••••••••"
    click("show-key")
    key = api("GET", EP_PATH + "/keys")[1]["primaryKey"]
    text_is("consume-key", key)
    assert key in text_now("snippet-curl") and endpoint()["scoring_uri"] in text_now("snippet-python")
    shot("consume")

    step("keyboard: arrow keys move between tabs")
    by_id("tab-consume").send_keys("\ue012")  # ArrowLeft
    visible("panel-monitoring")

    step("the server's CLI hints read in the page's terms")
    cli_hints = [
        "deployment \"green\" has 10% of live traffic: move its traffic to other deployments first (`online-endpoint update --traffic`)",
        "this server has no endpoint yet: create one with `switchyard online-endpoint create -f endpoint.yml`",
        "this server has no endpoint yet: create it before its deployments (`online-endpoint create`)",
        "a rollout to \"green\" is running: wait for it, or stop it with `online-endpoint rollout abort`",
        "a rollout to \"green\" is running and may move traffic to deployment \"blue\": abort it first (`online-endpoint rollout abort`)",
        "no deployment has live traffic to move from: give one traffic first (`online-endpoint update --traffic`)",
        "a rollout needs `to`: the deployment traffic moves to (--to green)",
        "a rollout needs `step_duration`, e.g. \"60s\" (--step-duration)",
        "rollout --to names deployment \"x\", which does not exist (deployments: blue)",
        "deployment \"x\" failed to load; fix it with `online-deployment update -f` (replace) or delete it",
        "deployment \"x\" is \"Updating\": wait until the current operation finishes (`online-deployment show`)",
        "no deployment of this endpoint has traffic: set traffic (`online-endpoint update --traffic`) or pin a deployment with the azureml-model-deployment header",
        "`rollout` is read from endpoint.yml in --config-dir mode only: through the API, start one with POST /v1/endpoint/rollout (`online-endpoint rollout`)",
        "missing or invalid credentials: send `Authorization: Bearer <key or token>` (see `online-endpoint get-credentials`)",
        "this server hosts no endpoint: create one first (PUT /v1/endpoints/{name}, or `online-endpoint create`)",
        "this server hosts 2 endpoints (alpha, beta): name one, under /v1/endpoints/{name}/... (the CLI's --name/--endpoint-name)",
    ]
    for hint in cli_hints:
        said = driver.execute_script("return studioTerms(arguments[0])", hint)
        for cli in ("online-endpoint", "online-deployment", "--to", "--traffic", "--step-duration", "-f`", "--name", "the CLI"):
            assert cli not in said, "{!r} still says {!r}: {!r}".format(hint, cli, said)
    said = driver.execute_script("return studioTerms(arguments[0])", cli_hints[0])
    assert said.endswith("(Update traffic on the Details tab)"), said
    said = driver.execute_script("return studioTerms(arguments[0])", cli_hints[-2])
    assert said == "this server hosts no endpoint: create one with Create endpoint on the Endpoints list", said
    plain = "traffic must add up to 100, got 110"
    assert driver.execute_script("return studioTerms(arguments[0])", plain) == plain

    step("the endpoint deleted elsewhere: the page falls back to the Endpoints list, says why, clears what it showed, and stops asking")
    test_on_page("green", os.path.join(SAMPLE, "sample-request.json"))
    tab("logs")
    Select(by_id("logs-deployment")).select_by_value("green")
    wait.until(lambda d: d.find_element(By.ID, "logs-output").text.strip(), "no log lines for green")
    status, body = api("DELETE", EP_PATH)
    assert status in (200, 202, 204), body
    visible("no-endpoint")
    on_list()
    page_says("Endpoint {} does not exist".format(EP_NAME))
    for i in ("test-output", "test-status", "logs-output", "snippet-curl", "consume-uri"):
        assert driver.execute_script("return document.getElementById(arguments[0]).textContent", i) == "", "#{} kept its text".format(i)
    assert driver.execute_script("return document.getElementById('consume-key').textContent") == "••••••••"
    assert not driver.find_elements(By.CSS_SELECTOR, "#deployment-cards .card")
    only_list_probes("after the endpoint was deleted")
    shot("no-endpoint-after")
    driver.get_log("browser")  # the one 404 that told the page the endpoint had gone

    step("create an endpoint from the list (its page opens), delete it from its page (back on the list): no error in the console")
    click("create-endpoint")
    at_hash("#/endpoints/" + EP_NAME)
    visible("endpoint-details")
    wait.until(lambda d: not tabs_off(), "tabs stayed off with an endpoint")
    assert endpoint()["name"] == EP_NAME, endpoint()
    delete_endpoint_from_its_page()
    only_list_probes("after Delete endpoint")
    errors = console_errors()
    assert not errors, "console errors: {}".format(errors)



def delete_endpoint_from_its_page():
    """Delete endpoint on the endpoint's page, confirmed: the list shows no endpoint."""
    click("delete-endpoint")
    visible("confirm-dialog")
    text_has("confirm-text", EP_NAME)
    click("confirm-yes")
    visible("no-endpoint")
    on_list()
    assert api("GET", "/v1/endpoints")[1] == []


ASSET_ROUTES = ("/v1/models", "/v1/environments", "/v1/uploads", "/v1/codes")


def contract_check():
    step("every call the page made, and every answer field it read, is in the admin API's document, and names its endpoint")
    records = driver.execute_script("return window.__contractLog()")
    problems = openapi_contract.check(openapi_contract.load(URL), records)
    assert not problems, "the page drifted from the admin API's document:\n  " + "\n  ".join(problems)
    # The one-endpoint routes (/v1/endpoint, /v1/deployments) answer 409 on a server holding
    # several, and /v1/metrics mixes every endpoint's deployments: the page uses none of them.
    # The asset store's routes belong to no endpoint (the workspace's, CONTRACT §11).
    def named(path):
        bare = path.split("?")[0]
        return bare == "/v1/endpoints" or bare.startswith("/v1/endpoints/") or any(
            bare == a or bare.startswith(a + "/") for a in ASSET_ROUTES)
    unnamed = sorted({r["method"] + " " + r["path"] for r in records if not named(r["path"])})
    assert not unnamed, "calls that name no endpoint: {}".format(unnamed)
    reads = sum(len(r["reads"]) for r in records)
    typed = sum(len(r["types"]) for r in records)
    assert len(records) > 10 and reads > 50 and typed > 50, "too little recorded to prove anything: {} calls, {} reads, {} typed".format(
        len(records), reads, typed)
    print("contract: {} calls and {} field reads ({} with their JSON types) match the admin API's document".format(
        len(records), reads, typed), flush=True)
    print("studio: all steps passed", flush=True)


def endpoints_list():
    """A server holding two endpoints: the list, each one's own page, an action on one leaving
    the other as it was, the browser's Back and Forward, a stale link, Create and Delete."""
    A, B = "alpha", "beta"

    def ep(name):
        return api("GET", "/v1/endpoints/" + name)[1]

    def deployments_of(name):
        return [d["name"] for d in api("GET", "/v1/endpoints/{}/deployments".format(name))[1]]

    def live_requests(name, deployment):
        rows = api("GET", "/v1/endpoints/{}/metrics".format(name))[1]["deployments"]
        assert all(r["endpoint"] == name for r in rows), rows
        return [r["live"]["requests"] for r in rows if r["name"] == deployment][0]

    def options(select_id):
        return [o.get_attribute("value") for o in Select(by_id(select_id)).options]

    with open(os.path.join(SAMPLE, "sample-request.json")) as f:
        request = f.read()

    step("two endpoints through the admin API: alpha (blue: model-1, all traffic; green: model-2) and beta (its own blue: model-2)")
    for name in (A, B):
        status, body = api("PUT", "/v1/endpoints/" + name, {"auth_mode": "key"})
        assert status == 201, body
    for endpoint, name, model, everything in ((A, "blue", "model-1", True), (A, "green", "model-2", False), (B, "blue", "model-2", True)):
        status, body = api("PUT", "/v1/endpoints/{}/deployments/{}".format(endpoint, name), {"model": {"path": os.path.join(MODELS, model)}},
                           query="?all_traffic=true" if everything else "")
        assert status == 201, body
    for endpoint, name in ((A, "blue"), (A, "green"), (B, "blue")):
        path = "/v1/endpoints/{}/deployments/{}".format(endpoint, name)
        wait_api("{}'s {} is Succeeded".format(endpoint, name),
                 lambda: api("GET", path, query="?wait=2")[1]["provisioning_state"] == "Succeeded" or api("GET", path)[1])
    wait_api("blue has all of each endpoint's traffic",
             lambda: (ep(A)["traffic"], ep(B)["traffic"]) == ({"blue": 100, "green": 0}, {"blue": 100}) or (ep(A), ep(B)))
    uri = {name: ep(name)["scoring_uri"] for name in (A, B)}
    for name in (A, B):
        assert uri[name].endswith("/endpoints/{}/score".format(name)), uri

    step("the page opens on the Endpoints list: both endpoints, each with its state, traffic, deployments and scoring URI")
    driver.get(URL + "/")
    visible("token-dialog")
    fill("token-input", TOKEN)
    click("token-save")
    visible("endpoint-row-" + B)
    on_list()
    assert list_rows() == ["endpoint-row-" + A, "endpoint-row-" + B], list_rows()
    assert not by_id("no-endpoint").is_displayed()
    text_is("list-uri-" + A, uri[A])
    text_is("list-uri-" + B, uri[B])
    text_is("list-deployments-" + A, "2: blue, green")
    text_is("list-deployments-" + B, "1: blue")
    text_is("list-traffic-" + A, "blue 100%")
    text_is("list-traffic-" + B, "blue 100%")
    text_is("list-state-" + A, "Succeeded")
    text_is("list-state-" + B, "Succeeded")
    assert driver.title.startswith("Endpoints"), driver.title
    only_list_probes("on the Endpoints list")
    errors = console_errors()
    assert not errors, "console errors on load: {}".format(errors)
    shot("endpoints-list")

    step("a rollout on alpha shows in alpha's State and Traffic columns only")
    status, body = api("POST", "/v1/endpoints/{}/rollout".format(A), {"to": "green", "steps": "50,100", "step_duration": "600s", "min_requests": 1000})
    assert status == 201, body
    text_is("list-state-" + A, "Succeeded\nrollout to green: running (step 50, 1 of 2)")
    text_is("list-traffic-" + A, "blue 50%, green 50%")
    text_is("list-state-" + B, "Succeeded")
    text_is("list-traffic-" + B, "blue 100%")
    shot("endpoints-list-rollout")
    status, body = api("POST", "/v1/endpoints/{}/rollout/abort".format(A))
    assert status == 200, body
    text_is("list-traffic-" + A, "blue 100%")
    text_has("list-state-" + A, "rollout to green: aborted")
    assert ep(B)["traffic"] == {"blue": 100} and ep(B).get("rollout_status") is None, ep(B)

    step("a click on alpha's row opens alpha's page: its own scoring URI, deployments and traffic")
    click("list-uri-" + A)  # the whole row opens it, not only the name
    at_hash("#/endpoints/" + A)
    visible("endpoint-details")
    assert not by_id("view-list").is_displayed()
    text_is("endpoint-name", "· " + A)
    assert driver.title.startswith(A), driver.title
    text_is("ep-scoring-uri", uri[A])
    text_is("ep-traffic", "blue 100%")
    visible("card-blue")
    visible("card-green")
    text_is("traffic-of-green", "0%")
    wait.until(lambda d: not tabs_off(), "tabs stayed off on alpha's page")
    shot("endpoint-alpha")

    step("Update traffic on alpha's page moves alpha's traffic, and beta's stays")
    open_traffic(0, 100)
    text_is("ep-traffic", "green 100%")
    assert ep(A)["traffic"] == {"blue": 0, "green": 100}, ep(A)
    assert ep(B)["traffic"] == {"blue": 100}, ep(B)

    step("Test on alpha's page: alpha's deployments to pick, and alpha's blue (model-1) answers")
    tab("test")
    assert options("test-deployment") == ["blue", "green"], options("test-deployment")
    got = test_on_page("blue", os.path.join(SAMPLE, "sample-request.json"))
    assert all(abs(a - b) <= 1e-6 * b for a, b in zip(got, MODEL_1)), got
    tab("details")

    step("the browser's Back: the list again, with both endpoints and alpha's new traffic")
    driver.back()
    on_list()
    assert not by_id("message").is_displayed(), "alpha's message stayed on the list: " + text_now("message")
    assert list_rows() == ["endpoint-row-" + A, "endpoint-row-" + B], list_rows()
    text_is("list-traffic-" + A, "green 100%")
    text_is("list-traffic-" + B, "blue 100%")
    assert by_id("endpoint-details").get_attribute("hidden") is not None
    assert not driver.find_elements(By.CSS_SELECTOR, "#deployment-cards .card"), "alpha's cards stayed"

    step("the browser's Forward: alpha's page again; its back link: the list")
    driver.forward()
    at_hash("#/endpoints/" + A)
    text_is("ep-traffic", "green 100%")
    visible("card-green")
    click("back-to-list")
    on_list()
    visible("endpoint-row-" + B)

    step("beta's page: only beta's blue, beta's URI, key and answers (model-2), nothing of alpha")
    blue_of_alpha = live_requests(A, "blue")
    click("open-" + B)
    at_hash("#/endpoints/" + B)
    visible("endpoint-details")
    text_is("endpoint-name", "· " + B)
    text_is("ep-scoring-uri", uri[B])
    text_is("ep-traffic", "blue 100%")
    visible("card-blue")
    assert not driver.find_elements(By.ID, "card-green"), "alpha's green shows on beta's page"
    wait.until(lambda d: not tabs_off(), "tabs stayed off on beta's page")
    tab("test")
    assert options("test-deployment") == ["blue"], options("test-deployment")
    got = test_on_page("blue", os.path.join(SAMPLE, "sample-request.json"))
    status, alpha_green = api("POST", "/v1/endpoints/{}/invoke".format(A), request, query="?deployment_name=green")
    assert status == 200 and got == alpha_green and got != MODEL_1, (got, alpha_green)
    wait_api("beta's blue counted the page's request", lambda: live_requests(B, "blue") >= 1 or live_requests(B, "blue"))
    assert live_requests(A, "blue") == blue_of_alpha, "beta's Test reached alpha's blue"
    tab("logs")
    assert options("logs-deployment") == ["blue"], options("logs-deployment")
    tab("monitoring")
    visible("legend-blue")
    assert not driver.find_elements(By.ID, "legend-green"), "alpha's green charted on beta's page"
    tab("consume")
    text_is("consume-uri", uri[B])
    click("show-key")
    key_b = api("GET", "/v1/endpoints/{}/keys".format(B))[1]["primaryKey"]
    key_a = api("GET", "/v1/endpoints/{}/keys".format(A))[1]["primaryKey"]
    assert key_a != key_b
    text_is("consume-key", key_b)
    assert uri[B] in text_now("snippet-curl") and key_b in text_now("snippet-curl")
    shot("endpoint-beta")
    tab("rollout")
    text_is("rollout-none", "No rollout has been started on this endpoint.")  # alpha's aborted one is alpha's
    tab("details")
    driver.get_log("browser")  # the 404 of beta's rollout, which says there is none

    step("beta's mlp: model-3 with batching; its card gives the settings and the last minute's rows per run")
    status, body = api("PUT", "/v1/endpoints/{}/deployments/mlp".format(B), {
        "model": {"path": os.path.join(MODELS, "model-3")},
        "batching": {"max_batch_size": 16, "max_delay_us": 500},
        "request_settings": {"max_concurrent_requests_per_instance": 8}})
    assert status == 201, body
    wait_api("beta's mlp is Succeeded",
             lambda: api("GET", "/v1/endpoints/{}/deployments/mlp".format(B), query="?wait=2")[1]["provisioning_state"] == "Succeeded")
    with open(os.path.join(MODELS, "..", "sample-requests", "model-3.json")) as f:
        status, answer = api("POST", "/v1/endpoints/{}/invoke".format(B), f.read(), query="?deployment_name=mlp")
    assert status == 200 and len(answer[0]) == 16, answer
    visible("card-mlp")
    text_has("batching-of-mlp", "up to 16 rows per run, waiting at most 500 µs; 1 run in the last minute, 1.0 rows per run")
    shot("batching-card")

    step("Delete endpoint on beta's page: back on the list, alpha alone and as it was")
    click("delete-endpoint")
    visible("confirm-dialog")
    text_has("confirm-text", B)
    click("confirm-yes")
    on_list()
    wait.until(lambda d: list_rows() == ["endpoint-row-" + A], "the list never dropped beta: {}".format(list_rows()))
    assert api("GET", "/v1/endpoints/" + B)[0] == 404
    assert ep(A)["traffic"] == {"blue": 0, "green": 100}, ep(A)
    assert deployments_of(A) == ["blue", "green"], deployments_of(A)
    text_is("list-traffic-" + A, "green 100%")
    errors = console_errors()
    assert not errors, "console errors: {}".format(errors)

    step("a link to an endpoint that does not exist lands on the list, which says so")
    driver.execute_script("location.hash = '#/endpoints/nosuch'")
    on_list()
    page_says("Endpoint nosuch does not exist")
    visible("endpoint-row-" + A)
    driver.get_log("browser")  # the one 404 that said so

    step("Create endpoint on the list: a taken name is refused before sending; a new one is created beside alpha and its page opens")
    fill("endpoint-yaml", "name: " + A + "\nauth_mode: aml_token")
    click("create-endpoint")
    visible("create-error")
    text_has("create-error", "Endpoint {} exists already".format(A))
    assert ep(A)["auth_mode"] == "key", ep(A)
    fill("endpoint-yaml", "name: gamma\nauth_mode: aml_token")
    click("create-endpoint")
    at_hash("#/endpoints/gamma")
    page_says("Endpoint gamma created.")
    visible("endpoint-details")
    text_is("ep-auth-mode", "aml_token")
    assert [e["name"] for e in api("GET", "/v1/endpoints")[1]] == [A, "gamma"]
    assert ep(A)["traffic"] == {"blue": 0, "green": 100}, ep(A)
    driver.back()
    on_list()
    wait.until(lambda d: list_rows() == ["endpoint-row-" + A, "endpoint-row-gamma"], "the list: {}".format(list_rows()))
    text_is("list-deployments-gamma", "none yet")
    shot("endpoints-list-after")
    errors = console_errors()
    assert not errors, "console errors: {}".format(errors)


# The curated environment the seed's deployments name (the wizard offers it by this asset ID).
SKLEARN = "azureml://registries/azureml/environments/sklearn-1.5/labels/latest"
DATA_COLLECTOR = {"collections": {"model_inputs": {"enabled": "True"}, "model_outputs": {"enabled": "True"}}}


def seed():
    """The seed's studio tab, followed from its first step: register model-1 and model-2 from
    their folders (Models → Register → From local files), deploy model-1 as blue on a new
    endpoint through Deploy → Real-time endpoint (both toggles on, score.py uploaded, the
    curated sklearn-1.5 environment, one instance, 100%), add model-2 as green to the existing
    endpoint at 0% (its onlinescoring folder uploaded), then the page's own steps (test,
    traffic, mirror, logs, delete). A screenshot per wizard page."""
    root = os.path.normpath(os.path.join(SAMPLE, "..", ".."))  # the seed's online/ folder

    def sample(*parts):
        return os.path.join(root, *parts)

    request_file = os.path.join(SAMPLE, "sample-request.json")
    with open(request_file) as f:
        request = f.read()

    def wizard_ready():
        wait.until(lambda d: by_id("wizard-next").is_enabled(), "the wizard never read its model and choices")

    def next_page(expected):
        click("wizard-next")
        visible("wiz-page-" + expected)

    step("the page opens on the Endpoints list, with Models and Environments beside Endpoints")
    driver.get(URL + "/")
    visible("token-dialog")
    fill("token-input", TOKEN)
    click("token-save")
    visible("no-endpoint")
    on_list()
    assert by_id("nav-endpoints").get_attribute("aria-current") == "page"
    visible("nav-models")
    visible("nav-environments")

    step("Environments: the curated sklearn set the server maps, no custom one yet")
    click("nav-environments")
    at_hash("#/environments")
    visible("view-environments")
    assert not by_id("view-list").is_displayed()
    visible("curated-row-sklearn-1.5")
    text_has("curated-row-sklearn-1.5", SKLEARN)
    for v in ("1.0", "1.1"):
        visible("curated-row-sklearn-" + v)
    visible("no-environments")
    assert by_id("nav-environments").get_attribute("aria-current") == "page"

    step("Environments → Create environment: my-env from model-1's conda file (a custom one)")
    conda = sample("model-1", "environment", "conda.yaml")
    click("env-create")
    text_has("env-error", "Give the environment a name")
    fill("env-name", "my-env")
    by_id("env-conda").send_keys(conda)
    click("env-create")
    page_says("Environment my-env version 1 created")
    visible("environment-row-my-env")
    assert not by_id("no-environments").is_displayed()
    status, env = api("GET", "/v1/environments/my-env")
    with open(conda) as f:
        assert status == 200 and env["id"] == "azureml:my-env:1" and env["conda_yaml"] == f.read(), env
    shot("environments")

    step("Models: nothing registered yet")
    click("nav-models")
    at_hash("#/models")
    visible("no-models")
    assert not by_id("models-table").is_displayed()
    assert driver.title.startswith("Models"), driver.title
    shot("models-empty")

    for name in ("model-1", "model-2"):
        folder = sample(name, "model")
        step("Models → Register → From local files: {} from the {}/model folder".format(name, name))
        click("models-register")
        visible("register-local")
        click("register-local")
        visible("register-dialog")
        click("register-submit")  # nothing picked yet: refused before anything is sent
        text_has("register-error", "Pick the model's folder")
        Select(by_id("register-type")).select_by_value("custom_model")
        by_id("register-folder").send_keys(folder)
        text_is("register-picked", "Folder model: 1 file, " + driver.execute_script(
            "return bytesText(arguments[0])", os.path.getsize(os.path.join(folder, "sklearn_regression_model.pkl"))))
        fill("register-name", name)
        fill("register-description", "the seed's " + name)
        shot("register-" + name)
        click("register-submit")
        page_says("Model {} version 1 registered".format(name))
        wait.until(lambda d: not by_id("register-dialog").is_displayed(), "the register dialog stayed open")
        visible("model-row-" + name)
        text_is("model-version-" + name, "1")
        text_is("model-type-" + name, "custom_model")
        status, m = api("GET", "/v1/models/" + name)
        size = os.path.getsize(os.path.join(folder, "sklearn_regression_model.pkl"))
        assert status == 200 and m["id"] == "azureml:{}:1".format(name) and m["version"] == "1", m
        assert m["type"] == "custom_model" and m["size_bytes"] == size and m["file_count"] == 1, m
        assert m["description"] == "the seed's " + name, m
        # The stored copy is the folder itself (its own name kept), byte for byte.
        with open(os.path.join(m["path"], "sklearn_regression_model.pkl"), "rb") as a, \
                open(os.path.join(folder, "sklearn_regression_model.pkl"), "rb") as b:
            assert a.read() == b.read(), "the stored copy of {} differs from the folder".format(name)
    assert [m["name"] for m in api("GET", "/v1/models")[1]] == ["model-1", "model-2"]
    shot("models")

    step("Models → model-1: its versions, then Deploy → Real-time endpoint")
    click("open-model-model-1")
    at_hash("#/models/model-1")
    visible("model-body")
    text_is("model-id", "azureml:model-1:1")
    text_is("model-type", "custom_model")
    visible("model-version-row-1")
    shot("model-1")
    click("model-deploy")
    visible("deploy-realtime")
    click("deploy-realtime")
    at_hash("#/deploy?model=model-1:1")
    visible("view-deploy")
    wizard_ready()

    step("wizard, endpoint: a new one, my-endpoint, compute type Managed, key-based authentication")
    assert by_id("wiz-endpoint-new").is_selected()
    assert by_id("wiz-endpoint-existing").get_attribute("disabled") is not None, "no endpoint exists to pick"
    assert by_id("wiz-compute-type").get_attribute("value") == "Managed"
    fill("wiz-endpoint-name", "x")
    click("wizard-next")
    text_has("wizard-error", "3 to 32")
    assert by_id("wiz-page-endpoint").is_displayed()
    fill("wiz-endpoint-name", EP_NAME)
    click("wiz-auth-key")
    shot("deploy-1-endpoint")
    next_page("model")

    step("wizard, model: model-1 version 1")
    text_is("wiz-model-id", "azureml:model-1:1")
    text_is("wiz-model-type", "custom_model")
    shot("deploy-2-model")
    next_page("deployment")

    step("wizard, deployment: blue, Inferencing data collection and Application Insights diagnostics on")
    fill("wiz-deployment-name", "blue")
    text_is("wiz-app-insights-state", "metrics and traces off")
    set_checked("wiz-data-collection", True)
    set_checked("wiz-app-insights", True)
    text_is("wiz-app-insights-state", "metrics and traces on")
    shot("deploy-3-deployment")
    next_page("code")

    step("wizard, code + environment: model-1/onlinescoring/score.py uploaded, the curated sklearn-1.5")
    by_id("wiz-code-file").send_keys(sample("model-1", "onlinescoring", "score.py"))
    text_has("wiz-code-picked", "File score.py")
    assert Select(by_id("wiz-scoring-script")).first_selected_option.get_attribute("value") == "score.py"
    click("wizard-next")
    text_has("wizard-error", "Pick the environment")
    offered = [o.get_attribute("value") for o in Select(by_id("wiz-environment")).options]
    assert SKLEARN in offered and "azureml:my-env:1" in offered, offered
    Select(by_id("wiz-environment")).select_by_value(SKLEARN)
    text_has("wiz-environment-facts", "Curated")
    shot("deploy-4-code")
    next_page("compute")

    step("wizard, compute: Standard_DS3_v2, instance count 1")
    assert Select(by_id("wiz-instance-type")).first_selected_option.get_attribute("value") == "Standard_DS3_v2"
    fill("wiz-instance-count", 0)
    click("wizard-next")
    text_has("wizard-error", "at least 1")
    fill("wiz-instance-count", 1)
    shot("deploy-5-compute")
    next_page("traffic")

    step("wizard, live traffic: 100% to blue (a new endpoint)")
    assert [i.get_attribute("id") for i in driver.find_elements(By.CSS_SELECTOR, "#wiz-traffic-fields input")] == ["wiz-traffic-blue"]
    assert by_id("wiz-traffic-blue").get_attribute("value") == "100"
    text_is("wiz-traffic-total", "Total: 100%")
    shot("deploy-6-traffic")
    next_page("review")

    step("wizard, review: everything chosen, and the deployment's document")
    text_is("wiz-review-endpoint", EP_NAME + " (new; compute Managed; key-based authentication)")
    text_is("wiz-review-model", "azureml:model-1:1")
    text_is("wiz-review-deployment", "blue")
    text_is("wiz-review-data-collection", "on (model inputs and outputs)")
    text_is("wiz-review-app-insights", "metrics and traces on")
    text_has("wiz-review-code", "score.py")
    text_has("wiz-review-environment", SKLEARN)
    text_is("wiz-review-instance-type", "Standard_DS3_v2")
    text_is("wiz-review-instance-count", "1")
    text_is("wiz-review-traffic", "blue 100%")
    doc = json.loads(driver.execute_script("return document.getElementById('wiz-review-json').textContent"))
    assert doc["model"] == "azureml:model-1:1" and doc["environment"] == SKLEARN, doc
    assert doc["app_insights_enabled"] is True and doc["data_collector"] == DATA_COLLECTOR, doc
    assert doc["instance_type"] == "Standard_DS3_v2" and doc["instance_count"] == 1, doc
    assert api("GET", EP_PATH)[0] == 404, "the wizard created something before Create"
    shot("deploy-7-review")

    step("Create: the endpoint, then blue, followed while it loads, then its traffic; the endpoint's page opens")
    click("wizard-create")
    visible("wizard-progress")
    shot("deploy-8-progress")
    at_hash("#/endpoints/" + EP_NAME)
    page_says("Deployment blue of azureml:model-1:1 is ready on endpoint {}; live traffic blue 100%".format(EP_NAME))
    visible("endpoint-details")
    text_is("state-blue", "Succeeded")
    text_is("ep-traffic", "blue 100%")
    text_is("ep-auth-mode", "key")
    text_is("model-of-blue", "azureml:model-1:1")
    shot("deploy-blue-done")
    d = deployment("blue")
    assert d["provisioning_state"] == "Succeeded", d
    assert d["model"]["reference"] == "azureml:model-1:1", d["model"]
    assert d["model"]["name"] == "model-1" and str(d["model"]["version"]) == "1", d["model"]
    assert d["data_collector"] == DATA_COLLECTOR, d
    assert d["app_insights_enabled"] is True, d
    assert d["instance_type"] == "Standard_DS3_v2" and d["instance_count"] == 1, d
    assert SKLEARN in json.dumps(d["environment"]), d["environment"]
    cc = d["code_configuration"]
    assert cc["scoring_script"] == "score.py", cc
    with open(os.path.join(cc["code"], "score.py")) as a, open(sample("model-1", "onlinescoring", "score.py")) as b:
        assert a.read() == b.read(), "the stored code is not the picked score.py"
    ep = endpoint()
    assert ep["traffic"] == {"blue": 100} and ep["auth_mode"] == "key", ep
    got = test_on_page("blue", request_file)
    assert all(abs(a - b) <= 1e-6 * b for a, b in zip(got, MODEL_1)), got
    tab("details")
    errors = console_errors()
    assert not errors, "console errors: {}".format(errors)

    step("Models → model-2 → Deploy → Real-time endpoint: to the existing endpoint")
    click("nav-models")
    at_hash("#/models")
    visible("model-row-model-2")
    click("open-model-model-2")
    at_hash("#/models/model-2")
    text_is("model-id", "azureml:model-2:1")
    click("model-deploy")
    visible("deploy-realtime")
    click("deploy-realtime")
    at_hash("#/deploy?model=model-2:1")
    wizard_ready()
    fill("wiz-endpoint-name", EP_NAME)
    click("wizard-next")
    text_has("wizard-error", "Endpoint {} exists already".format(EP_NAME))
    click("wiz-endpoint-existing")
    visible("wiz-endpoint-pick")
    Select(by_id("wiz-endpoint-pick")).select_by_value(EP_NAME)
    text_has("wiz-existing-facts", "blue 100%")
    assert not by_id("wiz-endpoint-name").is_displayed()
    shot("deploy-green-1-endpoint")
    next_page("model")
    text_is("wiz-model-id", "azureml:model-2:1")
    shot("deploy-green-2-model")
    next_page("deployment")

    step("wizard, deployment: green (blue is taken on my-endpoint), the toggles left off")
    fill("wiz-deployment-name", "blue")
    click("wizard-next")
    text_has("wizard-error", "has a deployment blue already")
    fill("wiz-deployment-name", "green")
    assert not by_id("wiz-data-collection").is_selected() and not by_id("wiz-app-insights").is_selected()
    shot("deploy-green-3-deployment")
    next_page("code")

    step("wizard, code + environment: the model-2/onlinescoring folder uploaded, the curated sklearn-1.5")
    by_id("wiz-code-folder").send_keys(sample("model-2", "onlinescoring"))
    text_has("wiz-code-picked", "Folder onlinescoring: 1 file")
    assert Select(by_id("wiz-scoring-script")).first_selected_option.get_attribute("value") == "score.py"
    Select(by_id("wiz-environment")).select_by_value(SKLEARN)
    shot("deploy-green-4-code")
    next_page("compute")
    shot("deploy-green-5-compute")
    next_page("traffic")

    step("wizard, live traffic: the endpoint's split as it is, green at 0%")
    assert by_id("wiz-traffic-blue").get_attribute("value") == "100"
    assert by_id("wiz-traffic-green").get_attribute("value") == "0"
    text_is("wiz-traffic-total", "Total: 100%")
    shot("deploy-green-6-traffic")
    next_page("review")
    text_is("wiz-review-endpoint", EP_NAME + " (existing)")
    text_is("wiz-review-model", "azureml:model-2:1")
    text_is("wiz-review-deployment", "green")
    text_is("wiz-review-data-collection", "off")
    text_is("wiz-review-app-insights", "off")
    text_is("wiz-review-traffic", "blue 100%")
    shot("deploy-green-7-review")

    step("Create: green loads beside blue, which keeps all the traffic")
    click("wizard-create")
    at_hash("#/endpoints/" + EP_NAME)
    page_says("Deployment green of azureml:model-2:1 is ready on endpoint {}".format(EP_NAME))
    text_is("state-green", "Succeeded")
    text_is("traffic-of-green", "0%")
    text_is("ep-traffic", "blue 100%")
    text_is("model-of-green", "azureml:model-2:1")
    shot("deploy-green-done")
    d = deployment("green")
    assert d["model"]["reference"] == "azureml:model-2:1", d["model"]
    assert d["app_insights_enabled"] is False and d.get("data_collector") is None, d
    cc = d["code_configuration"]
    assert cc["scoring_script"] == "score.py" and os.path.basename(cc["code"].rstrip("/")) == "onlinescoring", cc
    assert endpoint()["traffic"] == {"blue": 100, "green": 0}, endpoint()
    assert deployment("blue")["model"]["reference"] == "azureml:model-1:1"

    step("the page's own steps: test green pinned, 90/10, mirror 10% to green, Monitoring, Logs, mirror off")
    got = test_on_page("green", request_file)
    assert got and got != MODEL_1, got
    tab("details")
    open_traffic(90, 10)
    text_is("ep-traffic", "blue 90%, green 10%")
    assert endpoint()["traffic"] == {"blue": 90, "green": 10}, endpoint()
    open_traffic(100, 0, ("green", None))
    text_is("ep-mirror-traffic", "green 10%")
    assert endpoint()["mirror_traffic"] == {"green": 10}, endpoint()
    wait_api("green scored mirror copies", lambda: mirror_copies_scored(request))
    tab("monitoring")
    visible("mirror-figure")
    text_has("mirror-summary", "green · 10%")
    tab("logs")
    Select(by_id("logs-deployment")).select_by_value("green")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#logs-output .mirror-line"), "no mirror line in green's logs")
    shot("seed-logs")
    tab("details")
    open_traffic(100, 0, None)
    text_is("ep-mirror-traffic", "none")

    step("a model a deployment uses cannot be archived")
    status, body = api("POST", "/v1/models/model-1/versions/1/archive")
    assert status == 409 and "blue" in body["message"], (status, body)

    step("all traffic to green, delete blue, then the endpoint, from the page")
    open_traffic(0, 100)
    text_is("ep-traffic", "green 100%")
    click("delete-blue")
    visible("confirm-dialog")
    click("confirm-yes")
    wait.until(lambda d: not d.find_elements(By.ID, "card-blue"), "blue's card stayed")
    assert [d["name"] for d in api("GET", EP_PATH + "/deployments")[1]] == ["green"]
    delete_endpoint_from_its_page()

    step("the models stay registered; unused now, model-1 archives (and leaves the list) and restores")
    click("nav-models")
    at_hash("#/models")
    visible("model-row-model-1")
    visible("model-row-model-2")
    status, body = api("POST", "/v1/models/model-1/archive")
    assert status == 200, body
    wait.until(lambda d: not d.find_elements(By.ID, "model-row-model-1"), "an archived model stayed listed")
    visible("model-row-model-2")
    status, body = api("POST", "/v1/models/model-1/restore")
    assert status == 200, body
    visible("model-row-model-1")
    shot("models-after")
    errors = console_errors()
    assert not errors, "console errors: {}".format(errors)


SCENARIOS = {"tutorial": tutorial, "endpoints": endpoints_list, "seed": seed}

try:
    SCENARIOS[SCENARIO]()
    contract_check()
except Exception:
    shot("failure")
    with open(os.path.join(SHOTS, "failure.html"), "w") as f:
        f.write(driver.page_source)
    raise
finally:
    driver.quit()
