//! The built-in ONNX hook: one ONNX Runtime session per instance, scoring the JSON request forms
//! of CONTRACT §2.
//!
//! The model's input and output signatures are read once at init, so every request is checked
//! against them before ONNX Runtime sees it and a wrong body gets a 400 that says what the
//! model expects, never an opaque runtime error.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session, SessionInputValue, SessionOutputs};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};

use super::oip::{self, Datatype, InputData};
use super::tensor_json::{self, NestedArray, ScoreRequest};
use super::{Answer, HookError, HookRequest, HookResponse, InitContext, ScoringHook, Signature, TensorSpec};

/// Element types the JSON forms can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    F32,
    F64,
    I32,
    I64,
}

impl Elem {
    fn from_ort(t: TensorElementType) -> Option<Self> {
        match t {
            TensorElementType::Float32 => Some(Elem::F32),
            TensorElementType::Float64 => Some(Elem::F64),
            TensorElementType::Int32 => Some(Elem::I32),
            TensorElementType::Int64 => Some(Elem::I64),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Elem::F32 => "float32",
            Elem::F64 => "float64",
            Elem::I32 => "int32",
            Elem::I64 => "int64",
        }
    }

    /// The Open Inference Protocol's name for the type.
    fn datatype(self) -> Datatype {
        match self {
            Elem::F32 => Datatype::Fp32,
            Elem::F64 => Datatype::Fp64,
            Elem::I32 => Datatype::Int32,
            Elem::I64 => Datatype::Int64,
        }
    }
}

/// A model input: its name, element type and declared dimensions (-1 where dynamic).
#[derive(Debug, Clone)]
struct InputSig {
    name: String,
    elem: Elem,
    dims: Vec<i64>,
}

impl InputSig {
    /// The shape in words, e.g. `[N, 10]`.
    fn shape_text(&self) -> String {
        let dims: Vec<String> =
            self.dims.iter().map(|d| if *d < 0 { "N".to_string() } else { d.to_string() }).collect();
        format!("[{}]", dims.join(", "))
    }
}

/// A model output; `elem` is `None` for non-tensor outputs (maps, sequences), which are skipped.
#[derive(Debug, Clone)]
struct OutputSig {
    name: String,
    elem: Option<Elem>,
    dims: Vec<i64>,
}

/// Why an ONNX model cannot be served: each message names the file or the input at fault.
#[derive(Debug, thiserror::Error)]
pub enum OnnxLoadError {
    #[error(transparent)]
    Runtime(#[from] super::ort_runtime::RuntimeError),
    #[error("cannot configure an ONNX Runtime session: {0}")]
    Configure(String),
    #[error("cannot load ONNX model {}: {reason}", path.display())]
    Model { path: std::path::PathBuf, reason: String },
    #[error("model input {name:?} is not a tensor; the ONNX hook takes tensor inputs only")]
    InputNotTensor { name: String },
    #[error(
        "model input {name:?} has element type {ty}; the ONNX hook accepts float32, float64, int32 and int64 inputs"
    )]
    InputType { name: String, ty: String },
    #[error("the model has no numeric tensor output the ONNX hook can return as JSON")]
    NoNumericOutput,
}

/// One instance's ONNX Runtime session and the model's signature.
pub struct OnnxHook {
    session: Session,
    inputs: Vec<InputSig>,
    outputs: Vec<OutputSig>,
    /// The model's name and version, for v2 answers.
    model_name: String,
    model_version: Option<String>,
}

impl OnnxHook {
    /// Loads the model file into a new session (blocking; may take seconds for big models).
    pub fn load(model_file: &Path, ctx: &InitContext) -> Result<Self, OnnxLoadError> {
        let environment = super::ort_runtime::environment()?;
        let configure = |e: &dyn std::fmt::Display| OnnxLoadError::Configure(e.to_string());
        let session = Session::builder(environment)
            .map_err(|e| configure(&e))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| configure(&e))?
            .with_intra_threads(ctx.intra_threads.max(1))
            .map_err(|e| configure(&e))?
            .commit_from_file(model_file)
            .map_err(|e| OnnxLoadError::Model { path: model_file.to_path_buf(), reason: e.to_string() })?;
        let mut inputs = Vec::new();
        for input in session.inputs() {
            let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
                return Err(OnnxLoadError::InputNotTensor { name: input.name().to_string() });
            };
            let elem = Elem::from_ort(*ty)
                .ok_or_else(|| OnnxLoadError::InputType { name: input.name().to_string(), ty: format!("{ty:?}") })?;
            inputs.push(InputSig { name: input.name().to_string(), elem, dims: shape.to_vec() });
        }
        let outputs = session
            .outputs()
            .iter()
            .map(|o| {
                let (elem, dims) = match o.dtype() {
                    ValueType::Tensor { ty, shape, .. } => (Elem::from_ort(*ty), shape.to_vec()),
                    _ => (None, Vec::new()),
                };
                OutputSig { name: o.name().to_string(), elem, dims }
            })
            .collect::<Vec<_>>();
        if !outputs.iter().any(|o| o.elem.is_some()) {
            return Err(OnnxLoadError::NoNumericOutput);
        }
        Ok(Self {
            session,
            inputs,
            outputs,
            model_name: ctx.model_name.clone(),
            model_version: ctx.model_version.clone(),
        })
    }

    /// What a request must look like, for error messages.
    fn expected(&self) -> String {
        if let [only] = self.inputs.as_slice() {
            format!(
                "expected {{\"data\": <{} array of shape {}>}} (input {:?})",
                only.elem.name(),
                only.shape_text(),
                only.name
            )
        } else {
            let list: Vec<String> =
                self.inputs.iter().map(|i| format!("{:?}: <{} {}>", i.name, i.elem.name(), i.shape_text())).collect();
            format!("expected {{\"inputs\": {{{}}}}}", list.join(", "))
        }
    }
}

/// Whether `shape` fits the input's declared dimensions (-1 matches any length).
fn shape_fits(sig: &InputSig, shape: &[usize]) -> bool {
    sig.dims.is_empty() && shape.is_empty()
        || (sig.dims.len() == shape.len() && sig.dims.iter().zip(shape).all(|(d, n)| *d < 0 || *d as usize == *n))
}

/// Converts one parsed array into an ONNX tensor of the input's type, checking its shape.
fn to_tensor(sig: &InputSig, array: NestedArray) -> Result<DynValue, HookError> {
    if !shape_fits(sig, &array.shape) {
        return Err(HookError::BadInput(format!(
            "input {:?} expects a {} array of shape {}; got shape {:?}",
            sig.name,
            sig.elem.name(),
            sig.shape_text(),
            array.shape
        )));
    }
    let shape: Vec<i64> = array.shape.iter().map(|d| *d as i64).collect();
    let fail = |e: ort::Error| HookError::Failed(format!("cannot build input tensor {:?}: {e}", sig.name));
    let integers = |bits: u32| -> Result<Vec<i64>, HookError> {
        let (lo, hi) = if bits == 32 { (i32::MIN as f64, i32::MAX as f64) } else { (-(2f64.powi(63)), 2f64.powi(63)) };
        array
            .values
            .iter()
            .map(|v| {
                if v.fract() == 0.0 && *v >= lo && *v < hi {
                    Ok(*v as i64)
                } else {
                    Err(HookError::BadInput(format!(
                        "input {:?} is int{bits}: {v} is not an integer in range",
                        sig.name
                    )))
                }
            })
            .collect()
    };
    Ok(match sig.elem {
        Elem::F64 => Tensor::from_array((shape, array.values)).map_err(fail)?.into_dyn(),
        Elem::F32 => {
            // A float64 beyond float32's range would become an infinity inside the model.
            if let Some(v) = array.values.iter().find(|v| v.abs() > f32::MAX as f64) {
                return Err(HookError::BadInput(format!(
                    "input {:?} is float32: {v} is outside its range (±{:e})",
                    sig.name,
                    f32::MAX
                )));
            }
            let v: Vec<f32> = array.values.iter().map(|x| *x as f32).collect();
            Tensor::from_array((shape, v)).map_err(fail)?.into_dyn()
        }
        Elem::I64 => Tensor::from_array((shape, integers(64)?)).map_err(fail)?.into_dyn(),
        Elem::I32 => {
            let v: Vec<i32> = integers(32)?.into_iter().map(|x| x as i32).collect();
            Tensor::from_array((shape, v)).map_err(fail)?.into_dyn()
        }
    })
}

/// Runs `$emit!(rust type, JSON writer)` for an output's element type: the one place an
/// element type picks both.
macro_rules! by_elem {
    ($elem:expr, $emit:ident) => {
        match $elem {
            Elem::F64 => $emit!(f64, tensor_json::write_f64),
            Elem::F32 => $emit!(f32, tensor_json::write_f32),
            Elem::I64 => $emit!(i64, tensor_json::write_i64),
            Elem::I32 => $emit!(i32, |o: &mut Vec<u8>, v: i32| tensor_json::write_i64(o, v as i64)),
        }
    };
}

/// Converts one v2 input into an ONNX tensor: its datatype must be the model's and its shape
/// must fit; JSON data goes through the same checks as `/score`'s, binary data is read as
/// little-endian elements straight into the tensor.
fn v2_tensor(sig: &InputSig, input: &oip::Input<'_>) -> Result<DynValue, HookError> {
    let want = sig.elem.datatype();
    if input.datatype != want {
        return Err(HookError::BadInput(format!(
            "input {:?} is {} {} in this model; got datatype {}",
            sig.name,
            want.as_str(),
            sig.shape_text(),
            input.datatype.as_str()
        )));
    }
    if !shape_fits(sig, &input.shape) {
        return Err(HookError::BadInput(format!(
            "input {:?} expects shape {} ({}); got shape {:?}",
            sig.name,
            sig.shape_text(),
            want.as_str(),
            input.shape
        )));
    }
    let bytes = match input.data {
        InputData::Json(raw) => {
            let values = input.json_numbers(raw)?;
            return to_tensor(sig, NestedArray { shape: input.shape.clone(), values });
        }
        InputData::Binary(bytes) => bytes,
    };
    let shape: Vec<i64> = input.shape.iter().map(|d| *d as i64).collect();
    let fail = |e: ort::Error| HookError::Failed(format!("cannot build input tensor {:?}: {e}", sig.name));
    macro_rules! from_le {
        ($t:ty) => {{
            let v: Vec<$t> = bytes
                .chunks_exact(std::mem::size_of::<$t>())
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunks_exact gives whole elements")))
                .collect();
            Tensor::from_array((shape, v)).map_err(fail)?.into_dyn()
        }};
    }
    Ok(match sig.elem {
        Elem::F32 => from_le!(f32),
        Elem::F64 => from_le!(f64),
        Elem::I32 => from_le!(i32),
        Elem::I64 => from_le!(i64),
    })
}

/// Refuses a NaN or an infinity bound for a JSON answer (see [`write_output`]).
fn refuse_non_finite(name: &str, mut values: impl Iterator<Item = f64>) -> Result<(), HookError> {
    match values.find(|v| !v.is_finite()) {
        Some(bad) => Err(HookError::Failed(format!(
            "the model produced a non-finite value ({bad}) in output {name:?}, which JSON cannot represent; check the input's range"
        ))),
        None => Ok(()),
    }
}

/// Adds one output to a v2 answer: binary (any value, little-endian) or JSON (flat `data`).
fn write_v2_output(
    w: &mut oip::ResponseWriter,
    name: &str,
    value: &DynValue,
    elem: Elem,
    binary: bool,
) -> Result<(), HookError> {
    let fail = |e: ort::Error| HookError::Failed(format!("cannot read model output: {e}"));
    macro_rules! emit {
        ($t:ty, $w:expr) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(fail)?;
            let dims: Vec<usize> = shape.iter().map(|d| (*d).max(0) as usize).collect();
            if binary {
                // Checked before the bytes are gathered, so an output over the cap costs nothing.
                w.fits(std::mem::size_of_val(data))?;
                let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
                w.binary_output(name, elem.datatype(), &dims, &bytes)?;
            } else {
                refuse_non_finite(name, data.iter().map(|v| *v as f64))?;
                w.json_output(name, elem.datatype(), &dims, |out| {
                    tensor_json::write_nested(out, &[data.len()], data, &$w)
                })?;
            }
        }};
    }
    by_elem!(elem, emit);
    Ok(())
}

/// Runs the session and hands its outputs to `read` (they borrow the run's options); a run
/// that can be cancelled gets its own RunOptions, whose terminate flag ONNX Runtime checks
/// between nodes (and loop iterations).
fn run_session<T>(
    session: &mut Session,
    feeds: Vec<(Cow<'static, str>, SessionInputValue<'static>)>,
    cancel: Option<&super::cancel::Cancellation>,
    read: impl FnOnce(&SessionOutputs<'_>) -> Result<T, HookError>,
) -> Result<T, HookError> {
    let ort_failed = |e: ort::Error| HookError::Failed(format!("ONNX Runtime failed to score the request: {e}"));
    match cancel {
        Some(cancel) => {
            let options = Arc::new(RunOptions::new().map_err(ort_failed)?);
            let stop = Arc::clone(&options);
            if !cancel.on_cancel(move || {
                let _ = stop.terminate();
            }) {
                return Err(HookError::Failed("cancelled before it started".into()));
            }
            let outcome = session.run_with_options(feeds, &options);
            cancel.clear();
            let results = outcome.map_err(ort_failed)?;
            read(&results)
        }
        None => read(&session.run(feeds).map_err(ort_failed)?),
    }
}

/// Writes one output tensor as JSON. `flatten` turns a `[N]` or `[N, 1]` output into a flat
/// list of N numbers (the `{"data": ...}` answer form).
///
/// A NaN or an infinity (e.g. a float64 overflow on inputs like 1e308) has no JSON spelling;
/// writing it as `null` would answer a number with "no value" under a 200. It is the model's
/// failure instead (424, naming the output), so the caller never mistakes it for an answer.
fn write_output(out: &mut Vec<u8>, name: &str, value: &DynValue, elem: Elem, flatten: bool) -> Result<(), HookError> {
    let fail = |e: ort::Error| HookError::Failed(format!("cannot read model output: {e}"));
    macro_rules! emit {
        ($t:ty, $w:expr) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(fail)?;
            refuse_non_finite(name, data.iter().map(|v| *v as f64))?;
            let mut dims: Vec<usize> = shape.iter().map(|d| (*d).max(0) as usize).collect();
            if flatten && (dims.len() == 1 || (dims.len() == 2 && dims[1] == 1)) {
                dims = vec![data.len()];
            }
            tensor_json::write_nested(out, &dims, data, &$w);
        }};
    }
    by_elem!(elem, emit);
    Ok(())
}

impl ScoringHook for OnnxHook {
    fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
        let parsed: ScoreRequest = serde_json::from_slice(request.body)
            .map_err(|e| HookError::BadInput(format!("request body is not valid: {e}; {}", self.expected())))?;
        let Self { session, inputs, outputs, .. } = self;
        let (feeds, named) = match (parsed.data, parsed.inputs) {
            (Some(data), None) => {
                let [sig] = inputs.as_slice() else {
                    let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
                    return Err(HookError::BadInput(format!(
                        "this model has {} inputs ({}); send them by name as {{\"inputs\": {{\"NAME\": [...], ...}}}}",
                        names.len(),
                        names.join(", ")
                    )));
                };
                (vec![(Cow::Owned(sig.name.clone()), SessionInputValue::from(to_tensor(sig, data)?))], false)
            }
            (None, Some(mut map)) => {
                let mut feeds = Vec::with_capacity(inputs.len());
                for sig in inputs.iter() {
                    let array = map.remove(&sig.name).ok_or_else(|| {
                        HookError::BadInput(format!(
                            "missing input {:?} ({} {})",
                            sig.name,
                            sig.elem.name(),
                            sig.shape_text()
                        ))
                    })?;
                    feeds.push((Cow::Owned(sig.name.clone()), SessionInputValue::from(to_tensor(sig, array)?)));
                }
                if let Some(extra) = map.keys().next() {
                    let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
                    return Err(HookError::BadInput(format!(
                        "the model has no input {extra:?}; its inputs are {}",
                        names.join(", ")
                    )));
                }
                (feeds, true)
            }
            _ => {
                return Err(HookError::BadInput(
                    "request body must have exactly one of \"data\" or \"inputs\"".to_string(),
                ))
            }
        };
        run_session(session, feeds, request.cancel, |results| {
            let mut body = Vec::with_capacity(64);
            if named {
                body.extend_from_slice(b"{\"outputs\":{");
                let mut first = true;
                for (i, sig) in outputs.iter().enumerate() {
                    let Some(elem) = sig.elem else { continue };
                    if !first {
                        body.push(b',');
                    }
                    first = false;
                    serde_json::to_writer(&mut body, &sig.name).map_err(|e| HookError::Failed(e.to_string()))?;
                    body.push(b':');
                    write_output(&mut body, &sig.name, &results[i], elem, false)?;
                    if body.len() > super::MAX_ANSWER_BYTES {
                        return Err(HookError::Failed(super::answer_over_cap(None)));
                    }
                }
                body.extend_from_slice(b"}}");
            } else {
                let (i, name, elem) = outputs
                    .iter()
                    .enumerate()
                    .find_map(|(i, o)| o.elem.map(|e| (i, o.name.as_str(), e)))
                    .expect("init refuses models without a numeric tensor output");
                write_output(&mut body, name, &results[i], elem, true)?;
            }
            if body.len() > super::MAX_ANSWER_BYTES {
                return Err(HookError::Failed(super::answer_over_cap(Some(body.len()))));
            }
            Ok(HookResponse::json(body))
        })
    }

    fn infer(&mut self, request: HookRequest<'_>, header_length: Option<usize>) -> Result<Answer, HookError> {
        let parsed = oip::parse_request(request.body, header_length)?;
        let Self { session, inputs, outputs, model_name, model_version } = self;
        let names = |list: &mut dyn Iterator<Item = &str>| list.collect::<Vec<_>>().join(", ");
        if let Some(extra) = parsed.inputs.iter().find(|i| !inputs.iter().any(|s| s.name == i.name)) {
            return Err(HookError::BadInput(format!(
                "the model has no input {:?}; its inputs are {}",
                extra.name,
                names(&mut inputs.iter().map(|i| i.name.as_str()))
            )));
        }
        let mut feeds = Vec::with_capacity(inputs.len());
        for sig in inputs.iter() {
            let input = parsed.inputs.iter().find(|i| i.name == sig.name).ok_or_else(|| {
                HookError::BadInput(format!(
                    "missing input {:?} ({} {})",
                    sig.name,
                    sig.elem.datatype().as_str(),
                    sig.shape_text()
                ))
            })?;
            feeds.push((Cow::Owned(sig.name.clone()), SessionInputValue::from(v2_tensor(sig, input)?)));
        }
        // Each output answered: its index in the model's outputs, and whether in binary.
        let wanted: Vec<(usize, Elem, bool)> = match &parsed.outputs {
            None => {
                outputs.iter().enumerate().filter_map(|(i, o)| o.elem.map(|e| (i, e, parsed.binary_output))).collect()
            }
            Some(list) => list
                .iter()
                .map(|o| {
                    outputs
                        .iter()
                        .enumerate()
                        .find_map(|(i, s)| s.elem.filter(|_| s.name == o.name).map(|e| (i, e, o.is_binary(&parsed))))
                        .ok_or_else(|| {
                            HookError::BadInput(format!(
                                "the model has no output {:?}; its outputs are {}",
                                o.name,
                                names(&mut outputs.iter().filter(|s| s.elem.is_some()).map(|s| s.name.as_str()))
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let mut w = oip::ResponseWriter::new(model_name, model_version.as_deref(), parsed.id.as_deref());
        run_session(session, feeds, request.cancel, |results| {
            for (i, elem, binary) in wanted {
                write_v2_output(&mut w, &outputs[i].name, &results[i], elem, binary)?;
            }
            Ok(())
        })?;
        let (body, header_length) = w.finish();
        let mut response = HookResponse::json(body);
        if header_length.is_some() {
            response.content_type = "application/octet-stream";
        }
        Ok(Answer { response, header_length })
    }

    fn signature(&self) -> Option<Signature> {
        let spec = |name: &str, elem: Elem, dims: &[i64]| TensorSpec {
            name: name.to_string(),
            datatype: elem.datatype(),
            shape: dims.to_vec(),
        };
        Some(Signature {
            inputs: self.inputs.iter().map(|i| spec(&i.name, i.elem, &i.dims)).collect(),
            outputs: self.outputs.iter().filter_map(|o| o.elem.map(|e| spec(&o.name, e, &o.dims))).collect(),
        })
    }

    fn describe(&self) -> String {
        let inputs: Vec<String> =
            self.inputs.iter().map(|i| format!("{} {} {}", i.name, i.elem.name(), i.shape_text())).collect();
        let outputs: Vec<String> = self
            .outputs
            .iter()
            .map(|o| format!("{} {}", o.name, o.elem.map_or("(not returned)", Elem::name)))
            .collect();
        format!("onnx model loaded: inputs [{}]; outputs [{}]", inputs.join(", "), outputs.join(", "))
    }
}
