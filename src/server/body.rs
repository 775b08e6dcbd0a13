//! Reading a `/score` body within three bounds: its size (413), its arrival time (408) and its
//! content coding (415).
//!
//! Why each bound exists:
//! - **Size.** The limit applies to the body the hook will see, so for `Content-Encoding: gzip`
//!   it is checked against the *decoded* bytes as they are produced (a gzip bomb stops at the
//!   limit, never expanding further). A declared `Content-Length` over the limit is refused
//!   before anything is read — also by the scoring plane's `Expect: 100-continue` handler, so a
//!   client that asked first never gets `100 Continue` for a body that would be refused.
//! - **Time.** actix cuts slow *headers* (5 s) but not slow bodies: a body trickled a byte a
//!   second held a connection, a file descriptor and (since the front door takes the admission
//!   slot first) an admission slot forever. The whole body must arrive within `timeout`.
//! - **Memory.** The body is read into one buffer sized from `Content-Length` (capped at the
//!   limit), so a 10 MiB body costs 10 MiB, not the 16 MiB of a doubling buffer; a body that
//!   arrives in one piece (most small ones) is kept as that piece, with no copy.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use actix_web::http::header::{self, HeaderMap};
use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures_core::Stream;

use super::errors::Refused;

/// First buffer size for a body without `Content-Length` (chunked): grows by doubling.
const UNSIZED_START: usize = 16 * 1024;

/// How a `/score` body may be read.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLimits {
    /// Largest body, in bytes, after decoding (and on the wire).
    pub max_bytes: usize,
    /// The whole body must have arrived this long after the handler starts reading it.
    pub timeout: Duration,
}

/// The content codings a body may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    Identity,
    Gzip,
}

/// What the request head says about its body: refuses (413/415) what can be refused before a
/// byte of it is read. Used by the `/score` handler and by the `Expect: 100-continue` check.
pub(super) fn check_head(headers: &HeaderMap, max_bytes: usize) -> Result<(Coding, Option<u64>), Refused> {
    let coding = coding(headers)?;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return Err(too_large(max_bytes));
    }
    Ok((coding, declared))
}

/// Reads the whole body within `limits` (see the module documentation).
///
/// The deadline runs from this call, but its timer is armed only for a body that is still
/// incomplete at the second poll. A small body arrives with the request head, and actix's
/// dispatcher polls the handler once *before* it feeds the body it has already read (then
/// again right after): arming a timer at that first poll cost every request a timer
/// registration and cancellation on the worker's timer wheel, for a body that was complete
/// microseconds later. The first `Pending` therefore wakes the task itself (no timer yet, and
/// no risk of never being polled again); if the body is still incomplete on the next poll,
/// the timer is armed for the same deadline.
pub(super) async fn read(headers: &HeaderMap, mut payload: web::Payload, limits: BodyLimits) -> Result<Bytes, Refused> {
    let (coding, declared) = check_head(headers, limits.max_bytes)?;
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut reading = std::pin::pin!(collect(&mut payload, coding, declared, limits.max_bytes));
    let mut first = true;
    let early = std::future::poll_fn(|cx| match reading.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(Some(result)),
        Poll::Pending if first => {
            first = false;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    if let Some(result) = early {
        return result;
    }
    match tokio::time::timeout_at(deadline, reading).await {
        Ok(result) => result,
        // The rest of the body will never be read: the answer closes the connection.
        Err(_) => Err(Refused::BodyTimeout(format!(
            "the request body arrived too slowly: it was not complete within {} ms (serve --body-timeout-ms)",
            limits.timeout.as_millis()
        ))),
    }
}

/// The 413 refusal.
pub(super) fn too_large(max_bytes: usize) -> Refused {
    Refused::TooLarge(format!(
        "the request body is larger than this server accepts ({max_bytes} bytes, after decoding; see serve --max-body-bytes)"
    ))
}

/// `Content-Encoding`: none, `identity` or `gzip` (`x-gzip`); anything else is 415, naming it.
fn coding(headers: &HeaderMap) -> Result<Coding, Refused> {
    let mut found = Coding::Identity;
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = value.to_str().unwrap_or("?");
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let this = if token.eq_ignore_ascii_case("identity") {
                Coding::Identity
            } else if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
                Coding::Gzip
            } else {
                return Err(unsupported(&format!("Content-Encoding {token:?} is not supported")));
            };
            if this == Coding::Gzip && found == Coding::Gzip {
                return Err(unsupported("a body encoded twice (Content-Encoding: gzip, gzip) is not supported"));
            }
            if this == Coding::Gzip {
                found = Coding::Gzip;
            }
        }
    }
    Ok(found)
}

fn unsupported(what: &str) -> Refused {
    Refused::UnsupportedEncoding(format!(
        "{what}: send the body uncompressed, or compressed once with Content-Encoding: gzip"
    ))
}

/// The next chunk of the body, `None` at its end.
async fn next_chunk(payload: &mut web::Payload) -> Option<Result<Bytes, actix_web::error::PayloadError>> {
    std::future::poll_fn(|cx| Pin::new(&mut *payload).poll_next(cx)).await
}

async fn collect(
    payload: &mut web::Payload,
    coding: Coding,
    declared: Option<u64>,
    max_bytes: usize,
) -> Result<Bytes, Refused> {
    let cannot_read =
        |e: actix_web::error::PayloadError| Refused::BadRequest(format!("cannot read the request body: {e}"));
    // `check_head` refused a declared length over the limit, so this allocation is bounded.
    let start = declared.map_or(UNSIZED_START, |n| n as usize).min(max_bytes);
    match coding {
        Coding::Identity => {
            // A body that arrives in one piece, as its declared length says (nearly every
            // small body), is that piece: no buffer, no copy.
            let Some(first) = next_chunk(payload).await else { return Ok(Bytes::new()) };
            let first = first.map_err(cannot_read)?;
            if first.len() > max_bytes {
                return Err(too_large(max_bytes));
            }
            if declared == Some(first.len() as u64) {
                return Ok(first);
            }
            let mut body = BytesMut::with_capacity(start.max(first.len()));
            body.extend_from_slice(&first);
            while let Some(chunk) = next_chunk(payload).await {
                let chunk = chunk.map_err(cannot_read)?;
                if body.len() + chunk.len() > max_bytes {
                    return Err(too_large(max_bytes));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body.freeze())
        }
        Coding::Gzip => {
            let not_gzip = |e: std::io::Error| {
                Refused::BadRequest(format!(
                    "the body is sent with Content-Encoding: gzip but is not valid gzip data ({e})"
                ))
            };
            // The decoded size is unknown: start from the wire size, grow as needed.
            let mut decoder =
                flate2::write::GzDecoder::new(Capped { body: BytesMut::with_capacity(start), max_bytes, over: false });
            let mut wire = 0usize;
            while let Some(chunk) = next_chunk(payload).await {
                let chunk = chunk.map_err(cannot_read)?;
                wire += chunk.len();
                if wire > max_bytes {
                    return Err(too_large(max_bytes));
                }
                if let Err(e) = decoder.write_all(&chunk) {
                    return Err(if decoder.get_ref().over { too_large(max_bytes) } else { not_gzip(e) });
                }
            }
            if let Err(e) = decoder.try_finish() {
                return Err(if decoder.get_ref().over { too_large(max_bytes) } else { not_gzip(e) });
            }
            match decoder.finish() {
                Ok(capped) => Ok(capped.body.freeze()),
                Err(e) => Err(not_gzip(e)),
            }
        }
    }
}

/// Where decoded bytes go: refuses to grow past the limit, so decoding stops there.
struct Capped {
    body: BytesMut,
    max_bytes: usize,
    over: bool,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.body.len() + buf.len() > self.max_bytes {
            self.over = true;
            return Err(std::io::Error::other("the decoded body is larger than the limit"));
        }
        self.body.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(header::HeaderName::from_static(k), header::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn head_checks() {
        assert_eq!(check_head(&headers(&[]), 10).unwrap(), (Coding::Identity, None));
        assert_eq!(check_head(&headers(&[("content-length", "10")]), 10).unwrap(), (Coding::Identity, Some(10)));
        assert_eq!(check_head(&headers(&[("content-length", "11")]), 10).unwrap_err().answer().status(), 413);
        assert_eq!(check_head(&headers(&[("content-encoding", "GZIP")]), 10).unwrap().0, Coding::Gzip);
        assert_eq!(check_head(&headers(&[("content-encoding", "identity, x-gzip")]), 10).unwrap().0, Coding::Gzip);
        assert_eq!(check_head(&headers(&[("content-encoding", "br")]), 10).unwrap_err().answer().status(), 415);
        assert_eq!(check_head(&headers(&[("content-encoding", "gzip, gzip")]), 10).unwrap_err().answer().status(), 415);
    }

    /// The handler's view of a body stream.
    async fn web_payload(stream: actix_http::h1::Payload) -> web::Payload {
        use actix_web::FromRequest;
        let (req, _) = actix_web::test::TestRequest::default().to_http_parts();
        web::Payload::from_request(&req, &mut actix_web::dev::Payload::from(stream)).await.unwrap()
    }

    /// A body stream that carries `chunks`, then ends.
    async fn payload(chunks: &[Bytes]) -> web::Payload {
        let (mut tx, rx) = actix_http::h1::Payload::create(false);
        for chunk in chunks {
            tx.feed_data(chunk.clone());
        }
        tx.feed_eof();
        web_payload(rx).await
    }

    const LIMITS: BodyLimits = BodyLimits { max_bytes: 64, timeout: Duration::from_secs(30) };

    #[tokio::test]
    async fn a_body_in_one_piece_is_kept_without_a_copy() {
        let chunk = Bytes::from(b"{\"data\":[[1]]}".to_vec());
        let body = payload(std::slice::from_ref(&chunk)).await;
        let got = read(&headers(&[("content-length", "14")]), body, LIMITS).await.unwrap();
        assert_eq!(got, chunk);
        assert_eq!(got.as_ptr(), chunk.as_ptr(), "the piece itself, not a copy");
    }

    #[tokio::test]
    async fn pieces_are_joined_and_bounded() {
        let pieces = [Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        let body = payload(&pieces).await;
        assert_eq!(read(&headers(&[("content-length", "11")]), body, LIMITS).await.unwrap(), "hello world");
        let body = payload(&pieces).await;
        assert_eq!(read(&headers(&[]), body, LIMITS).await.unwrap(), "hello world", "chunked: no length");
        let small = BodyLimits { max_bytes: 8, ..LIMITS };
        let body = payload(&pieces).await;
        assert_eq!(read(&headers(&[]), body, small).await.unwrap_err().answer().status(), 413);
        let body = payload(&[Bytes::from_static(b"0123456789")]).await;
        assert_eq!(
            read(&headers(&[]), body, small).await.unwrap_err().answer().status(),
            413,
            "one piece over the limit"
        );
    }

    /// The deadline holds whether the body stalls before its first byte or after, though its
    /// timer is armed only at the second poll; and a body that arrives after the first poll
    /// is read (the first `Pending` wakes the task).
    #[tokio::test]
    async fn a_stalled_body_meets_its_deadline_and_a_late_one_is_read() {
        let quick = BodyLimits { timeout: Duration::from_millis(50), ..LIMITS };
        let h = headers(&[("content-length", "5")]);
        let (_tx, rx) = actix_http::h1::Payload::create(false);
        assert_eq!(read(&h, web_payload(rx).await, quick).await.unwrap_err().answer().status(), 408, "no byte came");
        let (mut tx, rx) = actix_http::h1::Payload::create(false);
        tx.feed_data(Bytes::from_static(b"ab"));
        assert_eq!(
            read(&h, web_payload(rx).await, quick).await.unwrap_err().answer().status(),
            408,
            "2 bytes of 5 came"
        );

        let (mut tx, rx) = actix_http::h1::Payload::create(false);
        let body = web_payload(rx).await;
        let (got, ()) = tokio::join!(read(&h, body, LIMITS), async move {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            tx.feed_data(Bytes::from_static(b"hello"));
            tx.feed_eof();
        });
        assert_eq!(got.unwrap(), "hello");
    }

    #[test]
    fn capped_writer_stops_at_the_limit() {
        let mut c = Capped { body: BytesMut::new(), max_bytes: 4, over: false };
        assert!(c.write_all(b"abcd").is_ok());
        assert!(c.write_all(b"e").is_err());
        assert!(c.over);
    }
}
