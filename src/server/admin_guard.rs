//! The admin plane's gate: one middleware in front of every admin route (the studio page
//! included) that keeps web pages of other origins from using the admin API through the
//! user's browser.
//!
//! Why: a token-less admin plane on loopback (the default) trusts whoever can reach it, and a
//! browser can reach it for any page it shows. Three doors were open:
//! - **Cross-site requests.** A page may send a POST to any address without asking (a form, or
//!   `fetch` with `mode: "no-cors"`) as long as its `Content-Type` is one of the three a form can
//!   send (`text/plain`, `application/x-www-form-urlencoded`, `multipart/form-data`); it cannot
//!   read the answer, but the change is made. Every other request (another method, another
//!   type) needs a CORS preflight, which this server never grants. So a state-changing request
//!   must come from the admin plane's own origin, or from a client that is not a browser: a
//!   `Sec-Fetch-Site` other than `same-origin`/`none`, or an `Origin` that is not the plane's
//!   own, is refused (403); and a body must say it is JSON or YAML (415), which a form cannot.
//! - **DNS rebinding.** A page at `evil.example` whose name is made to resolve to 127.0.0.1 is
//!   same-origin with the admin plane as far as the browser knows, and can read
//!   `/v1/endpoint/keys`. Its requests still carry `Host: evil.example`, so a token-less plane
//!   answers only to the names it serves: `localhost`, loopback addresses, the address it is
//!   bound to, and `--admin-allowed-hosts`. Where a token is required, the token is the guard
//!   (a page cannot send it: the studio keeps it in the page's own session storage), so
//!   Prometheus scraping a pod IP and the studio behind a port-forward under any name work.
//! - **Rendering on the admin origin.** Every answer carries `X-Content-Type-Options: nosniff`
//!   and a `Content-Security-Policy` (the studio's assets their own; everything else
//!   `default-src 'none'` and `sandbox`, so an answer opened as a page runs nothing and has no
//!   origin), and `Cross-Origin-Resource-Policy: same-origin`, so no other origin may embed an
//!   answer. `/v1/endpoint/invoke`, whose body is whatever a scoring script returned (HTML
//!   from a `@rawhttp` script, say), is also sent as an attachment.
//!
//! Non-browser clients (the CLI, the Python SDK, curl, Prometheus) send neither `Origin` nor
//! `Sec-Fetch-Site`, and send JSON; the studio page sends same-origin requests with JSON (or
//! YAML) bodies. None of them is refused.

use std::net::IpAddr;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;

use super::admin::AdminState;
use super::errors::admin_refusal;

/// The policy of every admin answer that does not set its own (the studio's assets do):
/// nothing may load, and the answer, opened as a page, is sandboxed (no script, an opaque
/// origin) and cannot be framed.
pub(super) const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox";

/// Why the gate refused a request. Mapped to an answer in `errors.rs`; every message says what
/// was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A token-less plane was asked under a name it does not serve (DNS rebinding).
    ForeignHost {
        /// The `Host` the request named (as sent, shortened).
        host: String,
        /// The names this plane answers to, for the message.
        allowed: String,
    },
    /// A state-changing request sent by a page of another origin.
    CrossSite {
        /// Which header showed it, and its value.
        evidence: String,
    },
    /// A state-changing request whose body is not declared as JSON or YAML.
    ContentType {
        /// The `Content-Type` sent; `None` when a body came without one.
        got: Option<String>,
    },
}

// === impl AllowedHosts ===

/// The host names a token-less admin plane answers to, besides `localhost` and loopback
/// addresses: the address it is bound to and the names of `--admin-allowed-hosts`.
#[derive(Debug, Clone)]
pub(super) struct AllowedHosts {
    bound: IpAddr,
    /// Lower case, no trailing dot.
    names: Vec<String>,
}

impl AllowedHosts {
    /// The plane bound to `bound`, also answering to `extra` (host names or IP addresses,
    /// without scheme or port). An entry that is not one is refused with the reason.
    pub(super) fn new(bound: IpAddr, extra: &[String]) -> Result<Self, super::ServeError> {
        let mut names = Vec::new();
        for entry in extra.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let name = normalize(entry);
            let literal = name.trim_start_matches('[').trim_end_matches(']');
            let valid = literal.parse::<IpAddr>().is_ok()
                || (!name.is_empty()
                    && name.len() <= 253
                    && name.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    }));
            if !valid {
                return Err(super::ServeError::Setup(format!(
                    "--admin-allowed-hosts: {entry:?} is not a host name or IP address (expected names such as switchyard.internal or 10.0.0.5, comma-separated, without scheme or port)"
                )));
            }
            names.push(literal.to_string());
        }
        Ok(Self { bound, names })
    }

    /// Whether a request naming `host` (the host part of `Host`, no port) is for this plane.
    fn allows(&self, host: &str) -> bool {
        let host = normalize(host);
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if host == "localhost" || self.names.iter().any(|n| *n == literal) {
            return true;
        }
        // An address cannot be rebound: any loopback address, or the one we are bound to.
        match literal.parse::<IpAddr>() {
            Ok(ip) => ip.to_canonical().is_loopback() || ip == self.bound,
            Err(_) => false,
        }
    }

    /// The names accepted, for the refusal's message.
    fn describe(&self) -> String {
        let mut shown = vec!["localhost".to_string(), "loopback addresses".to_string()];
        if !self.bound.is_loopback() && !self.bound.is_unspecified() {
            shown.push(self.bound.to_string());
        }
        shown.extend(self.names.iter().cloned());
        shown.join(", ")
    }
}

/// Lower case, without one trailing dot (`localhost.` is `localhost`).
fn normalize(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    host.strip_suffix('.').map(str::to_string).unwrap_or(host)
}

/// Splits an authority (`name`, `name:port`, `[v6]`, `[v6]:port`) into host and port. `None`
/// when it is not one.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let (host, after) = authority.split_at(end + 2);
        // After the literal: nothing, or a port (`[::1]evil.example` is no authority).
        if !after.is_empty() && !after.starts_with(':') {
            return None;
        }
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    (!host.is_empty()).then_some((host, port))
}

/// The names the request is addressed to: the authority of an absolute-form target (which
/// overrides `Host`, RFC 9112 §3.2.2), else every `Host` value (a request with two is judged
/// by both, not by whichever a proxy or handler would read).
fn hosts_of(headers: &HeaderMap, uri: &actix_web::http::Uri) -> Vec<String> {
    match uri.authority() {
        Some(a) => vec![a.as_str().to_string()],
        None => headers.get_all(header::HOST).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect(),
    }
}

/// Whether `origin` (an `Origin` header) names the same origin as a request sent to `host`:
/// the same host and port, the port of a scheme's default when one side leaves it out (a
/// studio behind a TLS port-forward sends `https://name`, and `Host: name`).
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let (Some((o_host, o_port)), Some((h_host, h_port))) = (split_authority(authority), split_authority(host)) else {
        return false;
    };
    normalize(o_host) == normalize(h_host) && o_port.unwrap_or(default) == h_port.unwrap_or(default)
}

/// Methods that change nothing (and that a page of another origin may send freely).
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether `content_type` declares a JSON or YAML body: the only bodies the admin API reads,
/// and types a page of another origin cannot send without a preflight.
fn is_document_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(essence.as_str(), "application/json" | "application/yaml" | "application/x-yaml" | "text/yaml")
        || (essence.starts_with("application/") && (essence.ends_with("+json") || essence.ends_with("+yaml")))
}

/// Whether `content_type` declares a file's bytes: what `PUT /v1/uploads/{id}/files/{path}`
/// takes (and only it). Not a type a form can send, so it needs a preflight cross-site too.
fn is_file_type(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/octet-stream")
}

/// Whether the request carries a body (a length above 0, or a chunked one).
fn has_body(headers: &HeaderMap) -> bool {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>().map_or(true, |n| n > 0))
        .unwrap_or(false);
    declared || headers.contains_key(header::TRANSFER_ENCODING)
}

/// A header's value as text for a message: lossy, at most 200 characters.
fn shown(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).chars().take(200).collect()
}

/// The gate's decision for one request. `token_required`: the plane has an admin token (the
/// handlers check it; the `Host` rule is then not applied).
pub(super) fn check(
    method: &Method,
    uri: &actix_web::http::Uri,
    headers: &HeaderMap,
    token_required: bool,
    hosts: &AllowedHosts,
) -> Result<(), Refusal> {
    let names = hosts_of(headers, uri);
    if !token_required {
        // No `Host` at all is no browser's request (every browser sends it): let it through.
        for host in &names {
            if !split_authority(host).is_some_and(|(name, _)| hosts.allows(name)) {
                return Err(Refusal::ForeignHost { host: host.chars().take(200).collect(), allowed: hosts.describe() });
            }
        }
    }
    // Same-origin checks need one name the request is addressed to.
    let host = match names.as_slice() {
        [one] => Some(one),
        _ => None,
    };
    if is_safe(method) {
        return Ok(());
    }
    // Every value of a repeated header is judged: a browser sends one, so a second is no
    // browser's, and whichever one a reader takes must not decide.
    for site in headers.get_all(HeaderName::from_static("sec-fetch-site")) {
        // `same-site` too: a page on another port of localhost is same-site, not same-origin.
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Err(Refusal::CrossSite { evidence: format!("Sec-Fetch-Site: {}", shown(site)) });
        }
    }
    for origin in headers.get_all(header::ORIGIN) {
        let ours = match (host, origin.to_str()) {
            (Some(host), Ok(origin)) => same_origin(origin, host),
            _ => false,
        };
        if !ours {
            return Err(Refusal::CrossSite { evidence: format!("Origin: {}", shown(origin)) });
        }
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).peekable();
    if types.peek().is_none() && has_body(headers) {
        return Err(Refusal::ContentType { got: None });
    }
    let file_upload = *method == Method::PUT && uri.path().starts_with("/v1/uploads/");
    for ct in types {
        if !ct.to_str().is_ok_and(|ct| is_document_type(ct) || (file_upload && is_file_type(ct))) {
            return Err(Refusal::ContentType { got: Some(shown(ct)) });
        }
    }
    Ok(())
}

/// The middleware: refuses what [`check`] refuses, and puts the security headers on every
/// answer, refusals and error answers included.
pub(super) async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let verdict = match req.app_data::<web::Data<AdminState>>() {
        Some(state) => {
            check(req.method(), req.uri(), req.headers(), state.control.admin_token().is_some(), &state.allowed_hosts)
        }
        None => Ok(()),
    };
    let mut response = match verdict {
        Err(refusal) => req.into_response(admin_refusal(&refusal)),
        // The handlers answer their errors themselves (JSON `{"message"}`), so an `Err` here
        // would be actix's own; it goes on as it is. (The request cannot be kept to build an
        // answer: a clone held across the call breaks routing.)
        Ok(()) => next.call(req).await?.map_into_boxed_body(),
    };
    secure(response.headers_mut());
    Ok(response)
}

/// `nosniff`, a policy where the handler set none, and no embedding by other origins.
fn secure(headers: &mut HeaderMap) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(API_CSP));
    }
    headers.insert(HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("same-origin"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn hosts(extra: &[&str]) -> AllowedHosts {
        AllowedHosts::new(IpAddr::V4(Ipv4Addr::LOCALHOST), &extra.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn verdict(method: Method, pairs: &[(&str, &str)], token: bool) -> Result<(), Refusal> {
        check(&method, &"/v1/endpoint".parse().unwrap(), &headers(pairs), token, &hosts(&["switchyard.internal"]))
    }

    #[test]
    fn a_token_less_plane_answers_only_to_its_own_names() {
        for host in
            ["localhost:5002", "LOCALHOST.:5002", "127.0.0.1:5002", "127.0.0.2", "[::1]:5002", "switchyard.internal"]
        {
            assert_eq!(verdict(Method::GET, &[("host", host)], false), Ok(()), "{host}");
        }
        for host in ["evil.example:5002", "localhost.evil.example", "10.0.0.5:5002", "[::ffff:10.0.0.5]"] {
            let r = verdict(Method::GET, &[("host", host)], false);
            assert!(matches!(r, Err(Refusal::ForeignHost { .. })), "{host}: {r:?}");
        }
        // With a token, the token is the guard.
        assert_eq!(verdict(Method::GET, &[("host", "evil.example")], true), Ok(()));
    }

    #[test]
    fn state_changes_from_other_origins_are_refused() {
        let json = ("content-type", "application/json");
        let host = ("host", "127.0.0.1:5002");
        for (name, value) in [
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
            ("origin", "http://127.0.0.1:8000"),
            ("origin", "http://localhost:5002"),
            ("origin", "null"),
        ] {
            let r = verdict(Method::POST, &[host, json, (name, value)], true);
            assert!(matches!(r, Err(Refusal::CrossSite { .. })), "{name}: {value}: {r:?}");
            // Reads are not state changes (a link from another site opens the studio).
            assert_eq!(verdict(Method::GET, &[host, (name, value)], false), Ok(()));
        }
        for (name, value) in [("sec-fetch-site", "same-origin"), ("origin", "http://127.0.0.1:5002")] {
            assert_eq!(verdict(Method::DELETE, &[host, (name, value)], false), Ok(()), "{name}: {value}");
        }
        assert_eq!(verdict(Method::PUT, &[("host", "x:443"), ("origin", "https://x")], true), Ok(()));
    }

    #[test]
    fn only_a_file_upload_takes_octet_stream() {
        let host = ("host", "127.0.0.1:5002");
        let bytes = ("content-type", "application/octet-stream");
        let h = headers(&[host, bytes]);
        let put = |path: &str, method: Method| check(&method, &path.parse().unwrap(), &h, true, &hosts(&[]));
        assert!(put("/v1/uploads/abc/files/model/w.pkl", Method::PUT).is_ok());
        assert!(matches!(put("/v1/uploads", Method::POST), Err(Refusal::ContentType { .. })));
        assert!(matches!(put("/v1/deployments/blue", Method::PUT), Err(Refusal::ContentType { .. })));
        // A form's types stay refused on the upload route.
        let form = headers(&[host, ("content-type", "multipart/form-data; boundary=x")]);
        let r = check(&Method::PUT, &"/v1/uploads/abc/files/a".parse().unwrap(), &form, true, &hosts(&[]));
        assert!(matches!(r, Err(Refusal::ContentType { .. })));
    }

    #[test]
    fn bodies_must_be_declared_json_or_yaml() {
        let host = ("host", "localhost");
        for ct in ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data"]
        {
            let r = verdict(Method::POST, &[host, ("content-type", ct), ("content-length", "2")], false);
            assert_eq!(r, Err(Refusal::ContentType { got: Some(ct.into()) }));
        }
        let r = verdict(Method::POST, &[host, ("content-length", "2")], false);
        assert_eq!(r, Err(Refusal::ContentType { got: None }));
        for ct in
            ["application/json", "application/json; charset=utf-8", "application/yaml", "application/merge-patch+json"]
        {
            assert_eq!(verdict(Method::PATCH, &[host, ("content-type", ct), ("content-length", "2")], false), Ok(()));
        }
        // No body, no type: a DELETE, or a rollout action.
        assert_eq!(verdict(Method::DELETE, &[host], false), Ok(()));
        assert_eq!(verdict(Method::POST, &[host, ("content-length", "0")], false), Ok(()));
    }

    #[test]
    fn allowed_host_entries_are_checked() {
        let bound = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(AllowedHosts::new(bound, &["a.example".into(), " 10.0.0.5 ".into(), "[::1]".into(), "".into()]).is_ok());
        for bad in ["http://a.example", "a.example:5002", "a b", "a..b"] {
            let e = AllowedHosts::new(bound, &[bad.into()]).unwrap_err().to_string();
            assert!(e.contains("--admin-allowed-hosts") && e.contains("without scheme or port"), "{e}");
        }
    }

    /// Found by the attack pass: only the first of repeated headers was judged, an IPv6
    /// literal followed by a name parsed as the literal, and an absolute-form target was
    /// judged by `Host` (which such a request's target overrides, RFC 9112 §3.2.2).
    #[test]
    fn repeated_headers_trailing_names_and_absolute_targets_are_judged_whole() {
        let host = ("host", "127.0.0.1:5002");
        let json = ("content-type", "application/json");
        let ours = ("origin", "http://127.0.0.1:5002");
        let r = verdict(Method::POST, &[host, json, ours, ("origin", "http://evil.example")], true);
        assert!(matches!(r, Err(Refusal::CrossSite { .. })), "{r:?}");
        let r = verdict(
            Method::POST,
            &[host, json, ("sec-fetch-site", "same-origin"), ("sec-fetch-site", "cross-site")],
            true,
        );
        assert!(matches!(r, Err(Refusal::CrossSite { .. })), "{r:?}");
        let r = verdict(Method::POST, &[host, json, ("content-type", "text/plain"), ("content-length", "2")], true);
        assert!(matches!(r, Err(Refusal::ContentType { .. })), "{r:?}");
        let r = verdict(Method::GET, &[host, ("host", "evil.example")], false);
        assert!(matches!(r, Err(Refusal::ForeignHost { .. })), "{r:?}");
        for name in ["[::1]evil.example", "[::1]evil.example:5002", "[::1]:5002x"] {
            let r = verdict(Method::GET, &[("host", name)], false);
            assert!(matches!(r, Err(Refusal::ForeignHost { .. })), "{name}: {r:?}");
        }
        let absolute: actix_web::http::Uri = "http://evil.example:5002/v1/endpoint/keys".parse().unwrap();
        let r = check(&Method::GET, &absolute, &headers(&[host]), false, &hosts(&[]));
        assert!(matches!(r, Err(Refusal::ForeignHost { .. })), "{r:?}");
        let absolute: actix_web::http::Uri = "http://127.0.0.1:5002/v1/endpoint".parse().unwrap();
        assert_eq!(check(&Method::GET, &absolute, &headers(&[host]), false, &hosts(&[])), Ok(()));
    }
}
