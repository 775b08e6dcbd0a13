"""A page of another origin attacks a token-less admin plane through headless Chromium. Run by
tests/cross_site.rs, which checks through the admin API afterwards that nothing changed:

    python cross_site_test.py  (env: ADMIN_URL, PRIMARY_KEY, MODEL_DIR)

The page is served by this script on another port of 127.0.0.1 (same-site, another origin) and
under the name attacker.test (cross-site). It tries: no-cors POSTs with the three bodies a form
can send (key rotation, rollout start and abort, comparison reset, invoke), reading the keys,
DELETE and PUT of deployments, a traffic PATCH, and a text/plain form POST to
`/v1/endpoint/invoke` of a deployment that reflects its body as HTML (whose script, if it ran on
the admin origin, would PUT a deployment). Then a DNS-rebinding page (rebind.test resolving to
127.0.0.1, with Chromium's resolver rules) opens the studio and the keys on the admin port.
"""

import http.server
import json
import os
import threading
import urllib.parse

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

ADMIN = os.environ["ADMIN_URL"].rstrip("/")
ADMIN_PORT = urllib.parse.urlsplit(ADMIN).port
KEY = os.environ["PRIMARY_KEY"]
MODEL = os.environ["MODEL_DIR"]

PAGE = r"""<!doctype html>
<html><head><title>loading</title></head><body>
<pre id="log"></pre>
<form id="invoke" method="POST" enctype="text/plain"><input type="hidden" id="payload"></form>
<script>
const q = new URLSearchParams(location.search);
const A = q.get("admin"), MODEL = q.get("model");
const results = {};
async function attempt(name, run) {
  try {
    const r = await run();
    results[name] = (r && r.type !== undefined) ? r.type + " " + r.status : String(r);
  } catch (e) {
    // A rejected fetch: refused by the browser before sending (a preflight not granted, a
    // method no-cors forbids), or answered by a refusal whose `Cross-Origin-Resource-Policy:
    // same-origin` the browser then withholds from this page.
    results[name] = "failed: " + e;
  }
}
const rollout = JSON.stringify({to: "green", steps: "10,100", step_duration: "60s"});
const noCors = (path, body) => fetch(A + path, {method: "POST", mode: "no-cors", body});
(async () => {
  await attempt("rotate keys, text/plain", () => noCors("/v1/endpoint/keys/regenerate", '{"keyType": "primary"}'));
  await attempt("rotate keys, urlencoded", () => noCors("/v1/endpoint/keys/regenerate", new URLSearchParams({keyType: "primary"})));
  const form = new FormData(); form.append("keyType", "primary");
  await attempt("rotate keys, multipart", () => noCors("/v1/endpoint/keys/regenerate", form));
  await attempt("start a rollout", () => noCors("/v1/endpoint/rollout", rollout));
  await attempt("abort a rollout (no body)", () => noCors("/v1/endpoint/rollout/abort"));
  await attempt("reset a comparison", () => noCors("/v1/deployments/green/comparison/reset", "{}"));
  await attempt("invoke", () => noCors("/v1/endpoint/invoke", '{"data": [[1,2,3,4,5,6,7,8,9,10]]}'));
  await attempt("read the keys", () => fetch(A + "/v1/endpoint/keys").then((r) => r.text()));
  await attempt("read the keys, no-cors", () => fetch(A + "/v1/endpoint/keys", {mode: "no-cors"}).then((r) => r.text()));
  await attempt("delete a deployment", () => fetch(A + "/v1/deployments/green", {method: "DELETE"}));
  await attempt("delete a deployment, no-cors", () => fetch(A + "/v1/deployments/green", {method: "DELETE", mode: "no-cors"}));
  await attempt("put a deployment", () => fetch(A + "/v1/deployments/evil", {
    method: "PUT", headers: {"Content-Type": "application/json"}, body: JSON.stringify({model: {path: MODEL}})}));
  await attempt("patch traffic", () => fetch(A + "/v1/endpoint", {
    method: "PATCH", headers: {"Content-Type": "application/json"}, body: JSON.stringify({traffic: {green: 100}})}));
  document.getElementById("log").textContent = JSON.stringify(results, null, 1);
  // The form POST, submitted by the test: reflected as HTML by the `echo` deployment, its
  // script would run on the admin origin and PUT a deployment with the studio's own rights.
  const f = document.getElementById("invoke");
  f.action = A + "/v1/endpoint/invoke?deployment_name=echo";
  const p = document.getElementById("payload");
  p.name = "<html><body><script>document.title='pwned';fetch('/v1/deployments/evil',{method:'PUT',"
    + "headers:{'Content-Type':'application/json'},body:JSON.stringify({model:{path:'" + MODEL + "'}})})"
    + ".then(function(r){document.title='pwned '+r.status})</" + "script>";
  p.value = "</body></html>";
  document.title = "done";
})();
</script></body></html>
"""


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
threading.Thread(target=site.serve_forever, daemon=True).start()
SITE_PORT = site.server_address[1]

opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
             "--host-resolver-rules=MAP attacker.test 127.0.0.1, MAP rebind.test 127.0.0.1"):
    opts.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
wait = WebDriverWait(driver, 60, poll_frequency=0.1)


def loaded(url_part):
    try:
        wait.until(lambda d: url_part in d.current_url and d.execute_script("return document.readyState") == "complete")
    except TimeoutException:
        raise AssertionError("never loaded {} (at {})".format(url_part, driver.current_url))


try:
    for origin in ("http://127.0.0.1:{}".format(SITE_PORT), "http://attacker.test:{}".format(SITE_PORT)):
        query = urllib.parse.urlencode({"admin": ADMIN, "model": MODEL})
        driver.get("{}/attack.html?{}".format(origin, query))
        try:
            wait.until(lambda d: d.title == "done")
        except TimeoutException:
            raise AssertionError("the attack page from {} never finished (title {!r})".format(origin, driver.title))
        log = driver.find_element("id", "log").text
        print("from {}: {}".format(origin, log), flush=True)
        assert KEY not in log, "a page from {} read the primary key: {}".format(origin, log)
        driver.execute_script("document.getElementById('invoke').submit()")
        loaded(ADMIN + "/v1/endpoint/invoke")
        shown = driver.page_source
        print("the form POST to invoke from {} shows: {}".format(origin, driver.find_element("tag name", "body").text),
              flush=True)
        assert not driver.title.startswith("pwned"), "the reflected script ran on the admin origin: " + driver.title
        assert "own origin" in shown, "the form POST was not refused: " + shown

    # DNS rebinding: rebind.test now resolves to 127.0.0.1, so a page of rebind.test on the
    # admin port is same-origin with what it reads.
    for path in ("/", "/v1/endpoint/keys"):
        url = "http://rebind.test:{}{}".format(ADMIN_PORT, path)
        driver.get(url)
        loaded(url)
        shown = driver.page_source
        print("rebinding {} shows: {}".format(path, driver.find_element("tag name", "body").text[:300]), flush=True)
        assert KEY not in shown, "the rebinding page read the primary key"
        assert "tab-details" not in shown, "the rebinding page got the studio"
        assert "--admin-allowed-hosts" in shown, "the refusal says what to do: " + shown
finally:
    driver.quit()
    site.shutdown()

print("cross-site: all attempts failed", flush=True)
