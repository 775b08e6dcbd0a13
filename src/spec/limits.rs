//! Bounds on the JSON and YAML documents the control plane reads (admin API bodies,
//! `--config-dir` files, `-f` files), checked before a document is parsed.
//!
//! Why: the YAML parser (libyaml, through serde_norway) is super-linear in flow nesting depth
//! (issue 9 reported 32 KB of nesting 0.84 s, 64 KB 2.7 s, 128 KB 14.3 s; the
//! debug build here took 4.3 s on 128 KB of `[`) and serde_norway
//! only applies its own recursion limit (128) after the whole event stream has been built. A
//! JSON body that is too deep for serde_json (limit 128) used to fall back to YAML and hit the
//! same cost. A spec is a few levels deep, so 64 levels and 1 MiB leave every real document
//! far inside the limits and make the worst case linear and small.

use std::path::Path;

use super::SpecError;

/// The largest admin request body or YAML file read (a deployment spec is a few hundred bytes).
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// The deepest nesting of mappings and sequences accepted (a deployment spec has 3 or 4).
pub const MAX_NESTING_DEPTH: usize = 64;

/// The message for a document over [`MAX_DOCUMENT_BYTES`].
pub fn too_large(what: &str) -> String {
    format!("{what} is larger than the limit of {MAX_DOCUMENT_BYTES} bytes (1 MiB)")
}

/// Checks a JSON or YAML document against both limits, before it is parsed. Documents that are
/// not valid YAML pass this check: the real parse reports their error (and stops at the same
/// place, so it never sees more nesting than this check did).
pub fn check_document(text: &[u8], what: &str) -> Result<(), SpecError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(SpecError::invalid(too_large(what)));
    }
    match crate::sys::yaml::first_too_deep(text, MAX_NESTING_DEPTH) {
        Some((line, column)) => Err(too_deep(what, line, column)),
        None => Ok(()),
    }
}

/// The error for a document nested deeper than [`MAX_NESTING_DEPTH`] at `line`:`column`.
pub fn too_deep(what: &str, line: u64, column: u64) -> SpecError {
    SpecError::invalid(format!(
        "{what} is nested more than {MAX_NESTING_DEPTH} levels deep (at line {line} column {column}): \
         mappings and lists may be nested at most {MAX_NESTING_DEPTH} levels"
    ))
}

/// Checks a parsed JSON value against [`MAX_NESTING_DEPTH`], for the rare JSON text that the
/// YAML event parser refuses early (and so was not measured by [`check_document`]).
/// serde_json's own recursion limit (128) bounds this walk.
pub fn check_value_depth(value: &serde_json::Value, what: &str) -> Result<(), SpecError> {
    fn depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    if depth(value) > MAX_NESTING_DEPTH {
        return Err(SpecError::invalid(format!(
            "{what} is nested more than {MAX_NESTING_DEPTH} levels deep: mappings and lists may be nested at most {MAX_NESTING_DEPTH} levels"
        )));
    }
    Ok(())
}

/// Reads a YAML file of at most [`MAX_DOCUMENT_BYTES`] (a larger one is refused without being
/// read whole).
/// Only a regular file is read, and within [`crate::sys::files::READ_DEADLINE`] (a FIFO or a
/// hung mount must not stall the caller: see [`crate::sys::files`]).
pub fn read_document_file(path: &Path) -> Result<String, SpecError> {
    use crate::sys::files::{read_bounded, ReadError, READ_DEADLINE};
    let bytes = read_bounded(path, MAX_DOCUMENT_BYTES as u64, READ_DEADLINE).map_err(|e| match e {
        ReadError::TooLarge { .. } => SpecError::invalid(too_large(&path.display().to_string())),
        ReadError::Io { source, .. } => SpecError::invalid(format!("cannot read {}: {source}", path.display())),
        other => SpecError::invalid(other.to_string()),
    })?;
    String::from_utf8(bytes).map_err(|_| SpecError::invalid(format!("{} is not UTF-8 text", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_specs_pass() {
        let yaml = "name: blue\nmodel:\n  path: ../model-1\ntags:\n  a: [1, {b: [2]}]\nrequest_settings:\n  request_timeout_ms: 5\n";
        assert_eq!(check_document(yaml.as_bytes(), "t"), Ok(()));
        assert_eq!(check_document(br#"{"name": "blue", "model": {"path": "x"}}"#, "t"), Ok(()));
    }

    #[test]
    fn depth_is_counted_the_way_yaml_counts_it() {
        let at = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(check_document(at(MAX_NESTING_DEPTH).as_bytes(), "t").is_ok());
        let err = check_document(at(MAX_NESTING_DEPTH + 1).as_bytes(), "the body").unwrap_err();
        assert_eq!(err.kind, crate::spec::SpecErrorKind::Invalid);
        assert!(err.message.contains("nested more than 64 levels"), "{}", err.message);
        // Block nesting (compact sequences, indentation) and mappings count too.
        assert!(check_document(("- ".repeat(65) + "x").as_bytes(), "t").is_err());
        assert!(check_document(("- ".repeat(63) + "x").as_bytes(), "t").is_ok());
        let indented: String = (0..70).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert!(check_document(indented.as_bytes(), "t").is_err());
        // Brackets inside quoted strings and block scalars are text, not nesting.
        let quoted = format!("a: \"{}\"\nb: |\n  {}\nc: ['{}']\n", "[".repeat(500), "{".repeat(500), "]".repeat(9));
        assert_eq!(check_document(quoted.as_bytes(), "t"), Ok(()));
        // Closing brackets inside strings do not hide real nesting.
        let tricky = "[\"]\", ".repeat(100);
        assert!(check_document(tricky.as_bytes(), "t").is_err());
    }

    /// The worst case stops where the limit is crossed: the unbounded parse of these bodies
    /// took seconds, growing with the body. The error's position proves the event parser
    /// stopped at the 65th level, near the start of a 1 MiB body, without timing anything.
    #[test]
    fn the_worst_case_stops_where_the_limit_is_crossed() {
        for (body, unit) in [
            ("[".repeat(MAX_DOCUMENT_BYTES), 1),
            ("{a: ".repeat(MAX_DOCUMENT_BYTES / 4), 4),
            ("- ".repeat(MAX_DOCUMENT_BYTES / 2), 2),
        ] {
            let err = check_document(body.as_bytes(), "t").unwrap_err();
            let at = err.message.split("(at line ").nth(1).and_then(|r| r.split(')').next()).unwrap_or_default();
            let (line, column) = at.split_once(" column ").unwrap_or_default();
            let column: usize = column.parse().unwrap_or(usize::MAX);
            assert_eq!(line, "1", "{}", err.message);
            assert!(column <= unit * (MAX_NESTING_DEPTH + 2), "stopped at column {column} of {}", body.len());
        }
    }

    #[test]
    fn size_is_bounded() {
        let big = format!("a: \"{}\"", "x".repeat(MAX_DOCUMENT_BYTES));
        let err = check_document(big.as_bytes(), "the body").unwrap_err();
        assert!(err.message.contains("1 MiB"), "{}", err.message);
    }
}
