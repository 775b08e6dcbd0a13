//! One scoring request as every layer below the server sees it, and its headers.
//!
//! Why a type of our own: the front door, the mirror, the pool and the hooks each passed the
//! same five values (body, content type, headers, protocol, request id) one by one, and the
//! headers as actix's `HeaderMap`, so `hooks`, `deployment` and `mirror` depended on the HTTP
//! framework. The server converts the headers once, and only for a deployment whose hook
//! reads them (a scoring script's `request_headers`, `@rawhttp`): for every other request the
//! headers are [`Headers::none`] and the conversion costs nothing.

use bytes::Bytes;

use super::Protocol;

/// One request: what the pool, the mirror and (less the request id) a hook take.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The body, unparsed (shared: a queued run or a mirror copy keeps it without a copy).
    pub body: &'a Bytes,
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a str>,
    /// The headers, for hooks that hand them to user code; [`Headers::none`] for the others.
    pub headers: &'a Headers,
    /// `/score` or v2 `infer`.
    pub protocol: Protocol,
    /// The request's id (`x-request-id`), for log lines and the mirror's comparison.
    pub request_id: &'a str,
}

/// A request's headers in arrival order, names in lower case (HTTP names are
/// case-insensitive; the server gives them so).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(Box<str>, Box<[u8]>)>,
}

impl Headers {
    /// No headers (a shared empty value, for requests to hooks that read none).
    pub fn none() -> &'static Headers {
        static NONE: Headers = Headers { entries: Vec::new() };
        &NONE
    }

    /// Adds one header line (a repeated name is added again, as it came).
    pub(crate) fn push(&mut self, name: &str, value: &[u8]) {
        self.entries.push((name.to_ascii_lowercase().into(), value.into()));
    }

    /// Keeps the headers whose (lower-case) name passes `keep`.
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.entries.retain(|(name, _)| keep(name));
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each distinct name once, in the order it first came.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(i, (name, _))| !self.entries[..*i].iter().any(|(seen, _)| seen == name))
            .map(|(_, (name, _))| &**name)
    }

    /// The values of `name` (lower case), in the order they came.
    pub(crate) fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.entries.iter().filter(move |(n, _)| &**n == name).map(|(_, v)| &**v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_once_in_first_order_and_repeated_values_in_theirs() {
        let mut h = Headers::default();
        h.push("X-B", b"1");
        h.push("x-a", b"2");
        h.push("X-b", b"3");
        assert_eq!(h.names().collect::<Vec<_>>(), ["x-b", "x-a"]);
        assert_eq!(h.get_all("x-b").collect::<Vec<_>>(), [b"1", b"3"]);
        assert!(Headers::none().is_empty() && !h.is_empty());
    }
}
