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

use super::batch::{Array, Prepared, Reply};
use super::oip::{self, Datatype, InputData};
use super::tensor_json::{self, NestedArray, ScoreRequest};
use super::{Answer, HookError, HookRequest, HookResponse, InitContext, Protocol, ScoringHook, Signature, TensorSpec};

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
    /// The name the model gives its first dimension, if any (`batch_size`, `N`).
    first_symbol: String,
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
    /// The name the model gives its first dimension, if any.
    first_symbol: String,
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
    /// `batching:` is set and the model cannot batch; the message names the input or output.
    #[error("{0}")]
    NotBatchable(String),
}

/// The model's signature and names: what requests are checked against. Shared by a
/// deployment version's instances and by its batcher, which prepares requests without an
/// instance ([`super::batch::Prepare`]).
#[derive(Debug)]
pub(crate) struct Model {
    inputs: Vec<InputSig>,
    outputs: Vec<OutputSig>,
    /// The model's name and version, for v2 answers.
    model_name: String,
    model_version: Option<String>,
}

/// One instance's ONNX Runtime session and the model's signature.
pub struct OnnxHook {
    session: Session,
    model: Arc<Model>,
    /// Why this model's outputs could not be split by rows, once a stacked run showed it: its
    /// batches then run request by request (said once in the deployment's log), rather than
    /// every batch being run twice.
    apart: Option<String>,
    /// The deployment's log.
    logs: Arc<crate::telemetry::LogRing>,
}

/// Reads a session's inputs and outputs; refuses what the hook cannot serve.
fn read_signature(session: &Session) -> Result<(Vec<InputSig>, Vec<OutputSig>), OnnxLoadError> {
    let mut inputs = Vec::new();
    for input in session.inputs() {
        let ValueType::Tensor { ty, shape, dimension_symbols } = input.dtype() else {
            return Err(OnnxLoadError::InputNotTensor { name: input.name().to_string() });
        };
        let elem = Elem::from_ort(*ty)
            .ok_or_else(|| OnnxLoadError::InputType { name: input.name().to_string(), ty: format!("{ty:?}") })?;
        let first_symbol = dimension_symbols.first().cloned().unwrap_or_default();
        inputs.push(InputSig { name: input.name().to_string(), elem, dims: shape.to_vec(), first_symbol });
    }
    let outputs = session
        .outputs()
        .iter()
        .map(|o| {
            let (elem, dims, first_symbol) = match o.dtype() {
                ValueType::Tensor { ty, shape, dimension_symbols } => {
                    (Elem::from_ort(*ty), shape.to_vec(), dimension_symbols.first().cloned().unwrap_or_default())
                }
                _ => (None, Vec::new(), String::new()),
            };
            OutputSig { name: o.name().to_string(), elem, dims, first_symbol }
        })
        .collect::<Vec<_>>();
    if !outputs.iter().any(|o| o.elem.is_some()) {
        return Err(OnnxLoadError::NoNumericOutput);
    }
    Ok((inputs, outputs))
}

/// Why a model cannot batch (issue 29), naming the input or output: every input needs a free
/// first dimension to stack requests along, and no numeric output may fix its first
/// dimension, or the answers could not be split back by rows.
fn batching_refusal(inputs: &[InputSig], outputs: &[OutputSig]) -> Option<String> {
    for i in inputs {
        match i.dims.first() {
            None => {
                return Some(format!(
                "input {:?} is a scalar ({}): batching stacks requests along a free first dimension; remove batching",
                i.name,
                i.elem.name()
            ))
            }
            Some(d) if *d >= 0 => {
                return Some(format!(
                    "input {:?} has a fixed first dimension {d} (shape {}): batching needs it free (N) to stack \
                     requests along it; export the model with a dynamic batch dimension or remove batching",
                    i.name,
                    i.shape_text()
                ))
            }
            _ => {}
        }
    }
    if let Some(fixed) = outputs.iter().filter(|o| o.elem.is_some()).find_map(|o| match o.dims.first() {
        Some(d) if *d >= 0 => Some(format!(
            "output {:?} has a fixed first dimension {d}: batching splits answers by rows along a free first \
             dimension; remove batching",
            o.name
        )),
        _ => None,
    }) {
        return Some(fixed);
    }
    // First dimensions the model names differently are different axes (a time-major sequence
    // input `[T, N, F]` beside an output `[N, K]`): stacking along them would mix requests.
    // Unnamed ones (and ONNX Runtime's own `unk__` names) cannot be told apart and pass; the
    // contract says axis 0 must hold independent rows.
    let named = |s: &str| !s.is_empty() && !s.starts_with("unk__");
    let mut firsts = inputs
        .iter()
        .map(|i| ("input", &i.name, &i.first_symbol))
        .chain(outputs.iter().filter(|o| o.elem.is_some()).map(|o| ("output", &o.name, &o.first_symbol)))
        .filter(|(_, _, s)| named(s));
    let (kind, name, symbol) = firsts.next()?;
    firsts.find(|(_, _, s)| s != &symbol).map(|(k, n, s)| {
        format!(
            "{kind} {name:?} names its first dimension {symbol:?} but {k} {n:?} names its {s:?}: batching stacks \
             requests along one batch dimension shared by every input and output; remove batching"
        )
    })
}

/// Whether the model file can batch: opens it once (no graph optimisation; its inputs and
/// outputs are all that is read) and names the input or output that cannot. For the control
/// plane, so a create with `batching:` is refused with a 400 before anything loads.
pub(crate) fn check_batchable(model_file: &Path) -> Result<(), String> {
    let environment = super::ort_runtime::environment().map_err(|e| e.to_string())?;
    let configure = |e: &dyn std::fmt::Display| format!("cannot configure an ONNX Runtime session: {e}");
    let session = Session::builder(environment)
        .map_err(|e| configure(&e))?
        .with_optimization_level(GraphOptimizationLevel::Disable)
        .map_err(|e| configure(&e))?
        .commit_from_file(model_file)
        .map_err(|e| format!("cannot load ONNX model {}: {e}", model_file.display()))?;
    let (inputs, outputs) = read_signature(&session).map_err(|e| e.to_string())?;
    batching_refusal(&inputs, &outputs).map_or(Ok(()), Err)
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
        let (inputs, outputs) = read_signature(&session)?;
        if ctx.batching {
            // Checked at create too; the file may have changed since.
            if let Some(why) = batching_refusal(&inputs, &outputs) {
                return Err(OnnxLoadError::NotBatchable(why));
            }
        }
        let model =
            Model { inputs, outputs, model_name: ctx.model_name.clone(), model_version: ctx.model_version.clone() };
        Ok(Self { session, model: Arc::new(model), apart: None, logs: Arc::clone(&ctx.logs) })
    }
}

impl Model {
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

    /// A `/score` body's inputs, one per model input in the model's order, and how it is
    /// answered (`{"data"}`: flat; `{"inputs"}`: named).
    fn parse_score(&self, body: &[u8]) -> Result<(Vec<Values>, Reply), HookError> {
        let parsed: ScoreRequest = serde_json::from_slice(body)
            .map_err(|e| HookError::BadInput(format!("request body is not valid: {e}; {}", self.expected())))?;
        match (parsed.data, parsed.inputs) {
            (Some(data), None) => {
                let [sig] = self.inputs.as_slice() else {
                    let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
                    return Err(HookError::BadInput(format!(
                        "this model has {} inputs ({}); send them by name as {{\"inputs\": {{\"NAME\": [...], ...}}}}",
                        names.len(),
                        names.join(", ")
                    )));
                };
                Ok((vec![to_values(sig, data)?], Reply::Flat))
            }
            (None, Some(mut map)) => {
                let mut values = Vec::with_capacity(self.inputs.len());
                for sig in self.inputs.iter() {
                    let array = map.remove(&sig.name).ok_or_else(|| {
                        HookError::BadInput(format!(
                            "missing input {:?} ({} {})",
                            sig.name,
                            sig.elem.name(),
                            sig.shape_text()
                        ))
                    })?;
                    values.push(to_values(sig, array)?);
                }
                if let Some(extra) = map.keys().next() {
                    let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
                    return Err(HookError::BadInput(format!(
                        "the model has no input {extra:?}; its inputs are {}",
                        names.join(", ")
                    )));
                }
                Ok((values, Reply::Named))
            }
            _ => Err(HookError::BadInput("request body must have exactly one of \"data\" or \"inputs\"".to_string())),
        }
    }

    /// A v2 `infer` body's inputs in the model's order, and the outputs it asks for.
    fn parse_infer(&self, body: &[u8], header_length: Option<usize>) -> Result<(Vec<Values>, Reply), HookError> {
        let parsed = oip::parse_request(body, header_length)?;
        let names = |list: &mut dyn Iterator<Item = &str>| list.collect::<Vec<_>>().join(", ");
        if let Some(extra) = parsed.inputs.iter().find(|i| !self.inputs.iter().any(|s| s.name == i.name)) {
            return Err(HookError::BadInput(format!(
                "the model has no input {:?}; its inputs are {}",
                extra.name,
                names(&mut self.inputs.iter().map(|i| i.name.as_str()))
            )));
        }
        let mut values = Vec::with_capacity(self.inputs.len());
        for sig in self.inputs.iter() {
            let input = parsed.inputs.iter().find(|i| i.name == sig.name).ok_or_else(|| {
                HookError::BadInput(format!(
                    "missing input {:?} ({} {})",
                    sig.name,
                    sig.elem.datatype().as_str(),
                    sig.shape_text()
                ))
            })?;
            values.push(v2_values(sig, input)?);
        }
        // Each output answered: its index in the model's outputs, and whether in binary.
        let outputs: Vec<(usize, bool)> = match &parsed.outputs {
            None => {
                self.outputs.iter().enumerate().filter_map(|(i, o)| o.elem.map(|_| (i, parsed.binary_output))).collect()
            }
            Some(list) => list
                .iter()
                .map(|o| {
                    self.outputs
                        .iter()
                        .enumerate()
                        .find_map(|(i, s)| s.elem.filter(|_| s.name == o.name).map(|_| (i, o.is_binary(&parsed))))
                        .ok_or_else(|| {
                            HookError::BadInput(format!(
                                "the model has no output {:?}; its outputs are {}",
                                o.name,
                                names(&mut self.outputs.iter().filter(|s| s.elem.is_some()).map(|s| s.name.as_str()))
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok((values, Reply::Infer { id: parsed.id, outputs }))
    }

    /// The answer `reply` asks for, from the run's numeric outputs (`outputs[i]` is the
    /// model's output `i`, `None` for one that is not a numeric tensor).
    fn answer(&self, reply: &Reply, outputs: &[Option<Output<'_>>]) -> Result<Answer, HookError> {
        let get = |i: usize| {
            outputs
                .get(i)
                .and_then(Option::as_ref)
                .ok_or_else(|| HookError::Failed(format!("the model gave no output {:?}", self.outputs[i].name)))
        };
        match reply {
            Reply::Flat => {
                let i = self
                    .outputs
                    .iter()
                    .position(|o| o.elem.is_some())
                    .expect("init refuses models without a numeric tensor output");
                let mut body = Vec::with_capacity(64);
                write_output(&mut body, &self.outputs[i].name, get(i)?, true)?;
                if body.len() > super::MAX_ANSWER_BYTES {
                    return Err(HookError::Failed(super::answer_over_cap(Some(body.len()))));
                }
                Ok(Answer { response: HookResponse::json(body), header_length: None })
            }
            Reply::Named => {
                let mut body = Vec::with_capacity(64);
                body.extend_from_slice(b"{\"outputs\":{");
                let mut first = true;
                for (i, sig) in self.outputs.iter().enumerate() {
                    if sig.elem.is_none() {
                        continue;
                    }
                    if !first {
                        body.push(b',');
                    }
                    first = false;
                    serde_json::to_writer(&mut body, &sig.name).map_err(|e| HookError::Failed(e.to_string()))?;
                    body.push(b':');
                    write_output(&mut body, &sig.name, get(i)?, false)?;
                    if body.len() > super::MAX_ANSWER_BYTES {
                        return Err(HookError::Failed(super::answer_over_cap(None)));
                    }
                }
                body.extend_from_slice(b"}}");
                if body.len() > super::MAX_ANSWER_BYTES {
                    return Err(HookError::Failed(super::answer_over_cap(Some(body.len()))));
                }
                Ok(Answer { response: HookResponse::json(body), header_length: None })
            }
            Reply::Infer { id, outputs: wanted } => {
                let mut w = oip::ResponseWriter::new(&self.model_name, self.model_version.as_deref(), id.as_deref());
                for (i, binary) in wanted {
                    write_v2_output(&mut w, &self.outputs[*i].name, get(*i)?, *binary)?;
                }
                let (body, header_length) = w.finish();
                let mut response = HookResponse::json(body);
                if header_length.is_some() {
                    response.content_type = "application/octet-stream";
                }
                Ok(Answer { response, header_length })
            }
        }
    }

    /// The run's numeric outputs, read in place (none copied).
    fn read_outputs<'r>(&self, results: &'r SessionOutputs<'_>) -> Result<Vec<Option<Output<'r>>>, HookError> {
        self.outputs
            .iter()
            .enumerate()
            .map(|(i, sig)| sig.elem.map(|elem| Output::read(&results[i], elem)).transpose())
            .collect()
    }
}

impl super::batch::Prepare for Model {
    fn prepare(&self, request: HookRequest<'_>, protocol: Protocol) -> Result<Prepared, HookError> {
        let (values, reply) = match protocol {
            Protocol::Score => self.parse_score(request.body)?,
            Protocol::Infer { header_length } => self.parse_infer(request.body, header_length)?,
        };
        let inputs = values.into_iter().map(Values::into_array).collect::<Result<_, _>>()?;
        Ok(Prepared { inputs, reply })
    }
}

/// One input's elements, typed as the model takes them, and its shape.
struct Values {
    shape: Vec<usize>,
    data: Data,
}

/// Elements of one of the types the JSON and binary forms carry.
enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

impl Values {
    /// The ONNX Runtime tensor (the elements are moved, not copied).
    fn into_value(self, name: &str) -> Result<DynValue, HookError> {
        let shape: Vec<i64> = self.shape.iter().map(|d| *d as i64).collect();
        let fail = |e: ort::Error| HookError::Failed(format!("cannot build input tensor {name:?}: {e}"));
        Ok(match self.data {
            Data::F32(v) => Tensor::from_array((shape, v)).map_err(fail)?.into_dyn(),
            Data::F64(v) => Tensor::from_array((shape, v)).map_err(fail)?.into_dyn(),
            Data::I32(v) => Tensor::from_array((shape, v)).map_err(fail)?.into_dyn(),
            Data::I64(v) => Tensor::from_array((shape, v)).map_err(fail)?.into_dyn(),
        })
    }

    /// The `ndarray` array a batch stacks.
    fn into_array(self) -> Result<Array, HookError> {
        let shape = &self.shape;
        Ok(match self.data {
            Data::F32(v) => Array::F32(Array::from_shape_vec(shape, v)?),
            Data::F64(v) => Array::F64(Array::from_shape_vec(shape, v)?),
            Data::I32(v) => Array::I32(Array::from_shape_vec(shape, v)?),
            Data::I64(v) => Array::I64(Array::from_shape_vec(shape, v)?),
        })
    }
}

/// A stacked (or lone) batch input as an ONNX Runtime tensor, without a copy when its layout
/// is standard (it always is: stacked, or built from a row-major vector).
fn array_value(array: Array, name: &str) -> Result<DynValue, HookError> {
    let fail = |e: ort::Error| HookError::Failed(format!("cannot build input tensor {name:?}: {e}"));
    Ok(match array {
        Array::F32(a) => Tensor::from_array(a).map_err(fail)?.into_dyn(),
        Array::F64(a) => Tensor::from_array(a).map_err(fail)?.into_dyn(),
        Array::I32(a) => Tensor::from_array(a).map_err(fail)?.into_dyn(),
        Array::I64(a) => Tensor::from_array(a).map_err(fail)?.into_dyn(),
    })
}

/// One numeric output tensor of a run, borrowed from its results: its dimensions and its
/// row-major elements.
#[derive(Debug, Clone)]
struct Output<'a> {
    dims: Vec<usize>,
    data: Elements<'a>,
}

/// Borrowed elements of one type.
#[derive(Debug, Clone, Copy)]
enum Elements<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    I32(&'a [i32]),
    I64(&'a [i64]),
}

impl<'a> Output<'a> {
    /// Reads an output tensor in place.
    fn read(value: &'a DynValue, elem: Elem) -> Result<Self, HookError> {
        let fail = |e: ort::Error| HookError::Failed(format!("cannot read model output: {e}"));
        let dims = |shape: &ort::value::Shape| shape.iter().map(|d| (*d).max(0) as usize).collect::<Vec<_>>();
        match elem {
            Elem::F32 => value.try_extract_tensor::<f32>().map(|(s, d)| Self { dims: dims(s), data: Elements::F32(d) }),
            Elem::F64 => value.try_extract_tensor::<f64>().map(|(s, d)| Self { dims: dims(s), data: Elements::F64(d) }),
            Elem::I32 => value.try_extract_tensor::<i32>().map(|(s, d)| Self { dims: dims(s), data: Elements::I32(d) }),
            Elem::I64 => value.try_extract_tensor::<i64>().map(|(s, d)| Self { dims: dims(s), data: Elements::I64(d) }),
        }
        .map_err(fail)
    }

    /// Rows `from .. from + count` along the first dimension (a batch's share of the run).
    fn rows(&self, from: usize, count: usize) -> Self {
        let stride: usize = self.dims.iter().skip(1).product();
        let (a, b) = (from * stride, (from + count) * stride);
        let mut dims = self.dims.clone();
        if let Some(first) = dims.first_mut() {
            *first = count;
        }
        let data = match self.data {
            Elements::F32(d) => Elements::F32(&d[a..b]),
            Elements::F64(d) => Elements::F64(&d[a..b]),
            Elements::I32(d) => Elements::I32(&d[a..b]),
            Elements::I64(d) => Elements::I64(&d[a..b]),
        };
        Self { dims, data }
    }

    fn elem(&self) -> Elem {
        match self.data {
            Elements::F32(_) => Elem::F32,
            Elements::F64(_) => Elem::F64,
            Elements::I32(_) => Elem::I32,
            Elements::I64(_) => Elem::I64,
        }
    }
}

/// Whether `shape` fits the input's declared dimensions (-1 matches any length).
fn shape_fits(sig: &InputSig, shape: &[usize]) -> bool {
    sig.dims.is_empty() && shape.is_empty()
        || (sig.dims.len() == shape.len() && sig.dims.iter().zip(shape).all(|(d, n)| *d < 0 || *d as usize == *n))
}

/// Checks one parsed array against the input (shape, range) and types its elements.
fn to_values(sig: &InputSig, array: NestedArray) -> Result<Values, HookError> {
    if !shape_fits(sig, &array.shape) {
        return Err(HookError::BadInput(format!(
            "input {:?} expects a {} array of shape {}; got shape {:?}",
            sig.name,
            sig.elem.name(),
            sig.shape_text(),
            array.shape
        )));
    }
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
    let data = match sig.elem {
        Elem::F64 => Data::F64(array.values),
        Elem::F32 => {
            // A float64 beyond float32's range would become an infinity inside the model.
            if let Some(v) = array.values.iter().find(|v| v.abs() > f32::MAX as f64) {
                return Err(HookError::BadInput(format!(
                    "input {:?} is float32: {v} is outside its range (±{:e})",
                    sig.name,
                    f32::MAX
                )));
            }
            Data::F32(array.values.iter().map(|x| *x as f32).collect())
        }
        Elem::I64 => Data::I64(integers(64)?),
        Elem::I32 => Data::I32(integers(32)?.into_iter().map(|x| x as i32).collect()),
    };
    Ok(Values { shape: array.shape, data })
}

/// Runs `$emit!(elements, JSON writer)` for an output's elements: the one place an element
/// type picks both.
macro_rules! by_elements {
    ($data:expr, $emit:ident) => {
        match $data {
            Elements::F64(d) => $emit!(d, tensor_json::write_f64),
            Elements::F32(d) => $emit!(d, tensor_json::write_f32),
            Elements::I64(d) => $emit!(d, tensor_json::write_i64),
            Elements::I32(d) => $emit!(d, |o: &mut Vec<u8>, v: i32| tensor_json::write_i64(o, v as i64)),
        }
    };
}

/// Checks one v2 input: its datatype must be the model's and its shape must fit; JSON data
/// goes through the same checks as `/score`'s, binary data is read as little-endian elements.
fn v2_values(sig: &InputSig, input: &oip::Input<'_>) -> Result<Values, HookError> {
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
            return to_values(sig, NestedArray { shape: input.shape.clone(), values });
        }
        InputData::Binary(bytes) => bytes,
    };
    macro_rules! from_le {
        ($t:ty) => {
            bytes
                .chunks_exact(std::mem::size_of::<$t>())
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunks_exact gives whole elements")))
                .collect()
        };
    }
    let data = match sig.elem {
        Elem::F32 => Data::F32(from_le!(f32)),
        Elem::F64 => Data::F64(from_le!(f64)),
        Elem::I32 => Data::I32(from_le!(i32)),
        Elem::I64 => Data::I64(from_le!(i64)),
    };
    Ok(Values { shape: input.shape.clone(), data })
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
    output: &Output<'_>,
    binary: bool,
) -> Result<(), HookError> {
    let datatype = output.elem().datatype();
    macro_rules! emit {
        ($data:expr, $w:expr) => {{
            if binary {
                // Checked before the bytes are gathered, so an output over the cap costs nothing.
                w.fits(std::mem::size_of_val($data))?;
                let bytes: Vec<u8> = $data.iter().flat_map(|v| v.to_le_bytes()).collect();
                w.binary_output(name, datatype, &output.dims, &bytes)?;
            } else {
                refuse_non_finite(name, $data.iter().map(|v| *v as f64))?;
                w.json_output(name, datatype, &output.dims, |out| {
                    tensor_json::write_nested(out, &[$data.len()], $data, &$w)
                })?;
            }
        }};
    }
    by_elements!(output.data, emit);
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
fn write_output(out: &mut Vec<u8>, name: &str, output: &Output<'_>, flatten: bool) -> Result<(), HookError> {
    macro_rules! emit {
        ($data:expr, $w:expr) => {{
            refuse_non_finite(name, $data.iter().map(|v| *v as f64))?;
            let dims = &output.dims;
            if flatten && (dims.len() == 1 || (dims.len() == 2 && dims[1] == 1)) {
                tensor_json::write_nested(out, &[$data.len()], $data, &$w);
            } else {
                tensor_json::write_nested(out, dims, $data, &$w);
            }
        }};
    }
    by_elements!(output.data, emit);
    Ok(())
}

impl Model {
    /// Feeds the session one value per model input, in order.
    fn feeds(
        &self,
        values: impl IntoIterator<Item = Result<DynValue, HookError>>,
    ) -> Result<Vec<(Cow<'static, str>, SessionInputValue<'static>)>, HookError> {
        self.inputs
            .iter()
            .zip(values)
            .map(|(sig, v)| Ok((Cow::Owned(sig.name.clone()), SessionInputValue::from(v?))))
            .collect()
    }
}

impl OnnxHook {
    /// Runs prepared requests one by one (a batch whose stacked run failed, or that cannot be
    /// split): each gets what it would get alone.
    fn each_alone(
        &mut self,
        inputs: Vec<Vec<Array>>,
        replies: &[Reply],
        cancel: Option<&super::cancel::Cancellation>,
    ) -> Vec<Result<Answer, HookError>> {
        let Self { session, model, .. } = self;
        inputs
            .into_iter()
            .zip(replies)
            .map(|(arrays, reply)| {
                let feeds = model.feeds(model.inputs.iter().zip(arrays).map(|(sig, a)| array_value(a, &sig.name)))?;
                run_session(session, feeds, cancel, |results| model.answer(reply, &model.read_outputs(results)?))
            })
            .collect()
    }

    /// Parses, runs and answers one request alone.
    fn run_alone(
        &mut self,
        (values, reply): (Vec<Values>, Reply),
        cancel: Option<&super::cancel::Cancellation>,
    ) -> Result<Answer, HookError> {
        let Self { session, model, .. } = self;
        let feeds = model.feeds(model.inputs.iter().zip(values).map(|(sig, v)| v.into_value(&sig.name)))?;
        run_session(session, feeds, cancel, |results| model.answer(&reply, &model.read_outputs(results)?))
    }
}

impl ScoringHook for OnnxHook {
    fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
        let parsed = self.model.parse_score(request.body)?;
        self.run_alone(parsed, request.cancel).map(|a| a.response)
    }

    fn infer(&mut self, request: HookRequest<'_>, header_length: Option<usize>) -> Result<Answer, HookError> {
        let parsed = self.model.parse_infer(request.body, header_length)?;
        self.run_alone(parsed, request.cancel)
    }

    fn preparer(&self) -> Option<Arc<dyn super::batch::Prepare>> {
        Some(Arc::clone(&self.model) as _)
    }

    /// Stacks each input of the batch along its first dimension (`ndarray`), runs the session
    /// once, and answers each request with its own rows, in its own form. A failed run fails
    /// every request of the batch with its message; a failure in one request's answer (a
    /// non-finite value in its rows, an answer over the cap) is that request's alone.
    fn run_batch(
        &mut self,
        batch: Vec<Prepared>,
        cancel: Option<&super::cancel::Cancellation>,
    ) -> Vec<Result<Answer, HookError>> {
        let n = batch.len();
        let model = Arc::clone(&self.model);
        let rows: Vec<usize> = batch.iter().map(|p| p.rows().unwrap_or(0)).collect();
        let total: usize = rows.iter().sum();
        let (replies, mut inputs): (Vec<Reply>, Vec<Vec<Array>>) =
            batch.into_iter().map(|p| (p.reply, p.inputs)).unzip();
        if n > 1 && self.apart.is_some() {
            return self.each_alone(inputs, &replies, cancel);
        }
        let stacked: Result<Vec<Array>, HookError> = if n == 1 {
            Ok(inputs.pop().unwrap_or_default())
        } else {
            (0..model.inputs.len()).map(|k| Array::stack(&inputs.iter().map(|p| &p[k]).collect::<Vec<_>>())).collect()
        };
        let feeds = stacked
            .and_then(|arrays| model.feeds(model.inputs.iter().zip(arrays).map(|(sig, a)| array_value(a, &sig.name))));
        let mut unsplittable = None;
        let outcome = feeds.and_then(|feeds| {
            run_session(&mut self.session, feeds, cancel, |results| {
                let outputs = model.read_outputs(results)?;
                if n == 1 {
                    return Ok(vec![model.answer(&replies[0], &outputs)]);
                }
                // Every output must keep the batch's rows to be split back.
                for (sig, out) in model.outputs.iter().zip(&outputs) {
                    if let Some(out) = out {
                        if out.dims.first() != Some(&total) {
                            let why = format!(
                                "output {:?} has shape {:?} for a batch of {total} rows: its first dimension is not the \
                                 batch's, so the answers cannot be split by request; this instance runs its batches \
                                 request by request from now on (remove batching for this model)",
                                sig.name, out.dims
                            );
                            unsplittable = Some(why.clone());
                            return Err(HookError::Failed(why));
                        }
                    }
                }
                let mut from = 0;
                Ok(replies
                    .iter()
                    .zip(&rows)
                    .map(|(reply, &count)| {
                        let mine: Vec<Option<Output<'_>>> =
                            outputs.iter().map(|o| o.as_ref().map(|o| o.rows(from, count))).collect();
                        from += count;
                        model.answer(reply, &mine)
                    })
                    .collect())
            })
        });
        if let Some(why) = unsplittable {
            tracing::warn!("{why}");
            self.logs.push(format!("WARNING batching: {why}"));
            self.apart = Some(why);
        }
        match outcome {
            Ok(answers) => answers,
            // A stacked run that failed (one request's rows can fail a whole run) is run again
            // request by request, unless it was stopped: the model's error then reaches only
            // the requests it belongs to, each with its own 424, as without batching.
            Err(_) if n > 1 && !cancel.is_some_and(super::cancel::Cancellation::is_cancelled) => {
                self.each_alone(inputs, &replies, cancel)
            }
            Err(e) => vec![Err(e); n],
        }
    }

    fn signature(&self) -> Option<Signature> {
        let spec = |name: &str, elem: Elem, dims: &[i64]| TensorSpec {
            name: name.to_string(),
            datatype: elem.datatype(),
            shape: dims.to_vec(),
        };
        let m = &self.model;
        Some(Signature {
            inputs: m.inputs.iter().map(|i| spec(&i.name, i.elem, &i.dims)).collect(),
            outputs: m.outputs.iter().filter_map(|o| o.elem.map(|e| spec(&o.name, e, &o.dims))).collect(),
        })
    }

    fn describe(&self) -> String {
        let m = &self.model;
        let inputs: Vec<String> =
            m.inputs.iter().map(|i| format!("{} {} {}", i.name, i.elem.name(), i.shape_text())).collect();
        let outputs: Vec<String> =
            m.outputs.iter().map(|o| format!("{} {}", o.name, o.elem.map_or("(not returned)", Elem::name))).collect();
        format!("onnx model loaded: inputs [{}]; outputs [{}]", inputs.join(", "), outputs.join(", "))
    }
}

#[cfg(test)]
mod batch_tests {
    //! Issue 29's property: a stacked run answers every request exactly as its own run would.

    use std::sync::{Mutex, OnceLock};

    use proptest::prelude::*;

    use super::*;
    use crate::hooks::Headers;

    /// model-3 (float32, 512 → 16) and model-1 (float64, 10 → 1), loaded once.
    fn hook(model: usize) -> &'static Mutex<OnnxHook> {
        static HOOKS: OnceLock<[Mutex<OnnxHook>; 2]> = OnceLock::new();
        let load = |dir: &str| {
            let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(dir).join("model.onnx");
            let mut ctx = InitContext::new("batch-test", Default::default());
            ctx.batching = true;
            ctx.model_name = dir.into();
            Mutex::new(OnnxHook::load(&file, &ctx).unwrap())
        };
        &HOOKS.get_or_init(|| [load("model-3"), load("model-1")])[model]
    }

    /// A request of `rows` rows in one of the forms: `/score`, v2 JSON, v2 binary.
    fn request(model: usize, rows: usize, form: u8, seed: u64) -> (Vec<u8>, Protocol) {
        let (width, datatype) = if model == 0 { (512, "FP32") } else { (10, "FP64") };
        let mut rng = fastrand::Rng::with_seed(seed);
        let values: Vec<f64> = (0..rows * width).map(|_| ((rng.f64() * 8.0 - 4.0) * 1e4).round() / 1e4).collect();
        let nested: Vec<&[f64]> = values.chunks(width).collect();
        match form {
            0 => (serde_json::json!({ "data": nested }).to_string().into_bytes(), Protocol::Score),
            1 => {
                let body = serde_json::json!({"id": format!("r{seed}"), "inputs": [
                    {"name": "X", "datatype": datatype, "shape": [rows, width], "data": values}]});
                (body.to_string().into_bytes(), Protocol::Infer { header_length: None })
            }
            _ => {
                let bytes: Vec<u8> = if model == 0 {
                    values.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect()
                } else {
                    values.iter().flat_map(|v| v.to_le_bytes()).collect()
                };
                let header = serde_json::json!({"inputs": [{"name": "X", "datatype": datatype, "shape": [rows, width],
                    "parameters": {"binary_data_size": bytes.len()}}], "parameters": {"binary_data_output": true}})
                .to_string();
                let length = header.len();
                let mut body = header.into_bytes();
                body.extend_from_slice(&bytes);
                (body, Protocol::Infer { header_length: Some(length) })
            }
        }
    }

    fn hook_request<'a>(body: &'a [u8]) -> HookRequest<'a> {
        HookRequest { body, content_type: None, headers: Headers::none(), cancel: None }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Random row counts (1..=40), forms, arrival orders and cuts into batches: every
        /// batched answer is the unbatched answer, byte for byte (ONNX Runtime on one
        /// intra-op thread is deterministic here; a tolerance would hide a row mix-up less
        /// well than equality does).
        #[test]
        fn a_stacked_run_answers_every_request_as_its_own_run(
            model in 0usize..2,
            requests in proptest::collection::vec((1usize..=40, 0u8..3, any::<u64>()), 1..10),
            cuts in proptest::collection::vec(any::<bool>(), 10),
            order in any::<u64>(),
        ) {
            let mut hook = hook(model).lock().unwrap_or_else(|e| e.into_inner());
            let bodies: Vec<(Vec<u8>, Protocol)> =
                requests.iter().map(|(rows, form, seed)| request(model, *rows, *form, *seed)).collect();
            let alone: Vec<Answer> = bodies
                .iter()
                .map(|(body, protocol)| crate::hooks::call(&mut *hook, hook_request(body), *protocol).unwrap())
                .collect();
            // Arrival order: a shuffle; batches: consecutive runs of it, cut where `cuts` says.
            let mut arrival: Vec<usize> = (0..bodies.len()).collect();
            fastrand::Rng::with_seed(order).shuffle(&mut arrival);
            let preparer = hook.preparer().unwrap();
            let mut batch: Vec<usize> = Vec::new();
            let mut answered = 0;
            for (k, &i) in arrival.iter().enumerate() {
                batch.push(i);
                if k + 1 == arrival.len() || cuts[k] {
                    let prepared = batch
                        .iter()
                        .map(|&j| preparer.prepare(hook_request(&bodies[j].0), bodies[j].1).unwrap())
                        .collect();
                    let answers = hook.run_batch(prepared, None);
                    prop_assert_eq!(answers.len(), batch.len());
                    for (&j, got) in batch.iter().zip(answers) {
                        let got = got.unwrap();
                        prop_assert_eq!(&got, &alone[j], "request {} in a batch of {}", j, batch.len());
                        answered += 1;
                    }
                    batch.clear();
                }
            }
            prop_assert_eq!(answered, bodies.len());
        }
    }

    #[test]
    fn first_dimensions_named_differently_cannot_batch_and_unnamed_ones_can() {
        let input = |symbol: &str| InputSig {
            name: "x".into(),
            elem: Elem::F32,
            dims: vec![-1, 4],
            first_symbol: symbol.into(),
        };
        let output = |symbol: &str| OutputSig {
            name: "y".into(),
            elem: Some(Elem::F32),
            dims: vec![-1, 2],
            first_symbol: symbol.into(),
        };
        assert_eq!(batching_refusal(&[input("batch")], &[output("batch")]), None);
        assert_eq!(batching_refusal(&[input("")], &[output("unk__7")]), None);
        let why = batching_refusal(&[input("seq")], &[output("batch")]).unwrap();
        assert!(
            why.contains("input \"x\" names its first dimension \"seq\" but output \"y\" names its \"batch\""),
            "{why}"
        );
    }

    #[test]
    fn a_model_with_a_fixed_first_dimension_is_named_and_model_3_can_batch() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let why = check_batchable(&dir.join("test/fixed/model.onnx")).unwrap_err();
        assert!(why.contains("input \"X\" has a fixed first dimension 1"), "{why}");
        check_batchable(&dir.join("model-3/model.onnx")).unwrap();
        let mut ctx = InitContext::new("fixed", Default::default());
        ctx.batching = true;
        let Err(e) = OnnxHook::load(&dir.join("test/fixed/model.onnx"), &ctx) else { panic!("loaded") };
        assert!(e.to_string().contains("fixed first dimension"), "the load refuses it too: {e}");
    }
}
