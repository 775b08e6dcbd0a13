"""Regenerate the shipped ONNX models.

model-1: the azureml-examples LinearRegression (model-1 and model-2 pickles are byte-identical),
rebuilt from its coefficients in float64 so the seed's sample request answers exactly
[11055.977245525679, 4503.079536107787].

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


if __name__ == "__main__":
    build_model_1()
    build_model_2()
