"""Checks what a client of the admin API did against the admin API's OpenAPI document.

The document is generated from the server's own types (src/server/openapi.rs) and served at
``GET /openapi.json``. A client's test records each call it made: the method, the path, the
query keys, the body it sent and the answer fields it read (``sitecustomize.py`` here does so
for the Python SDK, ``tests/studio/studio_test.py`` for the studio page). This module says
which of those the document does not have: a route or method that is gone, a query parameter
or body field the server does not take, an answer field the server does not send. So a
client that drifts from the server fails its own test.

    python3 openapi_contract.py ADMIN_URL_OR_FILE LOG   # LOG: one JSON record per line

A record: ``{"method": "GET", "path": "/v1/deployments/blue?wait=5", "status": 200 (or "2xx"),
"body": {...} or null, "reads": [["instances", "ready"], ...], "types": [[["instances",
"ready"], "integer"], ...]}``; a list index in a read path is ``"[]"``; ``types`` gives the JSON
type (null, boolean, integer, number, string, object, array) each read field had, checked
against the document's type for it.
"""

import json
import re
import sys
import urllib.parse
import urllib.request


def load(source):
    """The document, from a served admin plane (``http://...``) or a file."""
    if source.startswith("http://") or source.startswith("https://"):
        with urllib.request.urlopen(source.rstrip("/") + "/openapi.json", timeout=30) as r:
            return json.loads(r.read())
    with open(source) as f:
        return json.load(f)


class Contract:
    def __init__(self, doc):
        self.doc = doc
        self.routes = []
        for template, item in doc["paths"].items():
            pattern = "^" + re.sub(r"\\\{([^/]+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
            # A file's path in an upload (`/v1/uploads/{id}/files/{path}`) holds slashes.
            if template.endswith("/{path}"):
                pattern = pattern[: -len("[^/]+)$")] + ".+)$"
            self.routes.append((re.compile(pattern), template, item))

    def resolve(self, schema):
        while isinstance(schema, dict) and "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = self.doc["components"]["schemas"][name]
        return schema

    def variants(self, schema):
        """The object schemas a value of ``schema`` may be (through refs, allOf, oneOf, anyOf)."""
        schema = self.resolve(schema)
        if not isinstance(schema, dict):
            return [{}]
        out = []
        for key in ("oneOf", "anyOf"):
            for s in schema.get(key, []):
                out.extend(self.variants(s))
        if "allOf" in schema:
            merged = {"properties": {}}
            for s in schema["allOf"]:
                for v in self.variants(s):
                    merged["properties"].update(v.get("properties", {}))
                    if "additionalProperties" in v:
                        merged["additionalProperties"] = v["additionalProperties"]
            out.append(merged)
        if not out or "properties" in schema or "items" in schema or "additionalProperties" in schema:
            out.append(schema)
        return out

    def child(self, schema, key):
        """The schemas of ``key`` in a value of ``schema``; [] when no variant has it."""
        found = []
        for v in self.variants(schema):
            types = v.get("type")
            types = types if isinstance(types, list) else [types]
            if key == "[]":
                if "items" in v:
                    found.append(v["items"])
                continue
            if key in v.get("properties", {}):
                found.append(v["properties"][key])
            elif isinstance(v.get("additionalProperties"), dict):
                found.append(v["additionalProperties"])
            elif v.get("additionalProperties") is True or (
                not v.get("properties") and "items" not in v and ("object" in types or types == [None])
            ):
                found.append({})  # a free-form object (tags, a model's version): any key
        return found

    def at(self, schema, path):
        """The schemas a value at ``path`` of a value of ``schema`` may have; [] if none."""
        current = [schema]
        for key in path:
            current = [c for s in current for c in self.child(s, key)]
            if not current:
                return []
        return current

    def has(self, schema, path):
        return bool(self.at(schema, path))

    def types(self, schema):
        """The JSON types a value of ``schema`` may be; None for any."""
        schema = self.resolve(schema)
        if not isinstance(schema, dict):
            return None
        found = set()
        composite = False
        for key in ("oneOf", "anyOf", "allOf"):
            for part in schema.get(key, []):
                composite = True
                more = self.types(part)
                if more is None and key != "allOf":
                    return None
                found |= more or set()
        kind = schema.get("type")
        if kind is not None:
            found |= set(kind if isinstance(kind, list) else [kind])
        elif "enum" in schema:
            found |= {"string"}
        elif "properties" in schema or "additionalProperties" in schema:
            found |= {"object"}
        elif not composite:
            return None
        if schema.get("nullable"):
            found.add("null")
        return found

    def allows(self, schemas, kind):
        """Whether a value of JSON type ``kind`` fits one of ``schemas`` (a number read from a
        browser may be an integer)."""
        for schema in schemas:
            allowed = self.types(schema)
            if allowed is None or kind in allowed:
                return True
            if kind in ("number", "integer") and allowed & {"number", "integer"}:
                return True
        return False

    def operation(self, method, path):
        bare = urllib.parse.urlsplit(path).path
        for pattern, template, item in self.routes:
            found = pattern.match(bare)
            if found:
                op = item.get(method.lower())
                if op is None:
                    return template, None, "{} {}: the document has {} for {}, not {}".format(
                        method, bare, ", ".join(m.upper() for m in item), template, method)
                # A path parameter with documented values must be one of them.
                for p in op.get("parameters", []):
                    allowed = self.resolve(p.get("schema", {})).get("enum")
                    value = found.groupdict().get(p["name"]) if p.get("in") == "path" else None
                    if allowed and value is not None and urllib.parse.unquote(value) not in allowed:
                        return template, None, "{} {}: {} {!r} is not one of {}".format(
                            method, bare, p["name"], value, ", ".join(allowed))
                return template, op, None
        return None, None, "{} {}: no such route in the admin API's document".format(method, bare)

    def problems(self, record):
        method, path = record["method"], record["path"]
        template, op, missing = self.operation(method, path)
        if missing:
            return [missing]
        where = "{} {}".format(method, template)
        out = []
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query, keep_blank_values=True)
        documented = {p["name"] for p in op.get("parameters", []) if p.get("in") == "query"}
        for key in query:
            if key not in documented:
                out.append("{}: query parameter {!r} is not in the document".format(where, key))
        body = record.get("body")
        if isinstance(body, dict):
            content = op.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema")
            if schema is None:
                out.append("{}: sends a body; the document takes none".format(where))
            else:
                unknown = []
                for sent in field_paths(body):
                    if any(sent[:len(u)] == u for u in unknown):
                        continue  # inside a field already reported
                    if not self.has(schema, sent):
                        unknown.append(sent)
                        out.append("{}: sends field {}, which the document does not take".format(where, ".".join(sent)))
        status = str(record.get("status"))
        reads = record.get("reads") or []
        if reads or record.get("types"):
            responses = op.get("responses", {})
            codes = [c for c in responses if c.startswith("2")] if status == "2xx" else [status]
            schemas = [responses[c].get("content", {}).get("application/json", {}).get("schema") for c in codes if c in responses]
            schemas = [s for s in schemas if s is not None]
            if not schemas and status.isdigit() and int(status) >= 400:
                # Every error of the admin API is an ErrorBody, documented per route or not.
                schemas = [{"$ref": "#/components/schemas/ErrorBody"}]
            schema = {"oneOf": schemas} if schemas else None
            if schema is None:
                out.append("{}: reads fields of a {} answer, which the document does not describe".format(where, status))
            else:
                for read in reads:
                    if not self.has(schema, read):
                        out.append("{}: reads {} of the {} answer, which the document does not have".format(
                            where, ".".join(read), status))
                for read, kind in record.get("types") or []:
                    places = self.at(schema, read)
                    if places and not self.allows(places, kind):
                        out.append("{}: reads {} of the {} answer as JSON type {}, which the document does not give it".format(
                            where, ".".join(read), status, kind))
        return out


def field_paths(body, prefix=()):
    """Every field path of a sent JSON body (objects descended, lists as `[]`)."""
    for key, value in body.items():
        path = prefix + (key,)
        yield list(path)
        if isinstance(value, dict):
            yield from field_paths(value, path)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    yield from field_paths(item, path + ("[]",))


def check(doc, records):
    """Every problem of every record, each once, in order."""
    contract = Contract(doc)
    seen, out = set(), []
    for record in records:
        for p in contract.problems(record):
            if p not in seen:
                seen.add(p)
                out.append(p)
    return out


def main(argv):
    if len(argv) != 3:
        print(__doc__)
        return 2
    doc = load(argv[1])
    with open(argv[2]) as f:
        records = [json.loads(line) for line in f if line.strip()]
    problems = check(doc, records)
    reads = sum(len(r.get("reads") or []) for r in records)
    typed = sum(len(r.get("types") or []) for r in records)
    if problems:
        print("contract: {} problem(s) against the admin API's document:".format(len(problems)))
        for p in problems:
            print("  " + p)
        return 1
    if not records:
        print("contract: no call was recorded")
        return 1
    print("contract: {} calls and {} field reads ({} with their JSON types) match the admin API's document".format(
        len(records), reads, typed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
