"""Runs a plan of calls with the stock tritonclient[grpc] against Switchyard's gRPC plane.

Usage: client.py HOST:PORT KEY PLAN_JSON. PLAN_JSON is a list of steps ({"op": ...}); prints a
JSON list with one result per step. A client-side exception becomes {"error": str(e),
"status": the gRPC status name}, which is what a user of tritonclient would read. The key goes
in the `authorization` metadata (`Bearer KEY`), as a Triton user sends headers.
"""
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}


def step(client, auth, s):
    headers = dict(auth)
    headers.update(s.get("headers", {}))
    op = s["op"]
    if op == "live":
        return {"live": client.is_server_live(headers=headers)}
    if op == "server_ready":
        return {"ready": client.is_server_ready(headers=headers)}
    if op == "server_metadata":
        return client.get_server_metadata(headers=headers, as_json=True)
    if op == "model_ready":
        return {"ready": client.is_model_ready(s["model"], headers=headers)}
    if op == "metadata":
        return client.get_model_metadata(s["model"], headers=headers, as_json=True)
    if op == "infer":
        data = np.array(s["rows"], dtype=DTYPES.get(s["datatype"], np.float64))
        shape = s.get("shape", list(data.shape))
        tensor = grpcclient.InferInput(s["input"], shape, s.get("send_datatype", s["datatype"]))
        tensor.set_data_from_numpy(data)
        outputs = None
        if s.get("outputs") is not None:
            outputs = [grpcclient.InferRequestedOutput(n) for n in s["outputs"]]
        result = client.infer(s["model"], [tensor], outputs=outputs, headers=headers, request_id=s.get("id", ""))
        answer = result.get_response(as_json=True)
        values = {o["name"]: result.as_numpy(o["name"]).tolist() for o in answer["outputs"]}
        return {"outputs": values, "response": answer}
    raise ValueError(f"unknown op {op}")


def main():
    url, key, plan = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    client = grpcclient.InferenceServerClient(url=url)
    auth = {"authorization": f"Bearer {key}"} if key else {}
    results = []
    for s in plan:
        try:
            results.append(step(client, auth, s))
        except InferenceServerException as e:
            results.append({"error": e.message(), "status": e.status()})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
