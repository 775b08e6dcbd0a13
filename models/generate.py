"""Regenerate the shipped ONNX models.

model-1: the azureml-examples LinearRegression (model-1 and model-2 pickles are byte-identical),
rebuilt from its coefficients in float64 so the seed's sample request answers exactly
[11055.977245525679, 4503.079536107787].

model-3: a small multilayer perceptron (512 -> 1024 -> 1024 -> 16, ReLU, float32, weights from
a fixed seed) for adaptive batching (issue 29): one run over 32 rows costs far less than 32 runs
over one row. Its sample request (sample-requests/model-3.json) is one row.

model-2: a compute-bound regressor on the same 10 features -- 300 gradient-boosted trees trained
on scikit-learn's bundled diabetes data (raw, unscaled features) with a fixed seed -- whose answers clearly differ from
model-1, the way the seed's green differs from blue.

Run: `bash scripts/gen-models.sh` (creates a pinned venv, then runs this file).
The .onnx files are committed, so nobody needs Python to serve them.
"""

import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.datasets import load_diabetes
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LinearRegression

HERE = pathlib.Path(__file__).resolve().parent
SEED_SAMPLE = np.array(
    [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]], dtype=np.float64
)


def build_model_1() -> pathlib.Path:
    ref = json.loads((HERE / "model-1" / "coefficients.json").read_text())
    model = LinearRegression()
    # A fitted LinearRegression is fully described by these attributes.
    model.coef_ = np.array(ref["coef"], dtype=np.float64)
    model.intercept_ = np.float64(ref["intercept"])
    model.n_features_in_ = ref["n_features"]
    onx = to_onnx(model, SEED_SAMPLE[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    out = HERE / "model-1" / "model.onnx"
    out.write_bytes(onx.SerializeToString())
    got = run(out, SEED_SAMPLE)
    want = np.array(ref["expected_prediction"])
    rel = np.max(np.abs(got - want) / np.abs(want))
    print(f"model-1: {got.tolist()} (max relative error {rel:.2e})")
    if rel > 1e-9:
        sys.exit(f"model-1 does not reproduce the seed's answer: {got} vs {want}")
    return out


def build_model_2() -> pathlib.Path:
    x, y = load_diabetes(return_X_y=True, scaled=False)
    model = GradientBoostingRegressor(
        n_estimators=300, max_depth=4, learning_rate=0.05, random_state=42
    )
    model.fit(x.astype(np.float64), y)
    # ONNX Runtime's tree ensembles compute in float32 only, so model-2 takes float32 input:
    # it also exercises the hook's conversion of JSON numbers to the model's element type.
    onx = to_onnx(model, x[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3})
    out = HERE / "model-2" / "model.onnx"
    out.write_bytes(onx.SerializeToString())
    got = run(out, SEED_SAMPLE.astype(np.float32))
    ref = model.predict(SEED_SAMPLE.astype(np.float32))
    print(f"model-2: {got.tolist()} (scikit-learn says {ref.tolist()})")
    if not np.allclose(got, ref, rtol=1e-5, atol=1e-3):
        sys.exit("model-2's ONNX export disagrees with scikit-learn")
    return out


def run(path: pathlib.Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.asarray(sess.run(None, {name: x})[0]).reshape(-1)




# --- test-only models -----------------------------------------------------------------------
# Built by hand with onnx.helper. Both take the same {"data": [[10 numbers], ...]} body as
# model-1 and answer model-1's predictions, so they can stand in for a live or shadow
# deployment; they differ in how they behave on the request's first number x00 = data[0][0].


def _linear_nodes(ref):
    """Nodes and initialisers computing model-1's prediction `variable` [N, 1] from X."""
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(np.array(ref["coef"], dtype=np.float64).reshape(10, 1), "W")
    b = numpy_helper.from_array(np.array([ref["intercept"]], dtype=np.float64), "B")
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["linear"]),
    ]
    first = [
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero_i"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float64), "zero_d"),
    ]
    nodes += [
        helper.make_node("Gather", ["X", "zero_i"], ["row0"], axis=0),
        helper.make_node("Gather", ["row0", "zero_i"], ["x00"], axis=0),
    ]
    return nodes, [w, b] + first


def _save(graph, path):
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def build_test_slow() -> pathlib.Path:
    """Answers model-1's prediction after x00 * 1000 iterations of a 16x16 matrix loop, so
    a test picks the delay per request: about x00 milliseconds on one core (the seed's
    sample, x00 = 1, takes ~1 ms; x00 <= 0 takes microseconds)."""
    from onnx import TensorProto, helper, numpy_helper

    ref = json.loads((HERE / "model-1" / "coefficients.json").read_text())
    nodes, inits = _linear_nodes(ref)
    inits += [
        numpy_helper.from_array(np.array(1000.0, dtype=np.float64), "per_unit"),
        numpy_helper.from_array(np.full((16, 16), 0.05, dtype=np.float32), "S0"),
        numpy_helper.from_array(np.array(True), "cond"),
    ]
    nodes += [
        helper.make_node("Mul", ["x00", "per_unit"], ["trips_d"]),
        helper.make_node("Max", ["trips_d", "zero_d"], ["trips_pos"]),
        helper.make_node("Cast", ["trips_pos"], ["trips"], to=TensorProto.INT64),
    ]
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["s_in", "s_in"], ["mm"]),
            helper.make_node("Tanh", ["mm"], ["s_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [16, 16]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [16, 16]),
        ],
    )
    nodes += [
        helper.make_node("Loop", ["trips", "cond", "S0"], ["S_final"], body=body),
        # Tie the loop to the output so no optimiser can drop it: + 0 * sum(S).
        helper.make_node("ReduceSum", ["S_final"], ["s_sum"], keepdims=0),
        helper.make_node("Cast", ["s_sum"], ["s_sum_d"], to=TensorProto.DOUBLE),
        helper.make_node("Mul", ["s_sum_d", "zero_d"], ["nothing"]),
        helper.make_node("Add", ["linear", "nothing"], ["variable"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow-linear",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, 10])],
        [helper.make_tensor_value_info("variable", TensorProto.DOUBLE, [None, 1])],
        initializer=inits,
    )
    out = HERE / "test" / "slow" / "model.onnx"
    _save(graph, out)
    return out


def build_test_fail() -> pathlib.Path:
    """Answers model-1's prediction when 0 <= x00 < 2, and fails inside ONNX Runtime
    (a Gather index out of range) otherwise: a model error on demand."""
    from onnx import TensorProto, helper, numpy_helper

    ref = json.loads((HERE / "model-1" / "coefficients.json").read_text())
    nodes, inits = _linear_nodes(ref)
    inits.append(numpy_helper.from_array(np.array([0.0, 0.0], dtype=np.float64), "table"))
    nodes += [
        helper.make_node("Cast", ["x00"], ["idx"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "idx"], ["picked"], axis=0),
        helper.make_node("Add", ["linear", "picked"], ["variable"]),
    ]
    graph = helper.make_graph(
        nodes,
        "failing-linear",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, 10])],
        [helper.make_tensor_value_info("variable", TensorProto.DOUBLE, [None, 1])],
        initializer=inits,
    )
    out = HERE / "test" / "fail" / "model.onnx"
    _save(graph, out)
    return out


def build_test_fixed() -> pathlib.Path:
    """model-1 with its input fixed at one row ([1, 10]): a model that cannot batch
    (issue 29's refusal names its input)."""
    from onnx import TensorProto, helper

    ref = json.loads((HERE / "model-1" / "coefficients.json").read_text())
    nodes, inits = _linear_nodes(ref)
    graph = helper.make_graph(
        nodes[:2],
        "fixed-linear",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [1, 10])],
        [helper.make_tensor_value_info("linear", TensorProto.DOUBLE, [1, 1])],
        initializer=inits[:2],
    )
    out = HERE / "test" / "fixed" / "model.onnx"
    _save(graph, out)
    return out


def build_test_fail_rows() -> pathlib.Path:
    """Answers model-1's prediction per row, and fails inside ONNX Runtime (a Gather index
    out of range) when any row's first number is 2 or more: a model error that, stacked,
    fails the whole run, for the batching tests (issue 29)."""
    from onnx import TensorProto, helper, numpy_helper

    ref = json.loads((HERE / "model-1" / "coefficients.json").read_text())
    nodes, inits = _linear_nodes(ref)
    inits = inits[:3] + [numpy_helper.from_array(np.array([0.0, 0.0], dtype=np.float64), "table")]
    nodes = nodes[:2] + [
        helper.make_node("Gather", ["X", "zero_i"], ["col0"], axis=1),
        helper.make_node("ReduceMax", ["col0"], ["top"], keepdims=0),
        helper.make_node("Cast", ["top"], ["idx"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "idx"], ["picked"], axis=0),
        helper.make_node("Add", ["linear", "picked"], ["variable"]),
    ]
    graph = helper.make_graph(
        nodes,
        "row-failing-linear",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, 10])],
        [helper.make_tensor_value_info("variable", TensorProto.DOUBLE, [None, 1])],
        initializer=inits,
    )
    out = HERE / "test" / "fail-rows" / "model.onnx"
    _save(graph, out)
    return out


def build_model_3() -> pathlib.Path:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(29)
    sizes = [512, 1024, 1024, 16]
    nodes, inits, x = [], [], "X"
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        # He-style scaling keeps activations in a sane range through the layers.
        w = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
        b = (rng.standard_normal(n_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        nodes += [helper.make_node("MatMul", [x, f"W{i}"], [f"mm{i}"]), helper.make_node("Add", [f"mm{i}", f"B{i}"], [f"z{i}"])]
        last = i == len(sizes) - 2
        if not last:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i}"]))
        x = f"z{i}" if last else f"h{i}"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(
        nodes,
        "mlp-512-1024-1024-16",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])],
        initializer=inits,
    )
    out = HERE / "model-3" / "model.onnx"
    _save(graph, out)
    sample = np.round(np.random.default_rng(3).standard_normal((1, 512)), 3).astype(np.float32)
    request = HERE.parent / "sample-requests" / "model-3.json"
    request.write_text(json.dumps({"data": sample.tolist()}) + "\n")
    one = run(out, sample)
    # The batched answer equals the one-row answer for every row of a stacked batch.
    batch = np.repeat(sample, 32, axis=0)
    got = run(out, batch).reshape(32, 16)
    rel = float(np.max(np.abs(got - one) / np.maximum(np.abs(one), 1e-6)))
    print(f"model-3: {one.shape[0]} outputs, first {one[:3].tolist()}; 32 stacked rows agree within {rel:.1e}")
    if rel > 1e-5:
        sys.exit("model-3's batched answer differs from its one-row answer")
    return out


def check_test_models() -> None:
    import time

    slow = build_test_slow()
    fail = build_test_fail()
    for x00 in (1.0, 5.0):
        x = SEED_SAMPLE.copy()
        x[0, 0] = x00
        start = time.perf_counter()
        got = run(slow, x)
        ms = (time.perf_counter() - start) * 1e3
        print(f"test/slow: x00={x00} -> {got.tolist()} in {ms:.1f} ms")
    print(f"test/fail: x00=1 -> {run(fail, SEED_SAMPLE).tolist()}")
    x = SEED_SAMPLE.copy()
    x[0, 0] = 7
    try:
        run(fail, x)
        sys.exit("test/fail did not fail on x00=7")
    except Exception as e:  # noqa: BLE001 - any runtime error is the point
        print(f"test/fail: x00=7 -> error ({str(e)[:80]}...)")


def check_batching_test_models() -> None:
    fixed = build_test_fixed()
    print(f"test/fixed: {run(fixed, SEED_SAMPLE[:1]).tolist()}")
    rows = build_test_fail_rows()
    x = np.vstack([SEED_SAMPLE, SEED_SAMPLE])
    x[:, 0] = 1
    print(f"test/fail-rows: two good rows -> {run(rows, x).tolist()}")
    x[1, 0] = 7
    try:
        run(rows, x)
        sys.exit("test/fail-rows did not fail with a row whose first number is 7")
    except Exception as e:  # noqa: BLE001 - any runtime error is the point
        print(f"test/fail-rows: a bad second row -> error ({str(e)[:80]}...)")


if __name__ == "__main__":
    # `generate.py model-3` rebuilds that one alone (the others are committed and unchanged).
    if sys.argv[1:] == ["model-3"]:
        build_model_3()
        sys.exit(0)
    # `generate.py batching-tests` rebuilds the two test models of issue 29 alone.
    if sys.argv[1:] == ["batching-tests"]:
        check_batching_test_models()
        sys.exit(0)
    build_model_1()
    build_model_2()
    build_model_3()
    check_test_models()
    check_batching_test_models()
