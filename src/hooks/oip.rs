//! The Open Inference Protocol v2 (KServe v2 / Triton) tensor codec: an `infer` request's
//! JSON and binary parts into typed inputs, and typed outputs into an answer.
//!
//! It lives with the hooks, not the server, because the hook that owns the model is the one
//! that knows each input's element type: the ONNX hook turns a binary input's bytes straight
//! into its tensor, with no JSON in between (the reason the binary extension exists). The
//! server only routes the request and passes `Inference-Header-Content-Length` along.
//!
//! Binary tensor extension: the body is the JSON header (`header_length` bytes) followed by
//! each binary input's bytes in input order, little-endian, unpadded; an input carries its
//! length in `parameters.binary_data_size`. Outputs are binary when asked for (per output
//! `parameters.binary_data`, else the request's `parameters.binary_data_output`), and then
//! follow the answer's JSON header in output order.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::tensor_json::NestedArray;
use super::HookError;

/// The protocol's tensor element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
    Bf16,
}

impl Datatype {
    const ALL: [Datatype; 14] = [
        Datatype::Bool,
        Datatype::Uint8,
        Datatype::Uint16,
        Datatype::Uint32,
        Datatype::Uint64,
        Datatype::Int8,
        Datatype::Int16,
        Datatype::Int32,
        Datatype::Int64,
        Datatype::Fp16,
        Datatype::Fp32,
        Datatype::Fp64,
        Datatype::Bytes,
        Datatype::Bf16,
    ];

    /// The protocol's spelling (`FP32`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Uint8 => "UINT8",
            Datatype::Uint16 => "UINT16",
            Datatype::Uint32 => "UINT32",
            Datatype::Uint64 => "UINT64",
            Datatype::Int8 => "INT8",
            Datatype::Int16 => "INT16",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp16 => "FP16",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
            Datatype::Bytes => "BYTES",
            Datatype::Bf16 => "BF16",
        }
    }

    /// Parses the protocol's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == text)
    }

    /// Bytes per element in the binary encoding; `None` for BYTES (length-prefixed).
    pub fn size(self) -> Option<usize> {
        match self {
            Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => Some(1),
            Datatype::Uint16 | Datatype::Int16 | Datatype::Fp16 | Datatype::Bf16 => Some(2),
            Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 => Some(4),
            Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => Some(8),
            Datatype::Bytes => None,
        }
    }
}

/// `parameters` of a request, an input or an output: only the binary extension's are read,
/// others are accepted and ignored, as the protocol allows.
#[derive(Debug, Default, Deserialize)]
struct Parameters {
    #[serde(default)]
    binary_data_size: Option<u64>,
    #[serde(default)]
    binary_data_output: Option<bool>,
    #[serde(default)]
    binary_data: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct RequestJson<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
    #[serde(borrow)]
    inputs: Vec<InputJson<'a>>,
    #[serde(default)]
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Debug, Deserialize)]
struct InputJson<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Parameters>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Option<Parameters>,
}

/// A parsed `infer` request; tensors borrow from the body.
#[derive(Debug)]
pub(crate) struct InferRequest<'a> {
    /// The request's `id`, echoed in the answer.
    pub id: Option<String>,
    /// The inputs, in request order.
    pub inputs: Vec<Input<'a>>,
    /// The outputs asked for (`None`: all of them).
    pub outputs: Option<Vec<RequestedOutput>>,
    /// `parameters.binary_data_output`: outputs are binary unless an output says otherwise.
    pub binary_output: bool,
}

/// One input tensor.
#[derive(Debug)]
pub(crate) struct Input<'a> {
    pub name: String,
    pub datatype: Datatype,
    /// Dimensions, checked non-negative and consistent with the data.
    pub shape: Vec<usize>,
    pub data: InputData<'a>,
}

/// Where an input's elements are.
#[derive(Debug)]
pub(crate) enum InputData<'a> {
    /// JSON `data`, unparsed until the hook knows the element type it needs.
    Json(&'a RawValue),
    /// Little-endian elements from the binary part, length already checked against the shape.
    Binary(&'a [u8]),
}

/// One output asked for by name.
#[derive(Debug)]
pub(crate) struct RequestedOutput {
    pub name: String,
    /// `parameters.binary_data`, if given.
    pub binary: Option<bool>,
}

impl RequestedOutput {
    /// Whether this output is answered in binary.
    pub(crate) fn is_binary(&self, request: &InferRequest<'_>) -> bool {
        self.binary.unwrap_or(request.binary_output)
    }
}

impl Input<'_> {
    /// Number of elements the shape holds.
    pub(crate) fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The JSON `data` as numbers, row-major (flat or nested both accepted), checked to hold
    /// exactly as many elements as the shape.
    pub(crate) fn json_numbers(&self, raw: &RawValue) -> Result<Vec<f64>, HookError> {
        let array: NestedArray = serde_json::from_str(raw.get()).map_err(|e| {
            HookError::BadInput(format!(
                "input {:?}: data must be numbers ({}), flat or nested row-major: {e}",
                self.name,
                self.datatype.as_str()
            ))
        })?;
        if array.values.len() != self.elements() {
            return Err(HookError::BadInput(format!(
                "input {:?}: shape {:?} holds {} elements but data has {}",
                self.name,
                self.shape,
                self.elements(),
                array.values.len()
            )));
        }
        Ok(array.values)
    }
}

/// Parses an `infer` body. `header_length` is `Inference-Header-Content-Length` (binary
/// extension): the JSON is that many bytes, the binary inputs follow.
pub(crate) fn parse_request(body: &[u8], header_length: Option<usize>) -> Result<InferRequest<'_>, HookError> {
    let (json, mut binary) = match header_length {
        Some(n) if n > body.len() => {
            return Err(HookError::BadInput(format!(
                "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                body.len()
            )))
        }
        Some(n) => body.split_at(n),
        None => (body, &body[body.len()..]),
    };
    let parsed: RequestJson<'_> = serde_json::from_slice(json).map_err(|e| {
        HookError::BadInput(format!(
            "the infer request is not valid: {e}; expected {{\"inputs\": [{{\"name\", \"shape\", \"datatype\", \"data\"}}], \"outputs\"?: [{{\"name\"}}]}}"
        ))
    })?;
    let mut inputs = Vec::with_capacity(parsed.inputs.len());
    for input in parsed.inputs {
        let datatype = Datatype::parse(&input.datatype).ok_or_else(|| {
            let known: Vec<&str> = Datatype::ALL.iter().map(|d| d.as_str()).collect();
            HookError::BadInput(format!(
                "input {:?}: unknown datatype {:?}; the protocol's are {}",
                input.name,
                input.datatype,
                known.join(", ")
            ))
        })?;
        let mut shape = Vec::with_capacity(input.shape.len());
        let mut elements: usize = 1;
        for d in &input.shape {
            let d = usize::try_from(*d).map_err(|_| {
                HookError::BadInput(format!("input {:?}: shape {:?} has a negative dimension", input.name, input.shape))
            })?;
            elements = elements.checked_mul(d).ok_or_else(|| {
                HookError::BadInput(format!("input {:?}: shape {:?} is too large", input.name, input.shape))
            })?;
            shape.push(d);
        }
        let binary_size = input.parameters.as_ref().and_then(|p| p.binary_data_size);
        let data = match (binary_size, input.data) {
            (Some(_), Some(_)) => {
                return Err(HookError::BadInput(format!(
                    "input {:?} has both data and parameters.binary_data_size; send one",
                    input.name
                )))
            }
            (None, None) => {
                return Err(HookError::BadInput(format!(
                    "input {:?} has no data: send \"data\" or binary data with parameters.binary_data_size",
                    input.name
                )))
            }
            (None, Some(raw)) => InputData::Json(raw),
            (Some(size), None) => {
                if header_length.is_none() {
                    return Err(HookError::BadInput(format!(
                        "input {:?} has parameters.binary_data_size but the request has no Inference-Header-Content-Length header",
                        input.name
                    )));
                }
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if size > binary.len() {
                    return Err(HookError::BadInput(format!(
                        "input {:?}: binary_data_size is {size} but only {} bytes of binary data are left",
                        input.name,
                        binary.len()
                    )));
                }
                if let Some(each) = datatype.size() {
                    if elements.checked_mul(each) != Some(size) {
                        return Err(HookError::BadInput(format!(
                            "input {:?}: shape {:?} of {} needs {} bytes but binary_data_size is {size}",
                            input.name,
                            shape,
                            datatype.as_str(),
                            elements.saturating_mul(each)
                        )));
                    }
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                InputData::Binary(mine)
            }
        };
        inputs.push(Input { name: input.name, datatype, shape, data });
    }
    if let Some(twice) = first_repeat(inputs.iter().map(|i| i.name.as_str())) {
        return Err(HookError::BadInput(format!(
            "input {twice:?} appears more than once in inputs; send each input once"
        )));
    }
    if !binary.is_empty() {
        return Err(HookError::BadInput(format!(
            "{} bytes follow the inputs' binary data (binary_data_size values do not add up to the body)",
            binary.len()
        )));
    }
    // Each output once: naming one output 10,000 times would make an answer 10,000 times its
    // size from a small request.
    let outputs = match parsed.outputs {
        None => None,
        Some(list) => {
            if let Some(twice) = first_repeat(list.iter().map(|o| o.name.as_str())) {
                return Err(HookError::BadInput(format!(
                    "output {twice:?} appears more than once in outputs; ask for each output once"
                )));
            }
            Some(
                list.into_iter()
                    .map(|o| RequestedOutput { binary: o.parameters.and_then(|p| p.binary_data), name: o.name })
                    .collect(),
            )
        }
    };
    Ok(InferRequest {
        id: parsed.id,
        inputs,
        outputs,
        binary_output: parsed.parameters.and_then(|p| p.binary_data_output).unwrap_or(false),
    })
}

/// The first item equal to an earlier one, found with a set: comparing each name with the
/// ones before it took n²/2 comparisons, and a 4.6 MB request of 80,000 distinct input names
/// held a thread for ~40 s of CPU before it was refused.
fn first_repeat<T: Eq + std::hash::Hash + Copy>(items: impl IntoIterator<Item = T>) -> Option<T> {
    let items = items.into_iter();
    let mut seen = std::collections::HashSet::with_capacity(items.size_hint().0);
    items.into_iter().find(|item| !seen.insert(*item))
}

/// Writes an `infer` answer: a JSON header of outputs, and the binary outputs after it.
///
/// The answer is capped ([`super::MAX_ANSWER_BYTES`]): each output is checked against the room
/// left before it is written where its size is known (binary), and after it otherwise, so an
/// answer over the cap stops at the first output that crosses it instead of being built whole.
pub(crate) struct ResponseWriter {
    header: Vec<u8>,
    binary: Vec<u8>,
    first: bool,
    limit: usize,
}

impl ResponseWriter {
    /// Starts the answer for the model `model_name` (and version), echoing the request `id`.
    pub(crate) fn new(model_name: &str, model_version: Option<&str>, id: Option<&str>) -> Self {
        let mut header = Vec::with_capacity(128);
        header.extend_from_slice(b"{\"model_name\":");
        json_string(&mut header, model_name);
        if let Some(v) = model_version {
            header.extend_from_slice(b",\"model_version\":");
            json_string(&mut header, v);
        }
        if let Some(id) = id {
            header.extend_from_slice(b",\"id\":");
            json_string(&mut header, id);
        }
        header.extend_from_slice(b",\"outputs\":[");
        Self { header, binary: Vec::new(), first: true, limit: super::MAX_ANSWER_BYTES }
    }

    /// As [`new`](Self::new), with another cap (tests).
    #[cfg(test)]
    fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The answer's size so far.
    fn len(&self) -> usize {
        self.header.len() + self.binary.len()
    }

    /// A model failure naming the cap when `more` bytes would not fit under it.
    pub(crate) fn fits(&self, more: usize) -> Result<(), HookError> {
        let total = self.len().saturating_add(more).saturating_add(2);
        if total > self.limit {
            return Err(HookError::Failed(if self.limit == super::MAX_ANSWER_BYTES {
                super::answer_over_cap(None)
            } else {
                format!("the answer would be over the answer cap of {} bytes", self.limit)
            }));
        }
        Ok(())
    }

    fn start(&mut self, name: &str, datatype: Datatype, shape: &[usize]) {
        if !self.first {
            self.header.push(b',');
        }
        self.first = false;
        self.header.extend_from_slice(b"{\"name\":");
        json_string(&mut self.header, name);
        self.header.extend_from_slice(b",\"datatype\":\"");
        self.header.extend_from_slice(datatype.as_str().as_bytes());
        self.header.extend_from_slice(b"\",\"shape\":[");
        for (i, d) in shape.iter().enumerate() {
            if i > 0 {
                self.header.push(b',');
            }
            self.header.extend_from_slice(itoa::Buffer::new().format(*d).as_bytes());
        }
        self.header.push(b']');
    }

    /// An output as JSON: `write_data` writes the flat, row-major `data` array.
    pub(crate) fn json_output(
        &mut self,
        name: &str,
        datatype: Datatype,
        shape: &[usize],
        write_data: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), HookError> {
        // Each element is at least one digit and a comma.
        self.fits(shape.iter().product::<usize>().saturating_mul(2))?;
        self.start(name, datatype, shape);
        self.header.extend_from_slice(b",\"data\":");
        write_data(&mut self.header);
        self.header.push(b'}');
        self.fits(0)
    }

    /// An output in binary: its little-endian bytes follow the header.
    pub(crate) fn binary_output(
        &mut self,
        name: &str,
        datatype: Datatype,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<(), HookError> {
        self.fits(bytes.len())?;
        self.start(name, datatype, shape);
        self.header.extend_from_slice(b",\"parameters\":{\"binary_data_size\":");
        self.header.extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
        self.header.extend_from_slice(b"}}");
        self.binary.extend_from_slice(bytes);
        self.fits(0)
    }

    /// The body, and the JSON header's length when binary outputs follow it (the answer's
    /// `Inference-Header-Content-Length`).
    pub(crate) fn finish(mut self) -> (Vec<u8>, Option<usize>) {
        self.header.extend_from_slice(b"]}");
        if self.binary.is_empty() {
            return (self.header, None);
        }
        let length = self.header.len();
        self.header.extend_from_slice(&self.binary);
        (self.header, Some(length))
    }
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_inputs_flat_or_nested() {
        let body = br#"{"id":"7","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}],"outputs":[{"name":"y"}]}"#;
        let r = parse_request(body, None).unwrap();
        assert_eq!(r.id.as_deref(), Some("7"));
        let InputData::Json(raw) = r.inputs[0].data else { panic!("json") };
        assert_eq!(r.inputs[0].json_numbers(raw).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        let flat = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3]}]}"#;
        let r = parse_request(flat, None).unwrap();
        let InputData::Json(raw) = r.inputs[0].data else { panic!("json") };
        assert!(r.inputs[0].json_numbers(raw).unwrap_err().to_string().contains("holds 4 elements but data has 3"));
    }

    #[test]
    fn parses_binary_inputs() {
        let header = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}],"parameters":{"binary_data_output":true}}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&2.5f32.to_le_bytes());
        let r = parse_request(&body, Some(header.len())).unwrap();
        assert!(r.binary_output);
        let InputData::Binary(bytes) = r.inputs[0].data else { panic!("binary") };
        assert_eq!(bytes.len(), 8);
        assert!(parse_request(&body[..body.len() - 1], Some(header.len()))
            .unwrap_err()
            .to_string()
            .contains("binary_data_size is 8"));
        let mut extra = body.clone();
        extra.push(0);
        assert!(parse_request(&extra, Some(header.len())).unwrap_err().to_string().contains("1 bytes follow"));
        assert!(parse_request(&body, Some(body.len() + 1))
            .unwrap_err()
            .to_string()
            .contains("Inference-Header-Content-Length"));
    }

    #[test]
    fn refuses_bad_shapes_and_datatypes() {
        let bad = |s: &str| parse_request(s.as_bytes(), None).unwrap_err().to_string();
        assert!(bad(r#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#).contains("negative"));
        assert!(
            bad(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FLOAT","data":[1]}]}"#).contains("unknown datatype")
        );
        assert!(bad(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#).contains("has no data"));
        assert!(bad(r#"{"inputs":[{"name":"x","shape":[4611686018427387904,4],"datatype":"FP32","data":[]}]}"#)
            .contains("too large"));
        assert!(bad("[]").contains("not valid"));
    }

    proptest::proptest! {
        #[test]
        fn any_body_is_parsed_or_refused_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            cut in 0usize..320,
            binary in proptest::prelude::any::<bool>(),
        ) {
            let _ = parse_request(&bytes, binary.then_some(cut));
        }

        #[test]
        fn json_and_binary_forms_carry_the_same_numbers(
            rows in 0usize..5,
            values in proptest::collection::vec(-1e6f32..1e6, 0..15),
        ) {
            let cols = 3usize;
            let values: Vec<f32> = values.into_iter().chain(std::iter::repeat(0.5)).take(rows * cols).collect();
            let json = serde_json::json!({"inputs": [{"name": "x", "shape": [rows, cols], "datatype": "FP32", "data": values}]});
            let json = json.to_string();
            let parsed = parse_request(json.as_bytes(), None).unwrap();
            let InputData::Json(raw) = parsed.inputs[0].data else { panic!("json") };
            let from_json = parsed.inputs[0].json_numbers(raw).unwrap();
            let header = serde_json::json!({"inputs": [{"name": "x", "shape": [rows, cols], "datatype": "FP32",
                "parameters": {"binary_data_size": 4 * values.len()}}]}).to_string();
            let mut body = header.clone().into_bytes();
            values.iter().for_each(|v| body.extend_from_slice(&v.to_le_bytes()));
            let parsed = parse_request(&body, Some(header.len())).unwrap();
            let InputData::Binary(bytes) = parsed.inputs[0].data else { panic!("binary") };
            let from_binary: Vec<f32> =
                bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            // Compared at the tensor's precision (FP32): the JSON text is the shortest form of
            // the f64, and serde_json's default float parsing may land one f64 ulp away from
            // it (412.9397583007813 vs 412.93975830078125), which is the same f32.
            let from_json: Vec<f32> = from_json.into_iter().map(|v| v as f32).collect();
            proptest::prop_assert_eq!(from_json, from_binary);
        }
    }

    /// A name whose comparisons are counted.
    #[derive(Clone, Copy)]
    struct Counted<'c>(u32, &'c std::cell::Cell<u64>);

    impl PartialEq for Counted<'_> {
        fn eq(&self, other: &Self) -> bool {
            self.1.set(self.1.get() + 1);
            self.0 == other.0
        }
    }
    impl Eq for Counted<'_> {}
    impl std::hash::Hash for Counted<'_> {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.hash(state);
        }
    }

    #[test]
    fn finding_a_repeated_name_takes_linear_work() {
        // Structural, not timed: 20,000 distinct names (a 1.1 MB request) took 200 million
        // comparisons with a scan of the names before each; a set compares on hash matches only.
        let comparisons = std::cell::Cell::new(0);
        let n = 20_000;
        assert!(first_repeat((0..n).map(|i| Counted(i, &comparisons))).is_none());
        assert!(comparisons.get() < 2 * u64::from(n), "{} comparisons for {n} names", comparisons.get());
        let again = first_repeat((0..n).chain([7]).map(|i| Counted(i, &comparisons)));
        assert_eq!(again.map(|c| c.0), Some(7));
    }

    #[test]
    fn a_tensor_named_twice_is_refused_naming_it() {
        let x = r#"{"name":"x","shape":[1],"datatype":"FP32","data":[1]}"#;
        let body = format!(r#"{{"inputs":[{x},{x}]}}"#);
        let e = parse_request(body.as_bytes(), None).unwrap_err().to_string();
        assert!(e.contains(r#"input "x" appears more than once"#), "{e}");
        let outputs = vec![r#"{"name":"y"}"#; 10_000].join(",");
        let body = format!(r#"{{"inputs":[{x}],"outputs":[{outputs}]}}"#);
        let e = parse_request(body.as_bytes(), None).unwrap_err().to_string();
        assert!(e.contains(r#"output "y" appears more than once"#), "{e}");
        let body = format!(r#"{{"inputs":[{x}],"outputs":[{{"name":"y"}},{{"name":"z"}}]}}"#);
        assert_eq!(parse_request(body.as_bytes(), None).unwrap().outputs.unwrap().len(), 2);
    }

    #[test]
    fn an_answer_over_the_cap_stops_at_the_output_that_crosses_it() {
        let mut w = ResponseWriter::new("m", None, None).with_limit(1000);
        w.binary_output("a", Datatype::Uint8, &[400], &[0; 400]).unwrap();
        let before = w.len();
        let e = w.binary_output("b", Datatype::Uint8, &[700], &[0; 700]).unwrap_err().to_string();
        assert!(e.contains("over the answer cap of 1000 bytes"), "{e}");
        assert_eq!(w.len(), before, "nothing of the output over the cap was written");
        let mut written = false;
        let e = w.json_output("c", Datatype::Fp32, &[600], |_| written = true).unwrap_err().to_string();
        assert!(e.contains("answer cap") && !written, "{e}");
        let mut w = ResponseWriter::new("m", None, None).with_limit(100);
        let e =
            w.json_output("d", Datatype::Fp32, &[3], |o| o.extend_from_slice(&[b'1'; 200])).unwrap_err().to_string();
        assert!(e.contains("answer cap"), "{e}");
        assert!(super::super::answer_over_cap(None).contains("256 MiB"));
    }

    #[test]
    fn writes_json_and_binary_outputs() {
        let mut w = ResponseWriter::new("m", Some("1"), Some("a"));
        w.json_output("y", Datatype::Fp64, &[2], |o| o.extend_from_slice(b"[1.0,2.0]")).unwrap();
        let (body, len) = w.finish();
        assert_eq!(len, None);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["outputs"][0]["data"], serde_json::json!([1.0, 2.0]));
        assert_eq!(v["model_version"], "1");
        let mut w = ResponseWriter::new("m", None, None);
        w.binary_output("y", Datatype::Fp32, &[1], &3.0f32.to_le_bytes()).unwrap();
        let (body, len) = w.finish();
        let len = len.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body[..len]).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 4);
        assert_eq!(&body[len..], &3.0f32.to_le_bytes());
    }
}
