//! JSON ⇄ tensor conversion for the ONNX hook.
//!
//! Request bodies are parsed straight into a flat `Vec<f64>` plus a shape (no intermediate
//! `serde_json::Value` tree): this is the largest per-request cost after HTTP itself, and a
//! 64-row body would otherwise allocate one `Value` per number.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// The deepest nesting accepted in a request array (a 32-D tensor is already absurd).
const MAX_RANK: usize = 32;

/// A rectangular nested array of numbers, flattened in row-major order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NestedArray {
    /// Length of each dimension, outermost first.
    pub shape: Vec<usize>,
    /// The numbers, row-major.
    pub values: Vec<f64>,
}

/// The two request forms of CONTRACT §2.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    /// `{"data": [[...], ...]}` for a model with one input.
    #[serde(default)]
    pub data: Option<NestedArray>,
    /// `{"inputs": {"NAME": [...], ...}}` for named inputs.
    #[serde(default)]
    pub inputs: Option<BTreeMap<String, NestedArray>>,
}

impl<'de> Deserialize<'de> for NestedArray {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut b = Builder { shape: Vec::new(), rank: None, deepest_array: None, values: Vec::new() };
        Level { depth: 0, b: &mut b }.deserialize(deserializer)?;
        let rank = b.rank.unwrap_or(b.shape.len());
        b.shape.truncate(rank);
        Ok(NestedArray { shape: b.shape, values: b.values })
    }
}

/// Accumulates shape and values while the nested arrays are visited.
struct Builder {
    /// `shape[d]` is the length every array at depth `d` must have (set by the first one seen).
    shape: Vec<usize>,
    /// Depth at which numbers sit, once the first number has been seen.
    rank: Option<usize>,
    /// The deepest array seen so far: numbers must sit below it (`[[], 0]` is ragged).
    deepest_array: Option<usize>,
    values: Vec<f64>,
}

/// Visits one array element at a known depth.
struct Level<'b> {
    depth: usize,
    b: &'b mut Builder,
}

impl Level<'_> {
    fn number<E: de::Error>(self, v: f64) -> Result<(), E> {
        if let Some(d) = self.b.deepest_array.filter(|d| self.depth <= *d) {
            return Err(E::custom(format!(
                "ragged array: a number at nesting depth {} where an array sits at depth {d}",
                self.depth
            )));
        }
        match self.b.rank {
            None => self.b.rank = Some(self.depth),
            Some(r) if r != self.depth => {
                return Err(E::custom(format!(
                    "ragged array: a number at nesting depth {} where other numbers sit at depth {r}",
                    self.depth
                )))
            }
            Some(_) => {}
        }
        self.b.values.push(v);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or a nested array of numbers")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.number(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.number(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.number(v as f64)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.depth;
        if depth >= MAX_RANK {
            return Err(de::Error::custom(format!("arrays nested deeper than {MAX_RANK} levels")));
        }
        if let Some(r) = self.b.rank {
            if depth >= r {
                return Err(de::Error::custom(format!(
                    "ragged array: an array at nesting depth {depth} where numbers sit at depth {r}"
                )));
            }
        }
        self.b.deepest_array = Some(self.b.deepest_array.map_or(depth, |d| d.max(depth)));
        let mut len = 0usize;
        while seq.next_element_seed(Level { depth: depth + 1, b: &mut *self.b })?.is_some() {
            len += 1;
        }
        if self.b.shape.len() <= depth {
            self.b.shape.resize(depth + 1, usize::MAX);
        }
        match self.b.shape[depth] {
            usize::MAX => self.b.shape[depth] = len,
            expected if expected != len => {
                return Err(de::Error::custom(format!(
                    "ragged array: rows at nesting depth {depth} have different lengths ({expected} and {len})"
                )))
            }
            _ => {}
        }
        Ok(())
    }
}

/// Writes `values` (row-major) as nested JSON arrays of the given shape.
pub fn write_nested<T: Copy>(out: &mut Vec<u8>, shape: &[usize], values: &[T], write: &impl Fn(&mut Vec<u8>, T)) {
    fn rec<T: Copy>(out: &mut Vec<u8>, shape: &[usize], values: &[T], write: &impl Fn(&mut Vec<u8>, T)) {
        match shape.split_first() {
            None => {
                if let Some(v) = values.first() {
                    write(out, *v);
                }
            }
            Some((&n, rest)) => {
                let stride: usize = rest.iter().product();
                out.push(b'[');
                for i in 0..n {
                    if i > 0 {
                        out.push(b',');
                    }
                    rec(out, rest, &values[i * stride..(i + 1) * stride], write);
                }
                out.push(b']');
            }
        }
    }
    rec(out, shape, values, write);
}

/// Writes one float in JSON's shortest round-trip form. JSON has no spelling for NaN and
/// infinities: callers refuse them before writing (the ONNX hook answers 424); the `null`
/// written here is only a fallback that keeps the document valid.
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// As [`write_f64`] for a float32 output (printed with float32 precision).
pub fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Writes an integer.
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NestedArray, String> {
        serde_json::from_str::<NestedArray>(s).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_rectangular_arrays() {
        let a = parse("[[1,2,3],[4,5,6]]").unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(parse("[1.5, -2]").unwrap().shape, vec![2]);
        assert_eq!(parse("3").unwrap().shape, Vec::<usize>::new());
        assert_eq!(parse("[]").unwrap().shape, vec![0]);
    }

    #[test]
    fn refuses_ragged_and_non_numbers() {
        assert!(parse("[[1,2],[3]]").unwrap_err().contains("ragged"));
        assert!(parse("[[1,2],3]").unwrap_err().contains("ragged"));
        assert!(parse("[1,[2]]").unwrap_err().contains("ragged"));
        assert!(parse("[[],0]").unwrap_err().contains("ragged"), "found by the property tests");
        assert_eq!(parse("[[],[]]").unwrap().shape, vec![2, 0]);
        assert!(parse("[\"a\"]").unwrap_err().contains("a number or a nested array"));
        assert!(parse(&format!("{}1{}", "[".repeat(40), "]".repeat(40))).is_err());
    }

    #[test]
    fn writes_nested() {
        let mut out = Vec::new();
        write_nested(&mut out, &[2, 2], &[1.0f64, 2.5, 3.0, 4.0], &|o, v| write_f64(o, v));
        assert_eq!(String::from_utf8(out).unwrap(), "[[1.0,2.5],[3.0,4.0]]");
        let mut out = Vec::new();
        write_f64(&mut out, 11055.977245525679);
        assert_eq!(out, b"11055.977245525679");
    }
}
