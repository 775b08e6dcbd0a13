// Switchyard studio: the admin API (CONTRACT §5) in a browser. Vanilla JS, no dependencies.
// Every call goes through api(), which adds the admin token when the server asked for one.
// The page opens on the Endpoints list (#/endpoints); each endpoint has its own page
// (#/endpoints/NAME) with the tabs, and every call about it goes to /v1/endpoints/NAME/...
// The registered assets (CONTRACT §11) have their own pages: Models (#/models, a model's
// versions at #/models/NAME[/VERSION]), Environments (#/environments) and the
// Deploy → Real-time endpoint wizard (#/deploy?model=NAME:VERSION).
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "switchyard-admin-token";
const COLORS = ["#0b5cad", "#1a7f37", "#bc4c00", "#8250df", "#cf222e", "#116329", "#953800", "#0550ae"];
const POLL_MS = 2000;
const HISTORY = 60;

// `view` is "list", "endpoint", "models", "model", "environments" or "deploy"; `name` the
// endpoint whose page is open (null elsewhere); `model`/`modelVersion` the model page's;
// `route` the address shown (its parsed form); `gen` changes whenever the page shown changes,
// so an answer about the page that was left is dropped instead of drawn on the next one.
// `endpoints` is the last list read (null before), `models` the last model list, `curated` the
// server's curated environments (read once: they never change while it runs).
const state = { view: null, route: null, name: null, model: null, modelVersion: null, gen: 0, notice: null, endpoints: null, endpoint: null, deployments: [], tab: "details", metrics: [], series: {}, mirror: [], keyShown: false, models: null, modelVersions: null, curated: null };

const seg = encodeURIComponent;

/** The admin API path of endpoint `endpoint` (`rest` appended): /v1/endpoints/NAME/... */
function endpointPath(endpoint, rest) {
  return "/v1/endpoints/" + seg(endpoint) + (rest || "");
}

/** The admin API path of deployment `name` of endpoint `endpoint`. */
function deploymentPath(endpoint, name, rest) {
  return endpointPath(endpoint, "/deployments/" + seg(name) + (rest || ""));
}

/** The admin API path of the open endpoint. */
function epPath(rest) {
  return endpointPath(state.name, rest);
}

/** The admin API path of one of the open endpoint's deployments. */
function depPath(name, rest) {
  return deploymentPath(state.name, name, rest);
}

// ---------- the admin API ----------

class ApiError extends Error {
  constructor(status, message) { super(studioTerms(message)); this.status = status; }
}

// The server's messages are written for every client and may point at the CLI
// (`online-endpoint update --traffic`); on this page they name the button or field that does it.
// Messages without such hints pass unchanged, so a server that words them neutrally needs none.
const STUDIO_TERMS = [
  [/\bthis server hosts no endpoint: create one first \([^)]*\)/g, "this server hosts no endpoint: create one with Create endpoint on the Endpoints list"],
  [/ \(the CLI's [^)]*\)/g, ""],
  [/`(?:switchyard )?online-endpoint create[^`]*`/g, "Create endpoint on the Endpoints list"],
  [/`(?:switchyard )?online-endpoint update --traffic[^`]*`/g, "Update traffic on the Details tab"],
  [/`(?:switchyard )?online-endpoint update --mirror-traffic[^`]*`/g, "Update traffic on the Details tab"],
  [/`(?:switchyard )?online-endpoint rollout abort`/g, "Abort on the Rollout tab"],
  [/`(?:switchyard )?online-endpoint rollout[^`]*`/g, "the Rollout tab"],
  [/`(?:switchyard )?online-endpoint get-credentials[^`]*`/g, "Show key on the Consume tab"],
  [/`(?:switchyard )?online-endpoint invoke[^`]*`/g, "the Test tab"],
  [/`(?:switchyard )?online-endpoint delete[^`]*`/g, "Delete endpoint on the Details tab"],
  [/`(?:switchyard )?online-deployment (?:create|update) -f[^`]*`/g, "Add deployment under the same name"],
  [/`(?:switchyard )?online-deployment update[^`]*`/g, "the deployment's card on the Details tab"],
  [/`(?:switchyard )?online-deployment (?:show|list)[^`]*`/g, "the deployment's card on the Details tab"],
  [/`(?:switchyard )?online-deployment compare[^`]*`/g, "the mirror comparison on the Monitoring tab"],
  [/`(?:switchyard )?online-deployment get-logs[^`]*`/g, "the Logs tab"],
  [/`(?:switchyard )?online-deployment delete[^`]*`/g, "the deployment's Delete button"],
  [/`(?:switchyard )?online-(?:endpoint|deployment)\b[^`]*`/g, "this page"],
  [/\brollout --to names deployment/g, "Target deployment names deployment"],
  [/\(--to [^)]*\)/g, "(Target deployment)"],
  [/--step-duration\b/g, "Step duration"],
  [/--steps\b/g, "Steps"],
  [/--deployment-name\b/g, "the Deployment field"],
  [/--all-traffic\b/g, "All traffic once ready"],
  [/--mirror-traffic\b/g, "Enable mirrored traffic"],
  [/--traffic\b/g, "Update traffic"],
  [/pin a deployment with the azureml-model-deployment header/g, "pick a Deployment on the Test tab"],
  [/\bbase_dir\b/g, "“Folder of the YAML file”"],
  // The neutral wording the admin API uses now (the CLI adds its own commands to it).
  [/\(the endpoint's traffic\)/g, "(Update traffic on the Details tab)"],
  [/\babort the rollout\b/g, "abort the rollout (Abort on the Rollout tab)"],
  [/\bthis server hosts no endpoint: create one first\b/g, "this server hosts no endpoint: create one with Create endpoint on the Endpoints list"],
];

function studioTerms(message) {
  let m = String(message || "");
  for (const [from, to] of STUDIO_TERMS) m = m.replace(from, to);
  return m;
}

let tokenWaiters = null;

async function api(method, path, body, contentType) {
  for (;;) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers["Authorization"] = "Bearer " + token;
    // Every call that changes something declares its body's type, body or not: the admin plane
    // refuses a state change whose type a page of another origin could send (CONTRACT §5).
    if (body !== undefined || method !== "GET") headers["Content-Type"] = contentType || "application/json";
    const init = { method, headers, cache: "no-store" };
    // A picked file (an upload's bytes) goes as it is; anything else but text as JSON.
    if (body !== undefined) init.body = typeof body === "string" || body instanceof Blob ? body : JSON.stringify(body);
    const r = await fetch(path, init);
    // A 401 of invoke is the scoring plane's (passed through), not a question for the token.
    if (r.status === 401 && !/\/invoke(?:\?|$)/.test(path)) {
      await askToken(token ? "That token was refused." : "");
      continue;
    }
    const text = await r.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { /* text body (logs) */ }
    if (!r.ok) throw new ApiError(r.status, (json && json.message) || text || r.statusText);
    return { status: r.status, json, text, headers: r.headers };
  }
}

function askToken(error) {
  const err = $("token-error");
  err.hidden = !error;
  err.textContent = error;
  if (!tokenWaiters) {
    tokenWaiters = [];
    $("token-dialog").showModal();
    $("token-input").focus();
  }
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
  $("token-dialog").close();
  const waiters = tokenWaiters || [];
  tokenWaiters = null;
  waiters.forEach((w) => w());
});
$("token-dialog").addEventListener("cancel", (e) => e.preventDefault());

let sayTimer = null;

function say(text, isError) {
  const m = $("message");
  m.textContent = text;
  m.className = isError ? "error" : "";
  m.hidden = !text;
  clearTimeout(sayTimer);
  if (text && !isError) sayTimer = setTimeout(() => { m.hidden = true; }, 8000);
}

// ---------- tabs ----------

const TABS = ["details", "test", "logs", "monitoring", "consume", "rollout", "data"];

// Every tab but Details reads the endpoint: until its page has read it they are off (no
// request for an endpoint the page does not know yet).
const NEEDS_ENDPOINT = TABS.filter((t) => t !== "details");

function showTab(name, focus) {
  if ($("tab-" + name).disabled) return;
  state.tab = name;
  for (const t of TABS) {
    const on = t === name;
    const tab = $("tab-" + t);
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $("panel-" + t).hidden = !on;
    if (on && focus) tab.focus();
  }
  if (name === "logs") refreshLogs();
  if (name === "monitoring") drawCharts();
  if (name === "consume") renderConsume();
  if (name === "rollout") refreshRollout();
  if (name === "data") refreshData();
}

TABS.forEach((t, i) => {
  const tab = $("tab-" + t);
  tab.addEventListener("click", () => showTab(t));
  tab.addEventListener("keydown", (e) => {
    const on = TABS.filter((x) => !$("tab-" + x).disabled);
    const at = on.indexOf(t);
    const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
    if (step) showTab(on[(at + step + on.length) % on.length], true);
    if (e.key === "Home") showTab(on[0], true);
    if (e.key === "End") showTab(on[on.length - 1], true);
  });
});

function applyEndpointState() {
  const on = !!state.endpoint;
  for (const t of NEEDS_ENDPOINT) {
    const tab = $("tab-" + t);
    tab.disabled = !on;
    if (on) tab.removeAttribute("title"); else tab.title = "Reading the endpoint…";
  }
  if (!on && state.tab !== "details") showTab("details");
}

/** What the page showed of an endpoint (left, or gone): nothing of it stays on screen, so the
 * next endpoint's page never shows a value of this one. */
function clearEndpointViews() {
  state.endpoint = null;
  state.deployments = [];
  $("endpoint-details").hidden = true;
  $("test-result").hidden = true;
  for (const id of ["test-status", "test-served-by", "test-time", "test-output", "logs-output", "consume-uri", "snippet-curl", "snippet-python",
    "ep-scoring-uri", "ep-auth-mode", "ep-provisioning-state", "ep-traffic", "ep-mirror-traffic", "chart-legend", "mirror-summary"]) $(id).textContent = "";
  for (const id of ["test-deployment", "logs-deployment", "rollout-to", "data-deployment"]) $(id).replaceChildren();
  state.keyShown = false;
  $("consume-key").textContent = "••••••••";
  $("show-key").textContent = "Show key";
  state.metrics = [];
  state.series = {};
  state.mirror = [];
  $("mirror-figure").hidden = true;
  $("rollout-error").hidden = true;
  renderRollout(null);
  delete $("rollout-events").dataset.drawn;
  $("rollout-events").replaceChildren();
  const cards = $("deployment-cards");
  cards.replaceChildren();
  delete cards.dataset.drawn;
  applyEndpointState();
}

// ---------- pages: #/endpoints (the list), #/endpoints/NAME (an endpoint's page), #/models,
// #/models/NAME[/VERSION], #/environments and #/deploy?model=NAME:VERSION ----------

/** The endpoint the address names (#/endpoints/NAME), or null for the list. */
function hashEndpoint() {
  const m = /^#\/endpoints\/([^/?#]+)\/?$/.exec(location.hash);
  if (!m) return null;
  let name;
  try { name = decodeURIComponent(m[1]); } catch (_) { return null; }
  // Only an endpoint name (CONTRACT §1): a ".." or "a/b" would make the page's calls leave
  // /v1/endpoints/NAME once the browser resolves the path.
  return ENDPOINT_NAME.test(name) ? name : null;
}

const ENDPOINT_NAME = /^[A-Za-z]([-A-Za-z0-9]*[A-Za-z0-9])?$/;
// Registered assets' names and versions (CONTRACT §11). Neither can be "." or "..": the
// page's calls put them in a path, which must not leave /v1/models/NAME.
const ASSET_NAME = /^[A-Za-z0-9][-A-Za-z0-9._]{0,254}$/;
const ASSET_VERSION = /^(?!\.{1,2}$)[-A-Za-z0-9._]{1,30}$/;

function decoded(s) {
  try { return decodeURIComponent(s); } catch (_) { return null; }
}

/** `NAME:VERSION` (a model's reference without `azureml:`), or null. */
function parseModelRef(text) {
  const at = text.indexOf(":");
  if (at < 0) return null;
  const name = text.slice(0, at), version = text.slice(at + 1);
  return ASSET_NAME.test(name) && ASSET_VERSION.test(version) ? { name, version } : null;
}

/** The page the address names ({view, ...}), or null for an address the page does not know. */
function parseRoute() {
  const h = location.hash;
  if (h === "#/endpoints") return { view: "list" };
  const name = hashEndpoint();
  if (name) return { view: "endpoint", name };
  if (h === "#/models") return { view: "models" };
  if (h === "#/environments") return { view: "environments" };
  let m = /^#\/models\/([^/?#]+)(?:\/([^/?#]+))?\/?$/.exec(h);
  if (m) {
    const model = decoded(m[1]);
    const version = m[2] === undefined ? null : decoded(m[2]);
    const ok = model && ASSET_NAME.test(model) && (version === null || (version && ASSET_VERSION.test(version)));
    return ok ? { view: "model", model, version } : null;
  }
  m = /^#\/deploy\?(.*)$/.exec(h);
  if (m) {
    const q = new URLSearchParams(m[1]);
    const ref = parseModelRef(q.get("model") || "");
    const endpoint = q.get("endpoint");
    if (ref) return { view: "deploy", model: ref.name, version: ref.version, endpoint: endpoint && ENDPOINT_NAME.test(endpoint) ? endpoint : null };
  }
  return null;
}

/** Opens the page of address `hash`. A new history entry, so the browser's Back returns;
 * `replace` swaps the current one instead (a page whose subject is gone, or deleted).
 * `notice`, if given, is said on the page opened (what was said on the page left is not). */
function goHash(hash, replace, notice) {
  state.notice = notice || null;
  if (replace) {
    history.replaceState(null, "", hash);
    route();
  } else if (location.hash !== hash) {
    location.hash = hash; // hashchange routes
  } else {
    route();
  }
}

/** Opens endpoint `name`'s page (null: the list), as goHash. */
function go(name, replace, notice) {
  goHash(name ? "#/endpoints/" + seg(name) : "#/endpoints", replace, notice);
}

const VIEWS = { list: "view-list", endpoint: "view-endpoint", models: "view-models", model: "view-model", environments: "view-environments", deploy: "view-deploy" };
const NAV = { list: "nav-endpoints", endpoint: "nav-endpoints", models: "nav-models", model: "nav-models", deploy: "nav-models", environments: "nav-environments" };

function titleOf(r) {
  switch (r.view) {
    case "endpoint": return r.name;
    case "models": return "Models";
    case "model": return `${r.model} · Models`;
    case "environments": return "Environments";
    case "deploy": return `Deploy ${r.model}:${r.version}`;
    default: return "Endpoints";
  }
}

/** Shows the page the address names. */
function route() {
  const notice = state.notice;
  state.notice = null;
  let r = parseRoute();
  if (!r) {
    history.replaceState(null, "", "#/endpoints");
    r = { view: "list" };
  }
  const key = JSON.stringify(r);
  if (key === state.route) {
    if (notice) say(notice);
    return;
  }
  state.route = key;
  state.gen++;
  say(notice || ""); // a message about the page left does not stay on the next one
  for (const d of document.querySelectorAll("dialog")) if (d.open && d.id !== "token-dialog") d.close();
  closeMenus(null);
  clearEndpointViews();
  clearModelView();
  const view = r.view;
  state.view = view;
  state.name = view === "endpoint" ? r.name : null;
  state.model = view === "model" ? r.model : null;
  state.modelVersion = view === "model" ? r.version : null;
  for (const [v, id] of Object.entries(VIEWS)) $(id).hidden = v !== view;
  for (const id of new Set(Object.values(NAV))) {
    if (id === NAV[view]) $(id).setAttribute("aria-current", "page"); else $(id).removeAttribute("aria-current");
  }
  $("endpoint-name").textContent = state.name ? "· " + state.name : "";
  document.title = titleOf(r) + " · Switchyard studio";
  if (view === "list") {
    $("create-error").hidden = true;
    if (state.endpoints) renderList();
  } else if (view === "endpoint") {
    showTab("details");
  } else if (view === "models") {
    if (state.models) renderModels();
  } else if (view === "deploy") {
    openWizard(r);
    return;
  }
  refresh().then(pollMetrics);
}

window.addEventListener("hashchange", route);

/** The endpoint of the open page is not on the server (deleted elsewhere, or a stale link):
 * back to the list, which says so. */
function gone(name) {
  if (state.endpoints) state.endpoints = state.endpoints.filter((e) => e.name !== name);
  go(null, true, `Endpoint ${name} does not exist (any more): it was deleted, or never created.`);
}

// ---------- the endpoints list ----------

function stateText(ep) {
  const r = ep.rollout_status;
  if (!r) return "";
  const active = r.status === "running" || r.status === "paused";
  return `rollout to ${r.to}: ${r.status}` + (active ? ` (step ${r.step}, ${r.step_index + 1} of ${r.steps})` : "");
}

function trafficText(ep) {
  const mirrored = Object.values(ep.mirror_traffic || {}).some((w) => w > 0);
  return splitText(ep.traffic) + (mirrored ? "; mirror " + splitText(ep.mirror_traffic) : "");
}

function endpointRow(ep) {
  const n = ep.name;
  // The endpoint's traffic lists every deployment it has (0% included).
  const deployments = Object.keys(ep.traffic || {});
  const link = el("a", { href: "#/endpoints/" + seg(n), id: "open-" + n, text: n });
  const st = el("span", { class: "state-" + ep.provisioning_state, text: ep.provisioning_state });
  const rollout = stateText(ep);
  const row = el("tr", { id: "endpoint-row-" + n },
    el("th", { scope: "row" }, link),
    el("td", { id: "list-state-" + n }, st, ...(rollout ? [el("br"), el("span", { class: "rollout-" + ep.rollout_status.status, text: rollout })] : [])),
    el("td", { id: "list-traffic-" + n, text: trafficText(ep) }),
    el("td", { id: "list-deployments-" + n, text: deployments.length ? `${deployments.length}: ${deployments.join(", ")}` : "none yet" }),
    el("td", { id: "list-uri-" + n, class: "uri", text: ep.scoring_uri }));
  // The whole row opens the endpoint (the name is the link for the keyboard); a click that
  // ends a text selection (copying the URI) does not.
  row.addEventListener("click", (e) => {
    if (e.target.closest("a") || String(window.getSelection())) return;
    go(n);
  });
  return row;
}

function renderList() {
  const list = state.endpoints || [];
  $("no-endpoint").hidden = list.length > 0;
  $("endpoints-table").hidden = !list.length;
  const rows = $("endpoint-rows");
  const key = JSON.stringify(list);
  if (rows.dataset.drawn === key) return; // the link the user is about to press stays
  rows.dataset.drawn = key;
  rows.replaceChildren(...list.map(endpointRow));
}

async function refreshList() {
  const gen = state.gen;
  let list;
  try {
    list = (await api("GET", "/v1/endpoints")).json || [];
  } catch (e) {
    if (gen === state.gen) say("Cannot list the endpoints: " + e.message, true);
    return;
  }
  if (gen !== state.gen) return;
  state.endpoints = list;
  renderList();
}

// ---------- details ----------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function splitText(map) {
  const parts = Object.entries(map || {}).filter(([, w]) => w > 0).map(([n, w]) => `${n} ${w}%`);
  return parts.length ? parts.join(", ") : "none";
}

/** Reads what the page shown needs: the list, the open endpoint and its deployments, the
 * models, a model's versions or the environments. The wizard reads what it needs when it
 * opens, and is not redrawn under the user. */
async function refresh() {
  if (state.view === "list") return refreshList();
  if (state.view === "models") return refreshModels();
  if (state.view === "model") return refreshModel();
  if (state.view === "environments") return refreshEnvironments();
  if (state.view !== "endpoint") return;
  const gen = state.gen;
  const name = state.name;
  const base = epPath();
  let ep, deployments;
  try {
    ep = (await api("GET", base)).json;
    deployments = (await api("GET", base + "/deployments")).json || [];
  } catch (e) {
    if (gen !== state.gen) return;
    if (e.status === 404) gone(name);
    else say(`Cannot read endpoint ${name}: ${e.message}`, true);
    return;
  }
  if (gen !== state.gen) return; // another page was opened meanwhile
  state.endpoint = ep;
  state.deployments = deployments;
  renderDetails();
  applyEndpointState();
  fillSelect($("test-deployment"), true);
  fillSelect($("logs-deployment"), true);
  fillSelect($("rollout-to"), false);
  fillSelect($("data-deployment"), true);
  if (state.tab === "consume") renderConsume();
}

function renderDetails() {
  const ep = state.endpoint;
  $("endpoint-details").hidden = !ep;
  if (!ep) return;
  $("ep-scoring-uri").textContent = ep.scoring_uri;
  $("ep-auth-mode").textContent = ep.auth_mode;
  $("ep-provisioning-state").textContent = ep.provisioning_state;
  $("ep-traffic").textContent = splitText(ep.traffic);
  $("ep-mirror-traffic").textContent = splitText(ep.mirror_traffic);
  const cards = $("deployment-cards");
  const editing = cards.querySelector("form.scale");
  if (editing) return; // keep the user's edit; the next refresh after it redraws
  // Redraw only what changed, so a button the user is about to press stays the same element.
  const key = JSON.stringify([state.deployments, ep.traffic, ep.mirror_traffic]);
  if (key === cards.dataset.drawn) return;
  cards.dataset.drawn = key;
  cards.replaceChildren(...state.deployments.map(card));
}

function hookOf(d) {
  const cc = d.code_configuration;
  if (cc && cc.scoring_script) return cc.scoring_script.endsWith(".py") ? `Python (${cc.scoring_script})` : cc.scoring_script;
  return "ONNX (built-in)";
}

function card(d) {
  const n = d.name;
  const inst = d.instances || {};
  const rs = d.request_settings || {};
  const dl = el("dl", { class: "facts" });
  const row = (label, value, id) => {
    dl.append(el("dt", { text: label }));
    const dd = el("dd", { text: value });
    if (id) dd.id = id;
    dl.append(dd);
    return dd;
  };
  // A registered model shows as its reference (azureml:NAME:VERSION), a folder as its path.
  row("Model", (d.model && (d.model.reference || d.model.path)) || "", "model-of-" + n);
  row("Scoring hook", hookOf(d));
  row("Instances", `${inst.ready || 0} ready of ${d.instance_count}`, "instances-" + n);
  const st = row("State", d.provisioning_state, "state-" + n);
  st.className = "state-" + d.provisioning_state;
  row("Traffic", `${(state.endpoint.traffic || {})[n] || 0}%` + ((state.endpoint.mirror_traffic || {})[n] ? `, mirror ${state.endpoint.mirror_traffic[n]}%` : ""), "traffic-of-" + n);
  row("Request settings", `timeout ${rs.request_timeout_ms} ms, ${rs.max_concurrent_requests_per_instance} concurrent per instance`);
  // Azure's data_collector (issue 28): what is collected, and what was written or lost.
  const dcs = d.data_collector_status;
  if (d.data_collector) {
    const on = Object.entries(d.data_collector.collections || {})
      .filter(([, c]) => c && String(c.enabled).toLowerCase() === "true").map(([name]) => name);
    const counts = dcs ? `; ${dcs.written} written, ${dcs.dropped} dropped, ${dcs.failed} refused by the disk` : "";
    const rate = d.data_collector.sampling_rate === undefined ? 1 : d.data_collector.sampling_rate;
    row("Data collection", (on.length ? `${on.join(", ")} at sampling rate ${rate}` : "nothing on") + counts, "data-of-" + n)
      .className = dcs && (dcs.failed || dcs.dropped) ? "error" : "";
  }
  // Adaptive batching (issue 29): the settings, and the rows per run of the last minute.
  if (d.batching) {
    const bs = d.batching_status;
    const recent = bs && bs.recent_runs
      ? `; ${bs.recent_runs} run${bs.recent_runs === 1 ? "" : "s"} in the last minute, ${bs.mean_batch_size.toFixed(1)} rows per run on average`
      : "; no runs in the last minute";
    row("Batching", `up to ${d.batching.max_batch_size} rows per run, waiting at most ${d.batching.max_delay_us || 0} µs` + recent, "batching-of-" + n);
  }
  if (d.error) row("Error", studioTerms(d.error), "error-" + n).className = "error";
  const edit = el("button", { id: "edit-" + n, class: "edit", type: "button", title: "Edit instance count", "aria-label": `Edit the instance count of ${n}` }, "✎");
  edit.addEventListener("click", () => editScale(d));
  const del = el("button", { id: "delete-" + n, type: "button", class: "danger", "aria-label": `Delete deployment ${n}` }, "Delete");
  del.addEventListener("click", () => confirmDelete(n));
  return el("article", { class: "card", id: "card-" + n }, el("h3", {}, el("span", { text: n }), edit), dl, el("div", { class: "actions" }, del));
}

function editScale(d) {
  const c = $("card-" + d.name);
  const input = el("input", { id: "scale-input-" + d.name, type: "number", min: "1", max: "256", value: String(d.instance_count), "aria-label": "Instance count" });
  const save = el("button", { id: "scale-save-" + d.name, type: "submit" }, "Save");
  const cancel = el("button", { id: "scale-cancel-" + d.name, type: "button" }, "Cancel");
  const err = el("p", { class: "error", id: "scale-error-" + d.name, role: "alert" });
  const form = el("form", { class: "scale" }, el("label", { for: input.id, text: "Instance count" }), input, el("div", { class: "actions" }, save, cancel), err);
  cancel.addEventListener("click", () => { form.remove(); refresh(); });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("PATCH", depPath(d.name), { instance_count: Number(input.value) });
      say(`Scaling ${d.name} to ${input.value} instances.`);
      form.remove();
      refresh();
    } catch (x) {
      err.textContent = x.message;
    }
  });
  c.append(form);
  input.focus();
  input.select();
}

function fillSelect(select, preselectFirst) {
  const names = state.deployments.map((d) => d.name);
  const current = select.value;
  if ([...select.options].map((o) => o.value).join() === names.join()) return;
  select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
  if (names.includes(current)) select.value = current; else if (preselectFirst && names.length) select.value = names[0];
}

$("refresh").addEventListener("click", refresh);

/** The name an endpoint document (endpoint.yml, or the same as JSON) gives. */
function endpointNameOf(text) {
  const trimmed = text.trim();
  if (trimmed.startsWith("{")) {
    try {
      const doc = JSON.parse(trimmed);
      return doc && typeof doc.name === "string" ? doc.name : "";
    } catch (_) { return ""; }
  }
  return nameFromYaml(text);
}

/** Why `name` cannot be a new endpoint's (an endpoint `endpoints` lists has it, regardless of
 * case), or "". */
function takenEndpoint(name, endpoints) {
  const taken = (endpoints || state.endpoints || []).find((e) => e.name.toLowerCase() === name.toLowerCase());
  return taken ? `Endpoint ${taken.name} exists already (names are unique regardless of case): open it from the list, or pick another name.` : "";
}

// Creates the endpoint beside the others (PUT /v1/endpoints/NAME) and opens its page. A name
// the list already has is refused here: that PUT would replace the endpoint's settings.
$("create-endpoint").addEventListener("click", async () => {
  const err = $("create-error");
  err.hidden = true;
  const text = $("endpoint-yaml").value;
  const name = endpointNameOf(text);
  const fail = (message) => { err.textContent = message; err.hidden = false; };
  if (!name) return fail("Give the endpoint a name: the document's name: field.");
  const taken = takenEndpoint(name);
  if (taken) return fail(taken);
  try {
    const r = await api("PUT", "/v1/endpoints/" + seg(name), text, text.trim().startsWith("{") ? "application/json" : "application/yaml");
    go(name, false, r.status === 201 ? `Endpoint ${name} created.` : `Endpoint ${name} updated.`);
  } catch (e) { fail(e.message); }
});

// ---------- update traffic ----------

$("update-traffic").addEventListener("click", () => {
  const ep = state.endpoint;
  const fields = $("traffic-fields");
  fields.replaceChildren(...state.deployments.map((d) => trafficRow("traffic-" + d.name, d.name, (ep.traffic || {})[d.name] || 0)));
  const mirror = Object.entries(ep.mirror_traffic || {}).find(([, w]) => w > 0);
  // A Failed deployment cannot score copies: it is listed (so the page says why it is not
  // offered) but cannot be picked, and is never the one preselected.
  const failed = (d) => d.provisioning_state === "Failed";
  const sel = $("mirror-deployment");
  sel.replaceChildren(
    el("option", { value: "", text: "choose a deployment", disabled: "" }),
    ...state.deployments.map((d) => {
      const o = el("option", { value: d.name, text: failed(d) ? `${d.name} (Failed)` : d.name });
      o.disabled = failed(d);
      return o;
    }),
  );
  $("mirror-enable").checked = !!mirror;
  const target = mirror
    ? state.deployments.find((d) => d.name === mirror[0] && !failed(d))
    : state.deployments.find((d) => !failed(d) && !((ep.traffic || {})[d.name] > 0));
  sel.value = target ? target.name : "";
  $("mirror-percent").value = mirror ? String(mirror[1]) : "10";
  syncMirror();
  showTotal($("traffic-fields"), $("traffic-total"));
  $("traffic-error").hidden = true;
  $("traffic-dialog").showModal();
  const first = fields.querySelector("input");
  if (first) first.focus();
});

function syncMirror() {
  const on = $("mirror-enable").checked;
  $("mirror-deployment").disabled = !on;
  $("mirror-percent").disabled = !on;
}
$("mirror-enable").addEventListener("change", syncMirror);

/** One deployment's live percentage, in Update traffic and in the wizard's Live traffic. */
function trafficRow(id, deployment, value) {
  return el("div", { class: "traffic-row" }, el("label", { for: id, text: deployment }),
    el("input", { id, type: "number", min: "0", max: "100", value: String(value), "data-deployment": deployment }));
}

/** The split the rows of `fields` give ({deployment: percent}). */
function splitOf(fields) {
  const traffic = {};
  for (const input of fields.querySelectorAll("input")) traffic[input.dataset.deployment] = Number(input.value);
  return traffic;
}

/** The live percentages' running total, which the control plane wants at 0 or 100; true when
 * it is. */
function showTotal(fields, out) {
  const total = Object.values(splitOf(fields)).reduce((s, w) => s + (w || 0), 0);
  const ok = total === 0 || total === 100;
  out.textContent = `Total: ${total}%` + (ok ? "" : " (must be 0 or 100)");
  out.className = ok ? "" : "bad";
  return ok;
}
$("traffic-fields").addEventListener("input", () => showTotal($("traffic-fields"), $("traffic-total")));
$("traffic-cancel").addEventListener("click", () => $("traffic-dialog").close());

$("traffic-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const traffic = splitOf($("traffic-fields"));
  const mirror_traffic = {};
  if ($("mirror-enable").checked && !$("mirror-deployment").value) {
    const err = $("traffic-error");
    err.textContent = "Choose the deployment that gets the mirrored copies, or turn off “Enable mirrored traffic”.";
    err.hidden = false;
    $("mirror-deployment").focus();
    return;
  }
  if ($("mirror-enable").checked) mirror_traffic[$("mirror-deployment").value] = Number($("mirror-percent").value);
  else for (const [n, w] of Object.entries(state.endpoint.mirror_traffic || {})) if (w > 0) mirror_traffic[n] = 0;
  try {
    await api("PATCH", epPath(), { traffic, mirror_traffic });
    $("traffic-dialog").close();
    say("Traffic updated: " + splitText(traffic) + (Object.values(mirror_traffic).some((w) => w > 0) ? "; mirror " + splitText(mirror_traffic) : ""));
    refresh();
  } catch (x) {
    const err = $("traffic-error");
    err.textContent = x.message;
    err.hidden = false;
  }
});

// ---------- add deployment ----------

$("add-deployment").addEventListener("click", () => {
  $("add-progress").textContent = "";
  $("add-error").hidden = true;
  $("add-base").removeAttribute("aria-invalid");
  $("add-submit").disabled = false;
  $("add-dialog").showModal();
  $("add-file").focus();
});
$("add-cancel").addEventListener("click", () => $("add-dialog").close());

function nameFromYaml(text) {
  const m = /^name:\s*["']?([A-Za-z][-A-Za-z0-9]*)/m.exec(text);
  return m ? m[1] : "";
}

$("add-file").addEventListener("change", async () => {
  const f = $("add-file").files[0];
  if (!f) return;
  $("add-yaml").value = await f.text();
  $("add-name").value = nameFromYaml($("add-yaml").value);
});
$("add-yaml").addEventListener("input", () => { if (!$("add-name").dataset.touched) $("add-name").value = nameFromYaml($("add-yaml").value); });
$("add-name").addEventListener("input", () => { $("add-name").dataset.touched = "1"; });
$("add-base").addEventListener("input", () => $("add-base").removeAttribute("aria-invalid"));

// The fields whose relative paths the server resolves against `?base_dir=` (CONTRACT §9,
// "Studio"); a browser never learns a picked file's folder, so the user has to type it.
const PATH_FIELDS = ["model.path", "code_configuration.code", "environment.conda_file", "environment.python"];

/**
 * The path fields of a deployment document (JSON, or the block-style YAML the samples use)
 * that are relative: [["model.path", "../../model-1/model/"], ...]. Only what is needed to
 * point at the folder field; the server parses the document for real.
 */
function relativePaths(text) {
  const found = {};
  const trimmed = text.trim();
  if (trimmed.startsWith("{")) {
    let doc = null;
    try { doc = JSON.parse(trimmed); } catch (_) { return []; }
    for (const f of PATH_FIELDS) {
      const v = f.split(".").reduce((o, k) => (o && typeof o === "object" ? o[k] : undefined), doc);
      if (typeof v === "string") found[f] = v;
    }
  } else {
    const stack = []; // [indent, key] of the mappings the current line is inside
    for (const raw of text.split(/\r?\n/)) {
      const m = /^( *)([A-Za-z_$][\w$-]*)\s*:(?:\s+(.*?))?\s*$/.exec(raw);
      if (!m) continue;
      const indent = m[1].length;
      while (stack.length && stack[stack.length - 1][0] >= indent) stack.pop();
      const key = [...stack.map((s) => s[1]), m[2]].join(".");
      const value = (m[3] || "").replace(/\s+#.*$/, "");
      if (value === "") stack.push([indent, m[2]]);
      else found[key] = value.replace(/^(["'])(.*)\1$/, "$2");
    }
  }
  return PATH_FIELDS.filter((f) => {
    const v = found[f];
    if (!v || v.startsWith("/") || /^[A-Za-z][A-Za-z0-9+.-]*:/.test(v)) return false; // absolute, azureml:, https:
    return f !== "environment.python" || v.includes("/"); // a bare interpreter name is looked up on PATH
  }).map((f) => [f, found[f]]);
}

const FOLDER_FIELD = "“Folder of the YAML file”";

function folderProblem(err, text) {
  const base = $("add-base");
  base.setAttribute("aria-invalid", "true");
  base.focus();
  err.textContent = text;
  err.hidden = false;
}

$("add-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const err = $("add-error");
  const progress = $("add-progress");
  err.hidden = true;
  const name = $("add-name").value.trim() || nameFromYaml($("add-yaml").value);
  if (!name) { err.textContent = "Give the deployment a name (the YAML's name: or the Name field)."; err.hidden = false; return; }
  const rel = relativePaths($("add-yaml").value);
  const base = $("add-base").value.trim();
  const listed = rel.map(([f, v]) => `${f} ${v}`).join(", ");
  if (rel.length && !base) {
    const picked = $("add-file").files[0];
    const file = picked ? picked.name : "the YAML file";
    folderProblem(err, `This YAML has relative paths (${listed}), and they resolve against the folder that holds ${file}, which the browser does not tell this page: type that folder's full path (starting with /) in ${FOLDER_FIELD}.`);
    return;
  }
  if (base && !base.startsWith("/")) {
    folderProblem(err, `${FOLDER_FIELD} must be a full path starting with /, got ${base}.`);
    return;
  }
  // A path the server could not find, once resolved against the folder the user typed.
  const pathHint = (message) => rel.length && /cannot be read|cannot be listed|does not exist|not found|no such file|is not a file|not a folder/i.test(message)
    ? ` — the relative paths (${listed}) were resolved against ${FOLDER_FIELD} (${base}): check that it is the folder the YAML file is in.`
    : "";
  const q = new URLSearchParams();
  if ($("add-all-traffic").checked) q.set("all_traffic", "true");
  if (base) q.set("base_dir", base);
  const path = depPath(name);
  $("add-submit").disabled = true;
  try {
    await api("PUT", path + (q.toString() ? "?" + q : ""), $("add-yaml").value, "application/yaml");
    refresh();
    await waitDeployment(path, (d, secs) => {
      const why = d.error ? studioTerms(d.error) : "";
      progress.textContent = `${name}: ${d.provisioning_state} (${secs} s)` + (why ? " — " + why + pathHint(why) : "");
      progress.className = "state-" + d.provisioning_state;
    });
    refresh();
  } catch (x) {
    const hint = pathHint(x.message);
    if (hint) folderProblem(err, x.message + hint);
    else { err.textContent = x.message; err.hidden = false; }
  } finally {
    $("add-submit").disabled = false;
  }
});

/** Follows deployment `path` (GET ?wait=2 in a loop) until its operation ends, Succeeded or
 * Failed, and answers its last read. `onState(deployment, seconds)` is called (and awaited)
 * after each read. */
async function waitDeployment(path, onState) {
  const started = performance.now();
  for (;;) {
    const d = (await api("GET", path + "?wait=2")).json;
    await onState(d, ((performance.now() - started) / 1000).toFixed(0));
    if (d.provisioning_state === "Succeeded" || d.provisioning_state === "Failed") return d;
  }
}

// ---------- delete ----------

let pendingDelete = null;

function confirmDelete(name) {
  pendingDelete = name;
  $("confirm-title").textContent = name ? "Delete deployment" : "Delete endpoint";
  $("confirm-text").textContent = name
    ? `Delete deployment ${name}? Its instances stop and its logs go.`
    : `Delete endpoint ${state.endpoint.name} and all its deployments?`;
  $("confirm-error").hidden = true;
  $("confirm-dialog").showModal();
  $("confirm-no").focus();
}
$("delete-endpoint").addEventListener("click", () => confirmDelete(null));
$("confirm-no").addEventListener("click", () => $("confirm-dialog").close());
$("confirm-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const endpoint = state.name;
  try {
    const r = await api("DELETE", pendingDelete ? depPath(pendingDelete) : epPath());
    $("confirm-dialog").close();
    const message = (r.json && r.json.message) || "Deleted.";
    if (pendingDelete) { say(message); refresh(); return; }
    // The endpoint's page is gone with it: back to the list (in place of this page's entry).
    if (state.endpoints) state.endpoints = state.endpoints.filter((e) => e.name !== endpoint);
    if (state.name === endpoint) go(null, true, message); else say(message);
  } catch (x) {
    const err = $("confirm-error");
    err.textContent = x.message;
    err.hidden = false;
  }
});

// ---------- test ----------

$("test-run").addEventListener("click", async () => {
  const dep = $("test-deployment").value;
  const started = performance.now();
  const q = dep ? "?deployment_name=" + encodeURIComponent(dep) : "";
  const gen = state.gen;
  let status, servedBy, text;
  try {
    const r = await api("POST", epPath("/invoke") + q, $("test-input").value);
    status = r.status; servedBy = r.headers.get("azureml-model-deployment"); text = r.text;
  } catch (x) {
    status = x.status; servedBy = "—"; text = x.message;
  }
  if (gen !== state.gen) return; // the answer of an endpoint whose page was left
  $("test-result").hidden = false;
  $("test-status").textContent = String(status);
  $("test-served-by").textContent = servedBy || "—";
  $("test-time").textContent = `${(performance.now() - started).toFixed(1)} ms`;
  $("test-output").textContent = text;
});

// ---------- logs ----------

async function refreshLogs() {
  const dep = $("logs-deployment").value;
  if (!dep) { $("logs-output").textContent = ""; return; }
  const lines = Math.max(1, Math.min(10000, Number($("logs-lines").value) || 100));
  const gen = state.gen;
  try {
    const r = await api("GET", depPath(dep, `/logs?lines=${lines}`));
    if (gen !== state.gen) return;
    const out = $("logs-output");
    const atBottom = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
    out.replaceChildren(...r.text.split("\n").filter((l) => l).map((l) => {
      const mirror = /\bmirror\b/i.test(l);
      return el("span", mirror ? { class: "mirror-line", text: "[mirror] " + l + "\n" } : { text: l + "\n" });
    }));
    if (atBottom) out.scrollTop = out.scrollHeight;
  } catch (x) {
    if (gen === state.gen) $("logs-output").textContent = x.message;
  }
}
$("logs-deployment").addEventListener("change", refreshLogs);
$("logs-lines").addEventListener("change", refreshLogs);

// ---------- data (issue 28) ----------

async function refreshData() {
  const dep = $("data-deployment").value;
  const err = $("data-error");
  if (!dep) { $("data-status").textContent = ""; $("data-records").hidden = true; return; }
  const collection = $("data-collection").value;
  const gen = state.gen;
  try {
    const r = (await api("GET", depPath(dep, `/collected?limit=50&collection=${encodeURIComponent(collection)}`))).json;
    if (gen !== state.gen) return;
    err.hidden = true;
    const st = r.status;
    const shown = state.deployments.find((d) => d.name === dep);
    const on = shown && shown.data_collector && shown.data_collector.collections ? Object.keys(shown.data_collector.collections) : [];
    const select = $("data-collection");
    const names = ["", ...new Set([...on.map((n) => n.toLowerCase()), ...(st ? st.collections : [])])];
    if (select.dataset.names !== names.join(",")) {
      select.dataset.names = names.join(",");
      select.replaceChildren(...names.map((n) => el("option", { value: n, text: n || "all" })));
      select.value = collection;
    }
    $("data-status").textContent = st
      ? `Collecting ${st.collections.join(", ")} at sampling rate ${st.sampling_rate}, files by ${st.rolling_rate} in ${st.folder}: ${st.written} written, ${st.dropped} dropped, ${st.failed} refused by the disk` +
        (st.last_error ? `; last disk error: ${st.last_error.message} (${st.last_error.at})` : "")
      : `${dep} has no data_collector with a collection on; records it wrote before are shown.`;
    const rows = $("data-rows");
    const key = JSON.stringify(r.records.map((x) => x.id));
    $("data-records").hidden = r.records.length === 0;
    if (rows.dataset.drawn === key) return;
    rows.dataset.drawn = key;
    rows.replaceChildren(...r.records.map((x) => {
      const data = x.data !== undefined ? JSON.stringify(x.data) : x.data_base64 !== undefined ? "(binary, " + x.contentlength + " bytes)" : "";
      return el("tr", { class: x.role === "mirror" ? "mirror-line" : "" },
        el("td", { text: x.time || "" }), el("td", { text: x.collection || "" }), el("td", { text: x.role || "" }),
        el("td", { text: x.xrequestid || "" }), el("td", { text: x.status === undefined ? "" : String(x.status) }),
        el("td", { text: data.length > 200 ? data.slice(0, 200) + "…" : data }));
    }));
  } catch (x) {
    if (gen !== state.gen) return;
    err.textContent = x.message;
    err.hidden = false;
  }
}
$("data-deployment").addEventListener("change", () => { $("data-collection").value = ""; refreshData(); });
$("data-collection").addEventListener("change", refreshData);

// ---------- monitoring ----------

function quantile(buckets, q) {
  const total = buckets.reduce((s, b) => s + b.count, 0);
  if (!total) return null;
  let seen = 0, lower = 0;
  for (const b of buckets) {
    const upper = b.le === null ? lower * 2 : b.le;
    if (seen + b.count >= q * total) return (lower + (upper - lower) * ((q * total - seen) / b.count)) * 1000;
    seen += b.count;
    lower = upper;
  }
  return lower * 1000;
}

function diffBuckets(now, before) {
  return now.map((b, i) => ({ le: b.le, count: b.count - ((before && before[i] && before[i].count) || 0) }));
}

async function pollMetrics() {
  if (state.view !== "endpoint" || !state.endpoint) return;
  const gen = state.gen;
  const name = state.name;
  const base = epPath();
  let m;
  try { m = (await api("GET", base + "/metrics")).json; } catch (_) { return; }
  if (gen !== state.gen || !m) return;
  // Only this endpoint's deployments (the route answers no other; each row names its own).
  m = { time_ms: m.time_ms, deployments: (m.deployments || []).filter((d) => d.endpoint === name) };
  const prev = state.metrics;
  state.metrics = m;
  if (prev && prev.time_ms) {
    const dt = (m.time_ms - prev.time_ms) / 1000;
    for (const d of m.deployments) {
      const p = (prev.deployments || []).find((x) => x.name === d.name);
      if (!p || dt <= 0) continue;
      const n = d.live.requests - p.live.requests;
      const errors = d.live.errors - p.live.errors;
      const b = diffBuckets(d.live.buckets, p.live.buckets);
      const s = (state.series[d.name] = state.series[d.name] || []);
      s.push({ t: m.time_ms, rate: n / dt, mirrorRate: (d.mirror.requests - p.mirror.requests) / dt, p50: quantile(b, 0.5), p99: quantile(b, 0.99), err: n ? (100 * errors) / n : null });
      if (s.length > HISTORY) s.shift();
    }
  }
  const mirror = Object.entries(state.endpoint.mirror_traffic || {}).find(([, w]) => w > 0);
  if (mirror) {
    try {
      const c = (await api("GET", base + "/deployments/" + seg(mirror[0]) + "/comparison")).json;
      if (gen !== state.gen) return;
      state.mirror.push({ t: m.time_ms, report: c });
      if (state.mirror.length > HISTORY) state.mirror.shift();
    } catch (_) { /* deleted meanwhile */ }
  } else {
    state.mirror = [];
  }
  if (state.tab === "monitoring") drawCharts();
}

function drawChart(canvas, lines, unit) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 48, B = 22, T = 10, R = 10;
  ctx.clearRect(0, 0, W, H);
  const pts = lines.flatMap((l) => l.points).filter((p) => p[1] !== null && isFinite(p[1]));
  const tMax = Date.now(), tMin = tMax - HISTORY * POLL_MS;
  let yMax = Math.max(0, ...pts.map((p) => p[1]));
  if (yMax <= 0) yMax = 1;
  const mag = Math.pow(10, Math.floor(Math.log10(yMax)));
  yMax = Math.ceil(yMax / mag) * mag;
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#d0d7de"; ctx.fillStyle = "#59636e"; ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = T + ((H - T - B) * i) / 4;
    ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(W - R, y); ctx.stroke();
    const v = yMax * (1 - i / 4);
    ctx.fillText(v >= 100 ? v.toFixed(0) : v.toPrecision(2), 4, y + 4);
  }
  ctx.fillText(`last ${(HISTORY * POLL_MS) / 1000} s${unit ? " · " + unit : ""}`, L, H - 6);
  if (!pts.length) { ctx.fillText("no requests yet", L + 10, T + 20); return; }
  for (const l of lines) {
    ctx.strokeStyle = l.color; ctx.lineWidth = 2; ctx.setLineDash(l.dash || []);
    ctx.beginPath();
    let started = false;
    for (const [t, v] of l.points) {
      if (v === null || !isFinite(v)) { started = false; continue; }
      const x = L + ((W - L - R) * (t - tMin)) / (tMax - tMin);
      const y = T + (H - T - B) * (1 - v / yMax);
      if (started) ctx.lineTo(x, y); else { ctx.moveTo(x, y); started = true; }
    }
    ctx.stroke();
    // A dot per reading, so a lone point (one busy interval) shows too.
    ctx.fillStyle = l.color;
    for (const [t, v] of l.points) {
      if (v === null || !isFinite(v)) continue;
      ctx.beginPath();
      ctx.arc(L + ((W - L - R) * (t - tMin)) / (tMax - tMin), T + (H - T - B) * (1 - v / yMax), 2.5, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
  ctx.setLineDash([]);
}

function drawCharts() {
  const names = Object.keys(state.series).filter((n) => state.deployments.some((d) => d.name === n));
  const color = (n) => COLORS[state.deployments.findIndex((d) => d.name === n) % COLORS.length];
  const of = (n, k) => state.series[n].map((s) => [s.t, s[k]]);
  drawChart($("chart-rate"), names.flatMap((n) => [{ color: color(n), points: of(n, "rate") }, { color: color(n), dash: [4, 3], points: of(n, "mirrorRate") }]), "dashed: mirror copies");
  drawChart($("chart-latency"), names.flatMap((n) => [{ color: color(n), points: of(n, "p50") }, { color: color(n), dash: [4, 3], points: of(n, "p99") }]), "solid p50, dashed p99");
  drawChart($("chart-errors"), names.map((n) => ({ color: color(n), points: of(n, "err") })), "");
  $("chart-legend").replaceChildren(...names.map((n) => { const s = el("span", { text: n, id: "legend-" + n }); s.style.setProperty("--c", color(n)); return s; }));
  const fig = $("mirror-figure");
  fig.hidden = !state.mirror.length;
  if (state.mirror.length) {
    const last = state.mirror[state.mirror.length - 1].report;
    const share = last.mirror || {};
    $("mirror-summary").textContent = `${last.deployment} · ${last.mirror_percent}% · agreement ${last.agreement_ratio === null || last.agreement_ratio === undefined ? "—" : (100 * last.agreement_ratio).toFixed(1) + "%"} · max |diff| ${typeof last.max_abs_diff === "number" ? last.max_abs_diff.toPrecision(4) : "—"} · dropped ${share.dropped ?? 0} of ${share.wanted ?? 0}`;
    drawChart($("chart-mirror"), [
      { color: "#1a7f37", points: state.mirror.map((m) => [m.t, m.report.agreement_ratio === null || m.report.agreement_ratio === undefined ? null : 100 * m.report.agreement_ratio]) },
      { color: "#cf222e", dash: [4, 3], points: state.mirror.map((m) => [m.t, m.report.mirror && m.report.mirror.wanted ? (100 * m.report.mirror.dropped) / m.report.mirror.wanted : 0]) },
    ], "agreement % (solid), dropped % (dashed)");
  }
}

// ---------- consume ----------

function renderConsume() {
  const ep = state.endpoint;
  if (!ep) return;
  const uri = ep.scoring_uri;
  $("consume-uri").textContent = uri;
  const key = state.keyShown ? $("consume-key").textContent : "<key>";
  $("snippet-curl").textContent = `curl -X POST '${uri}' \\\n  -H 'Authorization: Bearer ${key}' \\\n  -H 'Content-Type: application/json' \\\n  -d @sample-request.json`;
  $("snippet-python").textContent = `import json, urllib.request\n\nbody = json.dumps({"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}).encode()\nreq = urllib.request.Request(\n    "${uri}", body,\n    {"Content-Type": "application/json", "Authorization": "Bearer ${key}"},\n)\nprint(urllib.request.urlopen(req).read().decode())`;
}

$("show-key").addEventListener("click", async () => {
  if (state.keyShown) {
    state.keyShown = false;
    $("consume-key").textContent = "••••••••";
    $("show-key").textContent = "Show key";
    renderConsume();
    return;
  }
  const gen = state.gen;
  try {
    const k = (await api("GET", epPath("/keys"))).json;
    if (gen !== state.gen) return;
    $("consume-key").textContent = k.primaryKey || k.accessToken;
    state.keyShown = true;
    $("show-key").textContent = "Hide key";
    renderConsume();
  } catch (x) { say(x.message, true); }
});

// ---------- rollout ----------
// The control plane validates the plan (CONTRACT §9, "Guarded rollout"); the page sends what was
// typed, leaves empty gates out (they are off or take the server's default) and shows the
// server's own message when it refuses.

const ROLLOUT_GATES = [
  ["min_requests", "rollout-min-requests"],
  ["max_error_rate", "rollout-max-error-rate"],
  ["max_p99_ms", "rollout-max-p99-ms"],
  ["max_p99_ratio", "rollout-max-p99-ratio"],
  ["min_agreement", "rollout-min-agreement"],
  ["confidence", "rollout-confidence"],
  ["max_error_increase", "rollout-max-error-increase"],
  ["max_extensions", "rollout-max-extensions"],
  ["max_latency_increase", "rollout-max-latency-increase"],
];

function fmt(v, digits) {
  return v === null || v === undefined ? "—" : typeof v === "number" ? String(Number(v.toFixed(digits === undefined ? 4 : digits))) : String(v);
}

function gatesText(g) {
  if (!g) return "—";
  const parts = [`${g.requests} requests`, `${g.errors} errors`, `error rate ${fmt(g.error_rate)}`, `p99 ${fmt(g.p99_ms, 1)} ms`];
  if (g.live_p99_ms !== null && g.live_p99_ms !== undefined) parts.push(`live p99 ${fmt(g.live_p99_ms, 1)} ms`, `p99 ratio ${fmt(g.p99_ratio, 2)}`);
  if (g.compared_pairs !== null && g.compared_pairs !== undefined) parts.push(`agreement ${fmt(g.agreement)} of ${g.compared_pairs} pairs`);
  return parts.join(" · ");
}

function renderRollout(r) {
  $("rollout-none").hidden = !!r;
  $("rollout-view").hidden = !r;
  if (!r) return;
  const active = r.status === "running" || r.status === "paused";
  const st = r.step || {};
  $("rollout-target").textContent = r.to;
  $("rollout-status").textContent = r.status;
  $("rollout-status").className = "rollout-" + r.status;
  $("rollout-step").textContent = `${st.step} (${st.index + 1} of ${st.of})`;
  $("rollout-time-left").textContent = active && st.remaining_ms !== undefined ? `${(st.remaining_ms / 1000).toFixed(1)} s` + (r.status === "paused" ? " (paused)" : "") : "—";
  $("rollout-gates").textContent = active ? gatesText(st.gates) : "—";
  $("rollout-traffic").textContent = splitText(st.traffic) + (Object.values(st.mirror_traffic || {}).some((w) => w > 0) ? "; mirror " + splitText(st.mirror_traffic) : "");
  $("rollout-passed").textContent = (r.passed || []).map((p) => `${p.step}: ${gatesText(p.gates)}`).join("\n") || "none yet";
  const rb = r.rollback;
  $("rollout-rollback-label").hidden = !rb;
  $("rollout-rollback").hidden = !rb;
  $("rollout-rollback").textContent = rb ? `${rb.message}; traffic went back to ${splitText(rb.traffic)} at ${rb.at}` : "";
  $("rollout-pause").disabled = r.status !== "running";
  $("rollout-resume").disabled = r.status !== "paused";
  $("rollout-abort").disabled = !active;
  renderNeeds(r.needs);
  renderEvidence(r.judged || []);
  const events = $("rollout-events");
  const key = JSON.stringify(r.events);
  if (events.dataset.drawn !== key) {
    events.dataset.drawn = key;
    events.replaceChildren(...(r.events || []).map((e) => el("li", {}, el("time", { text: e.at }), e.message)));
  }
}

// One side of a gate: errors of answers, or the latency sample's median.
function sideText(side) {
  if (!side) return "—";
  if (side.errors !== undefined && side.errors !== null) return `${side.errors} errors of ${side.n}`;
  if (side.median_ms !== undefined && side.median_ms !== null) return `median ${fmt(side.median_ms, 3)} ms, p99 ${fmt(side.p99_ms, 3)} ms (n ${side.n})`;
  return `n ${side.n}`;
}

// What each step needs, said when the rollout started (issue 27): the answers per side the
// evidence gates need, how long that takes at the endpoint's rate, and whether it fits.
function renderNeeds(needs) {
  $("rollout-needs").hidden = !needs;
  if (!needs) return;
  const rows = $("rollout-needs-rows");
  const key = JSON.stringify(needs);
  if (rows.dataset.drawn === key) return;
  rows.dataset.drawn = key;
  $("rollout-needs-rate").textContent = "At the start, the endpoint served " +
    (needs.rate_per_second === null || needs.rate_per_second === undefined ? "at a rate not measured yet" : `${fmt(needs.rate_per_second, 1)} requests/s`) +
    `; the numbers pass a target no worse than the incumbent ${Math.round(needs.power * 100)}% of the time.`;
  rows.replaceChildren(...needs.steps.map((n) => el("tr", { class: n.fits === false ? "evidence-fail" : "" },
    el("td", { text: n.step }), el("td", { text: String(n.error_requests) }),
    el("td", { text: n.latency_requests === undefined || n.latency_requests === null ? "—" : String(n.latency_requests) }),
    el("td", { text: n.seconds === undefined || n.seconds === null ? "—" : `${fmt(n.seconds, 1)} s` }),
    el("td", { text: `${fmt(n.window_seconds, 1)} s` }),
    el("td", { text: n.note ? n.note : n.fits === true ? "yes" : n.fits === false ? "no: it will end inconclusive" : "—" }))));
}

// A row per judged window and gate (issue 27): what the evidence gate found, on both sides,
// and what the rollout did; a failing gate's row is marked.
function renderEvidence(judged) {
  $("rollout-no-evidence").hidden = judged.length > 0;
  $("rollout-evidence").hidden = judged.length === 0;
  const rows = $("rollout-evidence-rows");
  const key = JSON.stringify(judged);
  if (rows.dataset.drawn === key) return;
  rows.dataset.drawn = key;
  rows.replaceChildren(...judged.flatMap((w) => w.gates.map((g) => {
    const interval = g.interval ? `[${fmt(g.interval[0])}, ${fmt(g.interval[1])}]` : "—";
    const row = el("tr", { class: "evidence-" + g.outcome },
      el("td", { text: w.step }), el("td", { text: String(w.look) }), el("td", { text: g.gate }),
      el("td", { text: g.outcome }), el("td", { text: fmt(g.estimate) }), el("td", { text: interval }),
      el("td", { text: fmt(g.p_value) }), el("td", { text: fmt(g.limit) }),
      el("td", { text: sideText(g.target) }), el("td", { text: sideText(g.incumbent) }),
      el("td", { text: w.decision + (g.note ? " (" + g.note + ")" : "") }));
    return row;
  })));
}

async function refreshRollout() {
  if (!state.endpoint) { renderRollout(null); return; }
  const gen = state.gen;
  try {
    const r = (await api("GET", epPath("/rollout"))).json;
    if (gen === state.gen) renderRollout(r);
  } catch (x) {
    if (x.status === 404 && gen === state.gen) renderRollout(null);
  }
}

$("rollout-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const err = $("rollout-error");
  err.hidden = true;
  const body = { to: $("rollout-to").value, steps: $("rollout-steps").value.trim(), step_duration: $("rollout-step-duration").value.trim() };
  for (const [field, id] of ROLLOUT_GATES) {
    const v = $(id).value.trim();
    if (v !== "") body[field] = Number(v);
  }
  if ($("rollout-on-inconclusive").value) body.on_inconclusive = $("rollout-on-inconclusive").value;
  if ($("rollout-strict").checked) body.strict = true;
  try {
    const r = await api("POST", epPath("/rollout"), body);
    say(`Rollout to ${body.to} started: ${body.steps}, ${body.step_duration} a step.`);
    renderRollout(r.json);
    refresh();
  } catch (x) {
    err.textContent = x.message;
    err.hidden = false;
  }
});

for (const action of ["pause", "resume", "abort"]) {
  $("rollout-" + action).addEventListener("click", async () => {
    const err = $("rollout-error");
    err.hidden = true;
    const gen = state.gen;
    try {
      const r = (await api("POST", epPath("/rollout/" + action))).json;
      if (gen === state.gen) renderRollout(r);
      refresh();
    } catch (x) {
      err.textContent = x.message;
      err.hidden = false;
    }
  });
}

// ---------- menus (Register ▾, Deploy ▾) ----------

function closeMenus(except) {
  for (const b of document.querySelectorAll("[aria-haspopup=menu]")) {
    if (b === except) continue;
    b.setAttribute("aria-expanded", "false");
    $(b.getAttribute("aria-controls")).hidden = true;
  }
}

for (const b of document.querySelectorAll("[aria-haspopup=menu]")) {
  const menu = $(b.getAttribute("aria-controls"));
  b.addEventListener("click", () => {
    const open = b.getAttribute("aria-expanded") !== "true";
    closeMenus(b);
    b.setAttribute("aria-expanded", String(open));
    menu.hidden = !open;
    if (open) menu.querySelector("button").focus();
  });
  menu.addEventListener("click", () => closeMenus(null));
}
document.addEventListener("click", (e) => { if (!e.target.closest(".menu")) closeMenus(null); });
document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeMenus(null); });

// ---------- registered assets: shared bits ----------

function bytesText(n) {
  if (typeof n !== "number" || !isFinite(n)) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function timeText(t) {
  const d = new Date(t);
  return t && !isNaN(d) ? d.toLocaleString() : String(t || "—");
}

/** The files a file input holds, each as [path in the upload, File]: a folder's files under the
 * folder's own name (`model/sklearn_regression_model.pkl`, as the browser gives them). */
function pickedFiles(input) {
  return [...input.files].map((f) => [f.webkitRelativePath || f.name, f]);
}

function pickedText(files) {
  if (!files.length) return "Nothing picked yet.";
  const size = files.reduce((s, [, f]) => s + f.size, 0);
  const top = files[0][0].split("/")[0];
  const what = files.length === 1 && !files[0][0].includes("/") ? `File ${top}` : `Folder ${top}: ${files.length} file${files.length === 1 ? "" : "s"}`;
  return `${what}, ${bytesText(size)}`;
}

/**
 * Uploads `files` ([path, File], one top-level entry) as one upload (CONTRACT §11): POST
 * /v1/uploads, then one PUT of each file's bytes under its path (each segment encoded, the
 * slashes kept). Answers the upload's id; an upload that cannot finish is abandoned (DELETE).
 * `progress(text)` says how far it is.
 */
async function upload(files, progress) {
  const up = (await api("POST", "/v1/uploads")).json;
  const id = up.id;
  const total = files.reduce((s, [, f]) => s + f.size, 0);
  try {
    if (files.length > up.max_files) throw new Error(`${files.length} files picked: an upload holds at most ${up.max_files}.`);
    if (total > up.max_bytes) throw new Error(`${bytesText(total)} picked: an upload holds at most ${bytesText(up.max_bytes)}.`);
    let sent = 0;
    for (const [i, [path, file]] of files.entries()) {
      progress(`Uploading ${path} (${i + 1} of ${files.length}; ${bytesText(sent)} of ${bytesText(total)} sent)`);
      await api("PUT", "/v1/uploads/" + seg(id) + "/files/" + path.split("/").map(seg).join("/"), file, "application/octet-stream");
      sent += file.size;
    }
  } catch (x) {
    api("DELETE", "/v1/uploads/" + seg(id)).catch(() => { /* it expires anyway */ });
    throw x;
  }
  progress(`Uploaded ${files.length} file${files.length === 1 ? "" : "s"} (${bytesText(total)}).`);
  return id;
}

// ---------- models (#/models, #/models/NAME[/VERSION]) ----------

function modelRow(m) {
  const n = m.name;
  const href = "#/models/" + seg(n);
  const row = el("tr", { id: "model-row-" + n },
    el("th", { scope: "row" }, el("a", { href, id: "open-model-" + n, text: n })),
    el("td", { id: "model-version-" + n, text: m.version }),
    el("td", { id: "model-type-" + n, text: m.type }),
    el("td", { id: "model-size-" + n, text: bytesText(m.size_bytes) }),
    el("td", { id: "model-created-" + n, text: timeText(m.created_at) }));
  row.addEventListener("click", (e) => {
    if (e.target.closest("a") || String(window.getSelection())) return;
    goHash(href);
  });
  return row;
}

function renderModels() {
  const list = state.models || [];
  $("no-models").hidden = list.length > 0;
  $("models-table").hidden = !list.length;
  const rows = $("model-rows");
  const key = JSON.stringify(list);
  if (rows.dataset.drawn === key) return;
  rows.dataset.drawn = key;
  rows.replaceChildren(...list.map(modelRow));
}

async function refreshModels() {
  const gen = state.gen;
  let list;
  try {
    list = (await api("GET", "/v1/models")).json || [];
  } catch (e) {
    if (gen === state.gen) say("Cannot list the models: " + e.message, true);
    return;
  }
  if (gen !== state.gen) return;
  state.models = list;
  renderModels();
}

function clearModelView() {
  state.modelVersions = null;
  $("model-body").hidden = true;
  $("model-title").textContent = "";
  for (const id of ["model-id", "model-type", "model-description", "model-size", "model-created", "model-digest", "model-path"]) $(id).textContent = "";
  const rows = $("model-version-rows");
  rows.replaceChildren();
  delete rows.dataset.drawn;
}

/** The version the model page shows: the one the address names, else the latest (the list is
 * oldest first and leaves archived versions out). */
function shownVersion() {
  const versions = state.modelVersions || [];
  return state.modelVersion ? versions.find((v) => v.version === state.modelVersion) : versions[versions.length - 1];
}

async function refreshModel() {
  const gen = state.gen;
  const name = state.model;
  let versions;
  try {
    versions = (await api("GET", "/v1/models/" + seg(name) + "/versions")).json || [];
  } catch (e) {
    if (gen !== state.gen) return;
    // The server says which models exist (404, or 400 "not registered").
    if (e.status === 404 || e.status === 400) goHash("#/models", true, `Model ${name} does not exist: ${e.message}`);
    else say(`Cannot read model ${name}: ${e.message}`, true);
    return;
  }
  if (gen !== state.gen) return;
  state.modelVersions = versions;
  if (!shownVersion()) {
    const why = versions.length ? `Model ${name} has no version ${state.modelVersion} (versions: ${versions.map((v) => v.version).join(", ")}).` : `Every version of model ${name} is archived.`;
    goHash(versions.length ? "#/models/" + seg(name) : "#/models", true, why);
    return;
  }
  renderModel();
}

function renderModel() {
  const m = shownVersion();
  const versions = state.modelVersions || [];
  const key = JSON.stringify([versions, m.version]);
  const rows = $("model-version-rows");
  if (rows.dataset.drawn === key) return;
  rows.dataset.drawn = key;
  $("model-body").hidden = false;
  $("model-title").textContent = `${m.name} · version ${m.version}`;
  $("model-id").textContent = m.id;
  $("model-type").textContent = m.type;
  $("model-description").textContent = m.description || "—";
  $("model-size").textContent = `${bytesText(m.size_bytes)} in ${m.file_count} file${m.file_count === 1 ? "" : "s"}`;
  $("model-created").textContent = timeText(m.created_at);
  $("model-digest").textContent = m.digest;
  $("model-path").textContent = m.path;
  rows.replaceChildren(...versions.slice().reverse().map((v) => {
    const href = "#/models/" + seg(v.name) + "/" + seg(v.version);
    const row = el("tr", { id: "model-version-row-" + v.version, class: v.version === m.version ? "current" : "" },
      el("th", { scope: "row" }, el("a", { href, text: v.version })),
      el("td", { text: v.type }),
      el("td", { text: bytesText(v.size_bytes) }),
      el("td", { text: timeText(v.created_at) }),
      el("td", { text: v.description || "" }));
    if (v.version === m.version) row.setAttribute("aria-current", "true");
    row.addEventListener("click", (e) => { if (!e.target.closest("a")) goHash(href); });
    return row;
  }));
}

$("deploy-realtime").addEventListener("click", () => {
  const m = shownVersion();
  if (m) goHash("#/deploy?model=" + seg(m.name) + ":" + seg(m.version));
});

// Register → From local files: the folder (or file) is uploaded, then registered under the
// name given (CONTRACT §11); the store keeps its own copy.

let registerFiles = [];

function registerPicked(input, other) {
  registerFiles = pickedFiles(input);
  other.value = ""; // the last pick is the one registered
  $("register-picked").textContent = pickedText(registerFiles);
  $("register-error").hidden = true;
}

$("register-local").addEventListener("click", () => {
  registerFiles = [];
  for (const id of ["register-folder", "register-file", "register-name", "register-description"]) $(id).value = "";
  $("register-type").value = "custom_model";
  $("register-picked").textContent = pickedText([]);
  $("register-progress").textContent = "";
  $("register-error").hidden = true;
  $("register-submit").disabled = false;
  $("register-dialog").showModal();
  $("register-type").focus();
});
$("register-folder").addEventListener("change", () => registerPicked($("register-folder"), $("register-file")));
$("register-file").addEventListener("change", () => registerPicked($("register-file"), $("register-folder")));
$("register-cancel").addEventListener("click", () => $("register-dialog").close());

$("register-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const err = $("register-error");
  const progress = $("register-progress");
  err.hidden = true;
  const fail = (message, focus) => {
    err.textContent = message;
    err.hidden = false;
    if (focus) $(focus).focus();
  };
  const name = $("register-name").value.trim();
  if (!registerFiles.length) return fail("Pick the model's folder (Upload a folder) or its file first.", "register-folder");
  if (!name) return fail("Give the model a name.", "register-name");
  if (!ASSET_NAME.test(name)) return fail(`A model's name is 1 to 255 letters, digits, “-”, “_” and “.”, starting with a letter or digit; got ${name}.`, "register-name");
  $("register-submit").disabled = true;
  try {
    const id = await upload(registerFiles, (text) => { progress.textContent = text; });
    progress.textContent = `Registering ${name}…`;
    const body = { name, type: $("register-type").value, upload: id };
    const description = $("register-description").value.trim();
    if (description) body.description = description;
    const r = await api("POST", "/v1/models", body);
    const m = r.json;
    $("register-dialog").close();
    say(r.status === 201 ? `Model ${m.name} version ${m.version} registered (${bytesText(m.size_bytes)}).` : `Model ${m.name} version ${m.version} was registered already with the same files.`);
    refresh();
  } catch (x) {
    progress.textContent = "";
    fail(x.message);
  } finally {
    $("register-submit").disabled = false;
  }
});

// ---------- environments (#/environments) ----------

function packagesText(c) {
  const p = c.packages;
  return Array.isArray(p) ? p.join(", ") : String(p || "");
}

function renderEnvironments(registered) {
  const curatedRows = $("curated-rows");
  const ckey = JSON.stringify(state.curated);
  if (curatedRows.dataset.drawn !== ckey) {
    curatedRows.dataset.drawn = ckey;
    curatedRows.replaceChildren(...(state.curated || []).map((c) => el("tr", { id: "curated-row-" + c.name },
      el("th", { scope: "row", text: c.name }),
      el("td", { class: "uri", text: c.id }),
      el("td", { text: packagesText(c) }))));
  }
  $("no-environments").hidden = registered.length > 0;
  $("environments-table").hidden = !registered.length;
  const rows = $("environment-rows");
  const key = JSON.stringify(registered);
  if (rows.dataset.drawn === key) return;
  rows.dataset.drawn = key;
  rows.replaceChildren(...registered.map((v) => el("tr", { id: "environment-row-" + v.name },
    el("th", { scope: "row", text: v.name }),
    el("td", { text: v.version }),
    el("td", { class: "uri", text: v.image || "—" }),
    el("td", { text: v.conda_yaml ? "yes" : "—" }),
    el("td", { text: timeText(v.created_at) }))));
}

/** The curated environments (read once) and the registered ones (latest of each). */
async function readEnvironments() {
  if (!state.curated) state.curated = (await api("GET", "/v1/environments/curated")).json || [];
  return (await api("GET", "/v1/environments")).json || [];
}

async function refreshEnvironments() {
  const gen = state.gen;
  let registered;
  try {
    registered = await readEnvironments();
  } catch (e) {
    if (gen === state.gen) say("Cannot list the environments: " + e.message, true);
    return;
  }
  if (gen === state.gen) renderEnvironments(registered);
}

$("env-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const err = $("env-error");
  err.hidden = true;
  const fail = (message, focus) => {
    err.textContent = message;
    err.hidden = false;
    if (focus) $(focus).focus();
  };
  const name = $("env-name").value.trim();
  const image = $("env-image").value.trim();
  const conda = $("env-conda").files[0];
  if (!ASSET_NAME.test(name)) return fail("Give the environment a name: 1 to 255 letters, digits, “-”, “_” and “.”, starting with a letter or digit.", "env-name");
  if (!conda && !image) return fail("Pick its conda file, or name an image (or both).", "env-conda");
  const body = { name };
  if (conda) body.conda_file = await conda.text(); // the conda YAML's text (CONTRACT §11)
  if (image) body.image = image;
  const description = $("env-description").value.trim();
  if (description) body.description = description;
  $("env-create").disabled = true;
  try {
    const r = await api("POST", "/v1/environments", body);
    say(`Environment ${r.json.name} version ${r.json.version} ${r.status === 201 ? "created" : "was there already with the same content"}.`);
    for (const id of ["env-name", "env-conda", "env-image", "env-description"]) $(id).value = "";
    refresh();
  } catch (x) {
    fail(x.message);
  } finally {
    $("env-create").disabled = false;
  }
});

// ---------- Deploy → Real-time endpoint (#/deploy?model=NAME:VERSION) ----------
// Pages as Azure studio's: endpoint (new or existing), model, deployment (name and the two
// toggles), code + environment, compute, live traffic, review. Create uploads the code (POST
// /v1/uploads, then POST /v1/codes), creates the endpoint if it is new (PUT
// /v1/endpoints/NAME), then the deployment (PUT .../deployments/NAME, `model:
// azureml:NAME:VERSION`), follows it until it is ready (its state and log tail shown), sets the
// traffic, and opens the endpoint's page.

const WIZ_STEPS = ["endpoint", "model", "deployment", "code", "compute", "traffic", "review"];

// `gen` is the page's generation when the wizard opened (an answer for an earlier wizard is
// dropped); `reached` the furthest step shown; `codePath` the stored code of the picked files
// (uploaded once per pick, so a second Create after a failure reuses it); `createdEndpoint`
// the endpoint this wizard created (a second Create does not create it again).
const wiz = { gen: -1, model: null, ref: "", step: 0, reached: 0, endpoints: [], environments: [], code: [], codePath: null, createdEndpoint: null, busy: false };

function wizError(text) {
  const err = $("wizard-error");
  err.textContent = text || "";
  err.hidden = !text;
}

function wizProgress(text) {
  const p = $("wizard-progress");
  p.textContent = text || "";
  p.hidden = !text;
}

/** The endpoint picked under "An existing endpoint", or null for a new one. */
function wizExisting() {
  if (!$("wiz-endpoint-existing").checked) return null;
  return wiz.endpoints.find((e) => e.name === $("wiz-endpoint-pick").value) || null;
}

function wizEndpointName() {
  const existing = wizExisting();
  return existing ? existing.name : $("wiz-endpoint-name").value.trim();
}

/** A name the endpoint or deployment may take, from the model's (3 to 32 of letters, digits
 * and dashes, a letter first). */
function suggestedName(text) {
  let n = text.replace(/[^-A-Za-z0-9]+/g, "-").replace(/^[^A-Za-z]+/, "").slice(0, 32).replace(/-+$/, "");
  if (n.length < 3) n = ("deploy-" + n).replace(/-+$/, "");
  return n;
}

function syncEndpointKind() {
  const existing = $("wiz-endpoint-existing").checked;
  $("wiz-new-endpoint").hidden = existing;
  $("wiz-existing-endpoint").hidden = !existing;
  const ep = wizExisting();
  $("wiz-existing-facts").textContent = ep
    ? `${ep.auth_mode} authentication; deployments: ${Object.keys(ep.traffic || {}).join(", ") || "none yet"}; live traffic: ${splitText(ep.traffic)}`
    : "";
}
$("wiz-endpoint-new").addEventListener("change", syncEndpointKind);
$("wiz-endpoint-existing").addEventListener("change", syncEndpointKind);
$("wiz-endpoint-pick").addEventListener("change", syncEndpointKind);

function syncAppInsights() {
  $("wiz-app-insights-state").textContent = $("wiz-app-insights").checked ? "metrics and traces on" : "metrics and traces off";
}
$("wiz-app-insights").addEventListener("change", syncAppInsights);

function wizCodePicked(input, other) {
  wiz.code = pickedFiles(input);
  wiz.codePath = null;
  other.value = "";
  const single = wiz.code.length === 1 && !wiz.code[0][0].includes("/");
  // A lone score.py goes up inside a folder of its own: a deployment's code is a folder.
  if (single) wiz.code = [["code/" + wiz.code[0][0], wiz.code[0][1]]];
  const scripts = wiz.code.map(([p]) => p.split("/").slice(1).join("/")).filter((p) => /\.(py|so)$/.test(p)).sort();
  const sel = $("wiz-scoring-script");
  sel.replaceChildren(...scripts.map((p) => el("option", { value: p, text: p })));
  sel.value = scripts.includes("score.py") ? "score.py" : scripts[0] || "";
  $("wiz-code-picked").textContent = wiz.code.length ? pickedText(pickedFiles(input)) : codeHint();
  wizError("");
}
$("wiz-code-file").addEventListener("change", () => wizCodePicked($("wiz-code-file"), $("wiz-code-folder")));
$("wiz-code-folder").addEventListener("change", () => wizCodePicked($("wiz-code-folder"), $("wiz-code-file")));

function codeHint() {
  return "Nothing picked: without a scoring script the built-in ONNX hook scores the model (a folder with one .onnx file).";
}

function syncEnvironment() {
  const id = $("wiz-environment").value;
  const c = (state.curated || []).find((x) => x.id === id);
  const e = wiz.environments.find((x) => x.id === id);
  $("wiz-environment-facts").textContent = c ? `Curated: ${packagesText(c)}` : e ? `Custom: ${e.image || "no image"}${e.conda_yaml ? ", with a conda file" : ""}` : "";
}
$("wiz-environment").addEventListener("change", syncEnvironment);

/** How the review names environment `id`: a curated one by its name, a custom one as
 * NAME:VERSION. */
function environmentName(id) {
  const c = (state.curated || []).find((x) => x.id === id);
  if (c) return c.name;
  const e = wiz.environments.find((x) => x.id === id);
  return e ? `${e.name}:${e.version}` : id;
}

/** Live traffic: for a new endpoint the deployment alone (100%); for an existing one its
 * deployments as they are and the new one at 0%. Kept as typed while the endpoint and the
 * deployment's name stay the same. */
function wizTrafficRows() {
  const dep = $("wiz-deployment-name").value.trim();
  const existing = wizExisting();
  const fields = $("wiz-traffic-fields");
  const key = JSON.stringify([existing && existing.name, dep]);
  if (fields.dataset.key !== key) {
    fields.dataset.key = key;
    const split = {};
    for (const [n, w] of Object.entries((existing && existing.traffic) || {})) split[n] = w;
    split[dep] = existing ? 0 : 100;
    fields.replaceChildren(...Object.entries(split).map(([n, w]) => trafficRow("wiz-traffic-" + n, n, w)));
  }
  showTotal(fields, $("wiz-traffic-total"));
}
$("wiz-traffic-fields").addEventListener("input", () => showTotal($("wiz-traffic-fields"), $("wiz-traffic-total")));

/** The deployment's document, `code` its stored code folder (null: not uploaded yet). */
function wizDocument(code) {
  const doc = { name: $("wiz-deployment-name").value.trim(), model: wiz.ref };
  if (wiz.code.length) doc.code_configuration = { code: code || "(the picked files, uploaded on Create)", scoring_script: $("wiz-scoring-script").value };
  if ($("wiz-environment").value) doc.environment = $("wiz-environment").value;
  doc.instance_type = $("wiz-instance-type").value;
  doc.instance_count = Number($("wiz-instance-count").value);
  doc.app_insights_enabled = $("wiz-app-insights").checked;
  if ($("wiz-data-collection").checked) doc.data_collector = { collections: { model_inputs: { enabled: "True" }, model_outputs: { enabled: "True" } } };
  return doc;
}

function renderReview() {
  const existing = wizExisting();
  const endpoint = wizEndpointName();
  const auth = document.querySelector("input[name=wiz-auth]:checked").value;
  $("wiz-review-endpoint").textContent = existing
    ? `${endpoint} (existing)`
    : `${endpoint} (new; compute Managed; ${auth === "key" ? "key-based" : "token-based"} authentication)`;
  $("wiz-review-model").textContent = wiz.ref;
  $("wiz-review-deployment").textContent = $("wiz-deployment-name").value.trim();
  $("wiz-review-data-collection").textContent = $("wiz-data-collection").checked ? "on (model inputs and outputs)" : "off";
  $("wiz-review-app-insights").textContent = $("wiz-app-insights").checked ? "metrics and traces on" : "off";
  $("wiz-review-code").textContent = wiz.code.length ? `${$("wiz-scoring-script").value} (${$("wiz-code-picked").textContent})` : "none: the built-in ONNX hook";
  const env = $("wiz-environment").value;
  $("wiz-review-environment").textContent = env ? `${environmentName(env)} (${env})` : "none";
  $("wiz-review-instance-type").textContent = $("wiz-instance-type").value;
  $("wiz-review-instance-count").textContent = $("wiz-instance-count").value;
  $("wiz-review-traffic").textContent = splitText(splitOf($("wiz-traffic-fields")));
  $("wiz-review-json").textContent = JSON.stringify(wizDocument(null), null, 2);
}

/** What keeps step `i` from being done ("" when nothing), and the field to fix. */
function wizProblem(i) {
  switch (WIZ_STEPS[i]) {
    case "endpoint": {
      if ($("wiz-endpoint-existing").checked) return wizExisting() ? null : ["Pick the endpoint to deploy to.", "wiz-endpoint-pick"];
      const name = $("wiz-endpoint-name").value.trim();
      if (!ENDPOINT_NAME.test(name) || name.length < 3 || name.length > 32) return [`An endpoint's name is 3 to 32 letters, digits and dashes, starting with a letter and not ending with a dash; got “${name}”.`, "wiz-endpoint-name"];
      if (wiz.createdEndpoint === name) return null; // this wizard made it (a Create that failed later)
      const taken = takenEndpoint(name, wiz.endpoints);
      return taken ? [taken.replace("open it from the list", "deploy to it as an existing endpoint"), "wiz-endpoint-name"] : null;
    }
    case "deployment": {
      const name = $("wiz-deployment-name").value.trim();
      if (!ENDPOINT_NAME.test(name) || name.length < 3 || name.length > 32) return [`A deployment's name is 3 to 32 letters, digits and dashes, starting with a letter and not ending with a dash; got “${name}”.`, "wiz-deployment-name"];
      const existing = wizExisting();
      if (existing && Object.keys(existing.traffic || {}).includes(name)) return [`Endpoint ${existing.name} has a deployment ${name} already: pick another name.`, "wiz-deployment-name"];
      return null;
    }
    case "code":
      if (wiz.code.length && !$("wiz-scoring-script").value) return ["The picked files hold no scoring script (a .py file): pick score.py or the folder that holds it.", "wiz-code-file"];
      if (wiz.code.length && !$("wiz-environment").value) return ["Pick the environment the scoring script runs in.", "wiz-environment"];
      return null;
    case "compute": {
      const n = Number($("wiz-instance-count").value);
      return Number.isInteger(n) && n >= 1 ? null : ["The instance count is a whole number, at least 1.", "wiz-instance-count"];
    }
    case "traffic": {
      const split = splitOf($("wiz-traffic-fields"));
      if (Object.values(split).some((w) => !Number.isInteger(w) || w < 0 || w > 100)) return ["Each share is a whole percentage from 0 to 100.", "wiz-traffic-fields"];
      return showTotal($("wiz-traffic-fields"), $("wiz-traffic-total")) ? null : ["The live traffic must total 0 or 100.", "wiz-traffic-fields"];
    }
    default:
      return null;
  }
}

function showStep(i) {
  wiz.step = i;
  wiz.reached = Math.max(wiz.reached, i);
  WIZ_STEPS.forEach((s, k) => {
    $("wiz-page-" + s).hidden = k !== i;
    const b = $("wiz-step-" + s);
    if (k === i) b.setAttribute("aria-current", "step"); else b.removeAttribute("aria-current");
    b.classList.toggle("done", k !== i && k <= wiz.reached);
    b.disabled = k > wiz.reached || wiz.busy;
  });
  if (WIZ_STEPS[i] === "traffic") wizTrafficRows();
  if (WIZ_STEPS[i] === "review") { wizTrafficRows(); renderReview(); }
  const last = i === WIZ_STEPS.length - 1;
  $("wizard-back").disabled = i === 0 || wiz.busy;
  $("wizard-next").hidden = last;
  $("wizard-create").hidden = !last;
  wizError("");
}

/** Shows step `k` with what keeps it from being done, the field to fix focused. */
function wizRefuse(k, problem) {
  if (k !== wiz.step) showStep(k);
  wizError(problem[0]);
  const f = $(problem[1]);
  (f.matches("input, select, textarea") ? f : f.querySelector("input") || f).focus();
}

/** Moves to step `to`: forward only through steps that are done. */
function wizGo(to) {
  for (let k = wiz.step; k < to; k++) {
    const problem = wizProblem(k);
    if (problem) { wizRefuse(k, problem); return false; }
  }
  showStep(to);
  const first = $("wiz-page-" + WIZ_STEPS[to]).querySelector("input:not([readonly]):not([type=radio]):not([type=file]), select");
  if (first) first.focus();
  return true;
}

$("wizard-form").addEventListener("submit", (e) => {
  e.preventDefault();
  if (!wiz.busy && wiz.step < WIZ_STEPS.length - 1) wizGo(wiz.step + 1);
});
$("wizard-back").addEventListener("click", () => { if (wiz.step > 0) showStep(wiz.step - 1); });
WIZ_STEPS.forEach((s, k) => $("wiz-step-" + s).addEventListener("click", () => { if (!wiz.busy) (k < wiz.step ? showStep(k) : wizGo(k)); }));
$("wizard-cancel").addEventListener("click", () => goHash($("deploy-back").getAttribute("href")));

/** Opens the wizard for model `r.model` version `r.version` (`r.endpoint`: an existing
 * endpoint to preselect), every field as a new wizard has it. */
async function openWizard(r) {
  const gen = state.gen;
  wiz.gen = gen;
  Object.assign(wiz, { model: null, ref: `azureml:${r.model}:${r.version}`, step: 0, reached: 0, endpoints: [], environments: [], code: [], codePath: null, createdEndpoint: null, busy: false });
  const modelPage = "#/models/" + seg(r.model) + "/" + seg(r.version);
  $("deploy-back").href = modelPage;
  $("deploy-title").textContent = `Deploy ${r.model}:${r.version} to a real-time endpoint`;
  for (const id of ["wiz-endpoint-name", "wiz-endpoint-description", "wiz-code-file", "wiz-code-folder", "wiz-deployment-name"]) $(id).value = "";
  for (const id of ["wiz-data-collection", "wiz-app-insights"]) $(id).checked = false;
  $("wiz-endpoint-new").checked = true;
  $("wiz-auth-key").checked = true;
  $("wiz-instance-type").value = "Standard_DS3_v2";
  $("wiz-instance-count").value = "1";
  $("wiz-scoring-script").replaceChildren();
  $("wiz-code-picked").textContent = codeHint();
  $("wiz-environment").replaceChildren();
  delete $("wiz-traffic-fields").dataset.key;
  $("wiz-traffic-fields").replaceChildren();
  $("wizard-log").hidden = true;
  $("wizard-log").textContent = "";
  wizProgress("");
  syncAppInsights();
  syncEndpointKind();
  showStep(0);
  $("wizard-next").disabled = true; // until the model and the choices are read
  let model, endpoints, registered;
  try {
    model = (await api("GET", "/v1/models/" + seg(r.model) + "/versions/" + seg(r.version))).json;
    endpoints = (await api("GET", "/v1/endpoints")).json || [];
    registered = await readEnvironments();
  } catch (e) {
    if (gen !== state.gen) return;
    if (e.status === 404 || e.status === 400) goHash("#/models", true, `Model ${r.model} version ${r.version} cannot be deployed: ${e.message}`);
    else wizError(`Cannot read what the wizard offers: ${e.message}`);
    return;
  }
  if (gen !== state.gen) return;
  wiz.model = model;
  wiz.endpoints = endpoints;
  wiz.environments = registered;
  state.endpoints = endpoints;
  $("wiz-model-id").textContent = model.id;
  $("wiz-model-type").textContent = model.type;
  $("wiz-model-size").textContent = `${bytesText(model.size_bytes)} in ${model.file_count} file${model.file_count === 1 ? "" : "s"}`;
  $("wiz-model-created").textContent = timeText(model.created_at);
  const pick = $("wiz-endpoint-pick");
  pick.replaceChildren(...endpoints.map((e) => el("option", { value: e.name, text: e.name })));
  $("wiz-endpoint-existing").disabled = !endpoints.length;
  if (r.endpoint && endpoints.some((e) => e.name === r.endpoint)) {
    pick.value = r.endpoint;
    $("wiz-endpoint-existing").checked = true;
  }
  $("wiz-endpoint-name").value = suggestedName(r.model + "-endpoint");
  $("wiz-deployment-name").value = suggestedName(r.model + "-" + r.version);
  $("wiz-environment").replaceChildren(
    el("option", { value: "", text: "choose an environment" }),
    el("optgroup", { label: "Curated environments" }, ...(state.curated || []).map((c) => el("option", { value: c.id, text: `${c.name} (${c.id})` }))),
    el("optgroup", { label: "Custom environments" }, ...registered.map((e) => el("option", { value: e.id, text: `${e.name}:${e.version} (${e.id})` }))),
  );
  syncEnvironment();
  syncEndpointKind();
  $("wizard-next").disabled = false;
  $("wiz-endpoint-name").focus();
}

/** Whether two splits give every deployment the same share (a missing one has 0). */
function sameSplit(a, b) {
  return [...new Set([...Object.keys(a || {}), ...Object.keys(b || {})])].every((k) => ((a || {})[k] || 0) === ((b || {})[k] || 0));
}

function wizBusy(on) {
  wiz.busy = on;
  for (const id of ["wizard-create", "wizard-back", "wizard-next", "wizard-cancel"]) $(id).disabled = on;
  for (const s of WIZ_STEPS) $("wiz-step-" + s).disabled = on || WIZ_STEPS.indexOf(s) > wiz.reached;
}

$("wizard-create").addEventListener("click", async () => {
  if (wiz.busy) return;
  for (let k = 0; k < WIZ_STEPS.length; k++) {
    const problem = wizProblem(k);
    if (problem) { wizRefuse(k, problem); return; }
  }
  const gen = wiz.gen;
  const here = () => gen === state.gen; // still this wizard's page
  const endpoint = wizEndpointName();
  const existing = wizExisting();
  const dep = $("wiz-deployment-name").value.trim();
  const split = splitOf($("wiz-traffic-fields"));
  const log = $("wizard-log");
  const progress = (text) => { if (here()) wizProgress(text); };
  wizError("");
  wizBusy(true);
  progress("Starting…");
  $("wizard-progress").scrollIntoView({ block: "nearest" }); // below the review: in sight
  try {
    if (wiz.code.length && !wiz.codePath) {
      const id = await upload(wiz.code, progress);
      progress("Storing the code…");
      wiz.codePath = (await api("POST", "/v1/codes", { upload: id })).json.path;
    }
    if (!existing && wiz.createdEndpoint !== endpoint) {
      progress(`Creating endpoint ${endpoint}…`);
      const body = { name: endpoint, auth_mode: document.querySelector("input[name=wiz-auth]:checked").value };
      const description = $("wiz-endpoint-description").value.trim();
      if (description) body.description = description;
      await api("PUT", endpointPath(endpoint), body);
      wiz.createdEndpoint = endpoint;
    }
    const path = deploymentPath(endpoint, dep);
    progress(`Creating deployment ${dep}…`);
    await api("PUT", path, wizDocument(wiz.codePath));
    if (here()) {
      log.hidden = false;
      log.scrollIntoView({ block: "nearest" });
    }
    const d = await waitDeployment(path, async (d, secs) => {
      progress(`${dep}: ${d.provisioning_state} (${secs} s)` + (d.error ? " — " + studioTerms(d.error) : ""));
      try {
        const r = await api("GET", path + "/logs?lines=20");
        if (here()) { log.textContent = r.text; log.scrollTop = log.scrollHeight; }
      } catch (_) { /* no log yet */ }
    });
    if (d.provisioning_state !== "Succeeded") {
      throw new Error(`Deployment ${dep} of endpoint ${endpoint} failed: ${studioTerms(d.error || "no reason given")}. Fix the choice it names and Create again (it replaces ${dep}), or open the endpoint from the Endpoints list.`);
    }
    const now = (await api("GET", endpointPath(endpoint))).json;
    if (!sameSplit(now.traffic, split)) {
      progress(`Setting live traffic: ${splitText(split)}…`);
      await api("PATCH", endpointPath(endpoint), { traffic: split });
    }
    const message = `Deployment ${dep} of ${wiz.ref} is ready on endpoint ${endpoint}; live traffic ${splitText(split)}.`;
    if (here()) go(endpoint, true, message); else say(message);
  } catch (x) {
    if (here()) {
      wizProgress("");
      wizError(x.message);
    } else {
      say(`Deploying ${dep} to ${endpoint}: ${x.message}`, true);
    }
  } finally {
    wizBusy(false);
  }
});

// ---------- start ----------

async function tick() {
  // While a dialog is open the page reads nothing: the form keeps what the user sees, and a
  // read sent while Delete endpoint's DELETE is on its way would come back a 404.
  if ([...document.querySelectorAll("dialog")].some((d) => d.open)) return;
  await refresh();
  if (state.view !== "endpoint") return; // the list reads /v1/endpoints only
  await pollMetrics();
  if (state.tab === "logs") await refreshLogs();
  if (state.tab === "rollout") await refreshRollout();
  if (state.tab === "data") await refreshData();
}

route();
setInterval(tick, POLL_MS);
