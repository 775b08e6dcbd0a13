//! Requests prepared for a batched run (issue 29).
//!
//! A request to a batching deployment is parsed into typed `ndarray` arrays on its own task,
//! before it queues ([`Prepare`]): a bad body is that request's 400, never its batch's, and
//! the run that holds an instance only stacks, runs and splits. Only the ONNX hook batches;
//! nothing here names ONNX, so another tensor hook could.

use ndarray::{concatenate, ArrayD, ArrayViewD, Axis, IxDyn};

use super::{HookError, HookRequest, Protocol};

/// One input tensor of a prepared request, of one of the element types the hooks read.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    I32(ArrayD<i32>),
    I64(ArrayD<i64>),
}

/// Runs `$body` with `$a` bound to the inner array of whichever variant `$array` is.
macro_rules! each_array {
    ($array:expr, $a:ident => $body:expr) => {
        match $array {
            Array::F32($a) => $body,
            Array::F64($a) => $body,
            Array::I32($a) => $body,
            Array::I64($a) => $body,
        }
    };
}

impl Array {
    /// A row-major array of `shape` over `values` (their count is the shape's product, checked
    /// by the parsers; a mismatch here is the hook's failure, not a panic).
    pub fn from_shape_vec<T>(shape: &[usize], values: Vec<T>) -> Result<ArrayD<T>, HookError> {
        ArrayD::from_shape_vec(IxDyn(shape), values)
            .map_err(|e| HookError::Failed(format!("cannot shape an input of {shape:?}: {e}")))
    }

    /// The array's dimensions.
    pub fn shape(&self) -> &[usize] {
        each_array!(self, a => a.shape())
    }

    /// Whether `self` and `other` can be stacked: the same element type and the same
    /// dimensions after the first.
    fn stacks_with(&self, other: &Array) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.shape().len() == other.shape().len()
            && self.shape().get(1..) == other.shape().get(1..)
    }

    /// `parts` stacked along their first dimension, in order. The batcher stacks only parts
    /// that [`Prepared::stacks_with`] each other; anything else is the hook's failure.
    pub fn stack(parts: &[&Array]) -> Result<Array, HookError> {
        fn cat<T: Clone>(views: &[ArrayViewD<'_, T>]) -> Result<ArrayD<T>, HookError> {
            concatenate(Axis(0), views).map_err(|e| HookError::Failed(format!("cannot stack the batch's inputs: {e}")))
        }
        macro_rules! stack_as {
            ($variant:ident) => {{
                let views = parts
                    .iter()
                    .map(|p| match p {
                        Array::$variant(a) => Ok(a.view()),
                        _ => Err(HookError::Failed("a batch mixes element types".into())),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Array::$variant(cat(&views)?))
            }};
        }
        match parts.first() {
            None => Err(HookError::Failed("an empty batch".into())),
            Some(Array::F32(_)) => stack_as!(F32),
            Some(Array::F64(_)) => stack_as!(F64),
            Some(Array::I32(_)) => stack_as!(I32),
            Some(Array::I64(_)) => stack_as!(I64),
        }
    }
}

/// How a prepared request is answered: the form it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `/score` with `{"data": ...}`: the first numeric output, a flat list for `[N]`/`[N, 1]`.
    Flat,
    /// `/score` with `{"inputs": {...}}`: `{"outputs": {name: nested array, ...}}`.
    Named,
    /// A v2 `infer`: the request's `id` echoed, and the outputs asked for (the model's output
    /// index, and whether in binary).
    Infer { id: Option<String>, outputs: Vec<(usize, bool)> },
}

/// A request parsed and checked against the model, waiting for a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// One array per model input, in the model's input order.
    pub inputs: Vec<Array>,
    /// How it is answered.
    pub reply: Reply,
}

impl Prepared {
    /// The request's rows: the first dimension every input shares; `None` when an input has
    /// no dimension or the inputs disagree (such a request runs alone).
    pub fn rows(&self) -> Option<usize> {
        let mut dims = self.inputs.iter().map(|a| a.shape().first().copied());
        let first = dims.next()??;
        dims.all(|d| d == Some(first)).then_some(first)
    }

    /// Whether the two can run in one batch: both have rows, and each input agrees in element
    /// type and in every dimension but the first.
    pub fn stacks_with(&self, other: &Prepared) -> bool {
        self.rows().is_some()
            && other.rows().is_some()
            && self.inputs.len() == other.inputs.len()
            && self.inputs.iter().zip(&other.inputs).all(|(a, b)| a.stacks_with(b))
    }
}

/// What turns a request into a [`Prepared`] one without an instance: the model's signature,
/// shared by every instance of a deployment version.
pub trait Prepare: Send + Sync {
    /// Parses and checks `request` (its protocol's form) against the model's inputs; a bad
    /// body is [`HookError::BadInput`] with the message an unbatched run gives.
    fn prepare(&self, request: HookRequest<'_>, protocol: Protocol) -> Result<Prepared, HookError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: &[usize], start: f32) -> Array {
        let n: usize = shape.iter().product();
        Array::F32(Array::from_shape_vec(shape, (0..n).map(|i| start + i as f32).collect()).unwrap())
    }

    #[test]
    fn arrays_stack_along_the_first_dimension_in_order() {
        let (a, b) = (f32s(&[1, 3], 0.0), f32s(&[2, 3], 10.0));
        let Array::F32(s) = Array::stack(&[&a, &b]).unwrap() else { panic!("type kept") };
        assert_eq!(s.shape(), &[3, 3]);
        assert_eq!(s.as_slice().unwrap(), &[0., 1., 2., 10., 11., 12., 13., 14., 15.]);
    }

    #[test]
    fn only_requests_that_agree_past_the_first_dimension_stack() {
        let p = |inputs: Vec<Array>| Prepared { inputs, reply: Reply::Flat };
        let one = p(vec![f32s(&[1, 3], 0.0)]);
        assert!(one.stacks_with(&p(vec![f32s(&[5, 3], 0.0)])));
        assert!(!one.stacks_with(&p(vec![f32s(&[1, 4], 0.0)])));
        assert!(!one.stacks_with(&p(vec![f32s(&[1, 3, 1], 0.0)])));
        let f64s = Array::F64(Array::from_shape_vec(&[1, 3], vec![0.0; 3]).unwrap());
        assert!(!one.stacks_with(&p(vec![f64s])));
        // Two inputs that disagree on rows cannot be split back: the request runs alone.
        let uneven = p(vec![f32s(&[1, 3], 0.0), f32s(&[2, 3], 0.0)]);
        assert_eq!(uneven.rows(), None);
        assert!(!uneven.stacks_with(&uneven));
        assert_eq!(p(vec![f32s(&[], 0.0)]).rows(), None);
        assert!(Array::stack(&[
            &f32s(&[1, 3], 0.0),
            &Array::F64(Array::from_shape_vec(&[1, 3], vec![0.0; 3]).unwrap())
        ])
        .is_err());
    }
}
