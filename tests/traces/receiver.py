"""An OTLP/HTTP trace receiver for tests/traces.rs: a real `POST /v1/traces` endpoint that decodes
what the server exports with the OpenTelemetry project's own protobuf messages (the pinned
`opentelemetry-proto` package), and answers `GET /spans` with every span received so far, as
JSON.

Prints its port on the first line of stdout, then serves until stdin closes (the test holds it).
With `--discard` (benches/traces.sh) it only counts what it receives (`GET /stats`), so the
benchmark measures the server's cost and not this decoder's.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

SPANS = []
STATS = {"exports": 0, "bytes": 0}
LOCK = threading.Lock()
DISCARD = "--discard" in sys.argv


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def span_json(resource, scope, span):
    return {
        "service": resource.get("service.name"),
        "scope": scope,
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "name": span.name,
        "kind": span.kind,
        "start": span.start_time_unix_nano,
        "end": span.end_time_unix_nano,
        "attributes": attributes(span.attributes),
        "status_code": span.status.code,
        "status_message": span.status.message,
        "links": [{"trace_id": l.trace_id.hex(), "span_id": l.span_id.hex()} for l in span.links],
        "events": [{"name": e.name, "attributes": attributes(e.attributes)} for e in span.events],
    }


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
            self.send_response(400)
            self.end_headers()
            return
        with LOCK:
            STATS["exports"] += 1
            STATS["bytes"] += len(body)
        request = ExportTraceServiceRequest()
        if not DISCARD:
            request.ParseFromString(body)
        received = []
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    received.append(span_json(resource, ss.scope.name, span))
        with LOCK:
            SPANS.extend(received)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_GET(self):
        with LOCK:
            answer = json.dumps(STATS if self.path == "/stats" else SPANS).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
