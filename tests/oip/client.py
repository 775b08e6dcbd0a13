"""Runs a plan of calls with the stock tritonclient against a Switchyard endpoint: its HTTP
client (tritonclient[http]) for an http:// URL, its gRPC client (tritonclient[grpc]) for a
grpc://HOST:PORT one (the gRPC plane; the key then goes in the `authorization` metadata).

Usage: client.py URL KEY PLAN_JSON. PLAN_JSON is a list of steps ({"op": ...}); prints a JSON
list with one result per step. A client-side exception becomes {"error": message, "status":
its status (the HTTP code, or the gRPC status name)}, which is what a user of tritonclient
would read.
"""
import json
import sys

import numpy as np
from tritonclient.utils import InferenceServerException

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}


def step(client, lib, grpc, auth, s):
    headers = dict(auth)
    headers.update(s.get("headers", {}))
    as_json = {"as_json": True} if grpc else {}
    op = s["op"]
    if op == "live":
        return {"live": client.is_server_live(headers=headers)}
    if op == "server_ready":
        return {"ready": client.is_server_ready(headers=headers)}
    if op == "server_metadata":
        return client.get_server_metadata(headers=headers, **as_json)
    if op == "model_ready":
        return {"ready": client.is_model_ready(s["model"], headers=headers)}
    if op == "metadata":
        return client.get_model_metadata(s["model"], headers=headers, **as_json)
    if op == "infer":
        data = np.array(s["rows"], dtype=DTYPES.get(s["datatype"], np.float64))
        shape = s.get("shape", list(data.shape))
        tensor = lib.InferInput(s["input"], shape, s.get("send_datatype", s["datatype"]))
        # gRPC always sends raw tensors and reads raw outputs; HTTP chooses per tensor.
        binary = {} if grpc else {"binary_data": s.get("binary", True)}
        tensor.set_data_from_numpy(data, **binary)
        outputs = None
        if s.get("outputs") is not None:
            out_binary = {} if grpc else {"binary_data": s.get("binary_output", True)}
            outputs = [lib.InferRequestedOutput(n, **out_binary) for n in s["outputs"]]
        result = client.infer(s["model"], [tensor], outputs=outputs, headers=headers, request_id=s.get("id", ""))
        answer = result.get_response(**as_json)
        values = {o["name"]: result.as_numpy(o["name"]).tolist() for o in answer["outputs"]}
        sent_binary = {o["name"]: "binary_data_size" in o.get("parameters", {}) for o in answer["outputs"]}
        return {"outputs": values, "binary": sent_binary, "response": answer}
    raise ValueError(f"unknown op {op}")


def main():
    url, key, plan = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    grpc = url.startswith("grpc://")
    if grpc:
        import tritonclient.grpc as lib
        auth = {"authorization": f"Bearer {key}"} if key else {}
    else:
        import tritonclient.http as lib
        auth = {"Authorization": f"Bearer {key}"} if key else {}
    client = lib.InferenceServerClient(url=url.split("://", 1)[-1])
    results = []
    for s in plan:
        try:
            results.append(step(client, lib, grpc, auth, s))
        except InferenceServerException as e:
            results.append({"error": e.message() if grpc else str(e), "status": e.status()})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
