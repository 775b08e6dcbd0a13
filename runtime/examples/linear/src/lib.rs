//! Example plugin: model-1 (a scikit-learn `LinearRegression` over 10 features) as native
//! code. `init` reads `coefficients.json` from the model folder (`models/model-1/`); `run`
//! takes the ONNX hook's request form, `{"data": [[10 numbers], ...]}`, and answers a JSON list
//! of predictions, as model-1's ONNX deployment does.
//!
//! Build: `cargo build --release -p switchyard-example-linear` →
//! `target/release/libswitchyard_example_linear.so` (see runtime/README.md).

use std::path::Path;

use serde::Deserialize;
use switchyard_plugin::{export_plugin, Env, Plugin, Request, Response, RunError};

/// `coefficients.json`: what the pickle holds.
#[derive(Deserialize)]
struct Coefficients {
    coef: Vec<f64>,
    intercept: f64,
}

/// The request form of CONTRACT §2 for a model with one 2-D input.
#[derive(Deserialize)]
struct ScoreRequest {
    data: Vec<Vec<f64>>,
}

struct Linear {
    coef: Vec<f64>,
    intercept: f64,
}

impl Plugin for Linear {
    fn init(model_dir: &Path, _env: &Env) -> Result<Self, String> {
        let file = if model_dir.is_dir() { model_dir.join("coefficients.json") } else { model_dir.to_path_buf() };
        let text = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let c: Coefficients =
            serde_json::from_slice(&text).map_err(|e| format!("{} is not a coefficients file: {e}", file.display()))?;
        if c.coef.is_empty() {
            return Err(format!("{} has no coefficients", file.display()));
        }
        Ok(Linear { coef: c.coef, intercept: c.intercept })
    }

    fn run(&mut self, request: Request<'_>) -> Result<Response, RunError> {
        let n = self.coef.len();
        let expected = || format!("expected {{\"data\": [[{n} numbers], ...]}}");
        let req: ScoreRequest = serde_json::from_slice(request.body)
            .map_err(|e| RunError::BadInput(format!("{}; the body is not that: {e}", expected())))?;
        let mut out = Vec::with_capacity(req.data.len());
        for (i, row) in req.data.iter().enumerate() {
            if row.len() != n {
                return Err(RunError::BadInput(format!("{}; row {i} has {} numbers", expected(), row.len())));
            }
            let y = self.intercept + row.iter().zip(&self.coef).map(|(x, c)| x * c).sum::<f64>();
            if !y.is_finite() {
                return Err(RunError::Model(format!("the prediction for row {i} is not a finite number")));
            }
            out.push(y);
        }
        let body = serde_json::to_vec(&out).map_err(|e| RunError::Model(e.to_string()))?;
        Ok(Response::json(body))
    }
}

export_plugin!(Linear);
