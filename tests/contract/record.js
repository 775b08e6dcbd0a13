// Records what the studio page sends to and reads from the admin API, for the contract check
// (tests/contract/openapi_contract.py). tests/studio/studio_test.py has the browser run this
// before the page's own script (CDP Page.addScriptToEvaluateOnNewDocument); the page is not
// changed. Each fetch of /v1/... is recorded (method, path, status, the JSON body's fields);
// the answer text it reads is matched when the page parses it, and the parsed answer is a
// proxy that notes every field the page reads. window.__contractLog() returns the records.
(() => {
  const records = new Map();
  const pending = new Map(); // answer text -> record, until the page parses it
  const SKIP = new Set(["toJSON", "then", "constructor", "length", "valueOf", "toString"]);
  const realFetch = window.fetch.bind(window);
  const realParse = JSON.parse;

  function wrap(value, path, reads) {
    if (value === null || typeof value !== "object") return value;
    const isArray = Array.isArray(value);
    return new Proxy(value, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver);
        if (typeof prop !== "string" || SKIP.has(prop)) return v;
        if (isArray) {
          return /^\d+$/.test(prop) ? wrap(v, path.concat(["[]"]), reads) : v;
        }
        if (!Object.prototype.hasOwnProperty.call(target, prop) && typeof v === "function") return v;
        const at = path.concat([prop]);
        reads.add(JSON.stringify(at));
        if (Object.prototype.hasOwnProperty.call(target, prop)) {
          const kind = v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
          reads.add(JSON.stringify({ at, kind }));
        }
        return wrap(v, at, reads);
      },
      has(target, prop) {
        if (typeof prop === "string" && !isArray) reads.add(JSON.stringify(path.concat([prop])));
        return Reflect.has(target, prop);
      },
    });
  }

  function shape(value) {
    if (Array.isArray(value)) return value.map(shape);
    if (value === null || typeof value !== "object") return null;
    return Object.fromEntries(Object.keys(value).map((k) => [k, shape(value[k])]));
  }

  window.fetch = async function (input, init) {
    const url = new URL(typeof input === "string" ? input : input.url, location.href);
    const response = await realFetch(input, init);
    if (!url.pathname.startsWith("/v1/") || url.origin !== location.origin) return response;
    const method = ((init && init.method) || "GET").toUpperCase();
    // The JSON body's fields, nested objects kept (values dropped); null for a YAML document,
    // which is not checked field by field. One record per route, status and body shape, so
    // every distinct body the page sends is checked, not only the first.
    let body = null;
    try {
      const parsed = init && typeof init.body === "string" ? realParse(init.body) : null;
      if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) body = shape(parsed);
    } catch (_) { /* a YAML document */ }
    const key = method + " " + url.pathname + url.search + " " + response.status + " " + JSON.stringify(body);
    let record = records.get(key);
    if (!record) {
      record = { method, path: url.pathname + url.search, status: response.status, body, reads: new Set() };
      records.set(key, record);
    }
    const text = response.text.bind(response);
    response.text = async () => {
      const t = await text();
      pending.set(t, record);
      return t;
    };
    return response;
  };

  JSON.parse = function (text, reviver) {
    const value = realParse(text, reviver);
    const record = typeof text === "string" ? pending.get(text) : undefined;
    if (!record) return value;
    pending.delete(text);
    return wrap(value, [], record.reads);
  };

  window.__contractLog = () =>
    [...records.values()].map((r) => {
      const all = [...r.reads].map((p) => realParse(p));
      return {
        ...r,
        reads: all.filter((p) => Array.isArray(p)),
        types: all.filter((p) => !Array.isArray(p)).map((p) => [p.at, p.kind]),
      };
    });
})();
