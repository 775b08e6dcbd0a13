//! The frame protocol between Switchyard and a worker process (runtime/python/switchyard_worker.py
//! documents the frame types): a 4-byte big-endian length (of type and payload), a 1-byte type,
//! the payload.
//!
//! Reads take a deadline and wait with `poll(2)`, not a blocking `read`: a worker that hangs
//! must never hang the thread that waits for it (mirror copies run without a `Cancellation`,
//! and init has no request to time it out). The bytes read so far are kept by the caller, not
//! in a `BufReader`, so `poll` always tells the truth about what is left to read.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::Instant;

use crate::hooks::Headers;

/// The largest frame a worker may send: an answer bigger than this is a broken worker.
pub(crate) const MAX_FRAME: usize = 256 * 1024 * 1024;

/// Frame types (one byte on the wire).
pub(crate) mod kind {
    /// Switchyard → worker: score one request.
    pub(crate) const RUN: u8 = b'R';
    /// Worker → Switchyard: init done.
    pub(crate) const INIT_OK: u8 = b'I';
    /// Worker → Switchyard: init raised (then the worker exits).
    pub(crate) const INIT_FAILED: u8 = b'E';
    /// Worker → Switchyard: an answer.
    pub(crate) const ANSWER: u8 = b'A';
    /// Worker → Switchyard: `run` raised.
    pub(crate) const RAISED: u8 = b'X';
    /// Worker → Switchyard: the input is not what the script takes (HTTP 400).
    pub(crate) const BAD_INPUT: u8 = b'B';
    /// Worker → Switchyard: the code panicked (HTTP 424); the worker exits after sending it
    /// and is replaced (native plugins: `SWITCHYARD_PANIC`).
    pub(crate) const PANICKED: u8 = b'P';
    /// Worker → Switchyard: the answer cannot be sent, and why (HTTP 424): NaN or Infinity
    /// where JSON has none, an answer over [`super::MAX_FRAME`]. The worker lives on.
    pub(crate) const UNSERVABLE: u8 = b'U';
}

/// Why no frame came back.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The worker closed its end (it exited or was killed).
    Closed,
    /// The deadline passed first.
    TimedOut,
    /// The frame is malformed (empty).
    Malformed(String),
    /// The frame is longer than [`MAX_FRAME`] (its announced length).
    TooLarge(usize),
    /// Any other I/O error.
    Io(io::Error),
}

/// Builds a run frame in `scratch`: the content type, the request's headers (`None`: the
/// script reads none, so none are sent), then the body. Built whole, so its length is known
/// before it is written (a run queued behind another must fit in what the pipe holds).
pub(crate) fn build_run(
    scratch: &mut Vec<u8>,
    content_type: &str,
    headers: Option<&Headers>,
    body: &[u8],
) -> io::Result<()> {
    let ct = &content_type.as_bytes()[..content_type.len().min(u16::MAX as usize)];
    scratch.clear();
    scratch.extend_from_slice(&[0; 4]); // the frame's length, set below
    scratch.push(kind::RUN);
    scratch.extend_from_slice(&(ct.len() as u16).to_be_bytes());
    scratch.extend_from_slice(ct);
    let block = scratch.len();
    scratch.extend_from_slice(&[0; 4]);
    if let Some(headers) = headers {
        write_headers(scratch, headers);
    }
    let block_len = (scratch.len() - block - 4) as u32; // headers are bounded at 16 KiB
    scratch[block..block + 4].copy_from_slice(&block_len.to_be_bytes());
    scratch.extend_from_slice(body);
    let len = u32::try_from(scratch.len() - 4)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "request too large"))?;
    scratch[..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// The request's headers as Azure's inference server hands them to `run(raw_data,
/// request_headers)`: its `dict(request.headers)` under gunicorn and werkzeug gives each name
/// title-cased (`X-Ms-Client-Request-Id`, `Content-Type`), a repeated header once with its
/// values joined by `,`, and no header whose name holds `_` (gunicorn drops them). One thing
/// differs on purpose: `Authorization` is not passed, so the endpoint's key never reaches user
/// code or the logs a script writes. Written as `name NUL value NUL name NUL value`.
fn write_headers(out: &mut Vec<u8>, headers: &Headers) {
    let mut first = true;
    for name in headers.names() {
        if name.contains('_') || name == "authorization" {
            continue;
        }
        if !first {
            out.push(0);
        }
        first = false;
        // Python's str.title(): a letter after a letter is lower case, any other is upper.
        let mut after_letter = false;
        out.extend(name.bytes().map(|b| {
            let letter = b.is_ascii_alphabetic();
            let c = if !letter {
                b
            } else if after_letter {
                b.to_ascii_lowercase()
            } else {
                b.to_ascii_uppercase()
            };
            after_letter = letter;
            c
        }));
        out.push(0);
        for (i, value) in headers.get_all(name).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(value);
        }
    }
}

/// Writes one frame of `kind` whose payload is `parts`, one after the other (the worker side).
pub(crate) fn write_frame(out: &mut impl Write, scratch: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) -> io::Result<()> {
    let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let len = u32::try_from(len)
        .ok()
        .filter(|&l| l as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    scratch.clear();
    scratch.extend_from_slice(&len.to_be_bytes());
    scratch.push(kind);
    for p in parts {
        scratch.extend_from_slice(p);
    }
    out.write_all(scratch)
}

/// Writes an answer frame with no further headers: status, content type, body (the worker
/// side; the layout [`parse_answer`] reads).
pub(crate) fn write_answer(
    out: &mut impl Write,
    scratch: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let ct = &content_type.as_bytes()[..content_type.len().min(u16::MAX as usize)];
    let parts: [&[u8]; 5] = [&status.to_be_bytes(), &(ct.len() as u16).to_be_bytes(), ct, &0u32.to_be_bytes(), body];
    write_frame(out, scratch, kind::ANSWER, &parts)
}

/// Splits a run payload into content type, header block and body (the worker side).
pub(crate) fn parse_run(payload: &[u8]) -> Option<(&str, &[u8], &[u8])> {
    let ct_len = u16::from_be_bytes(payload.get(0..2)?.try_into().ok()?) as usize;
    let ct = payload.get(2..2 + ct_len)?;
    let rest = &payload[2 + ct_len..];
    let h_len = u32::from_be_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
    let headers = rest.get(4..4usize.checked_add(h_len)?)?;
    let body = &rest[4 + h_len..];
    Some((std::str::from_utf8(ct).unwrap_or(""), headers, body))
}

/// Reads one frame, waiting at most until `deadline` (`None`: no limit). Returns its type and
/// payload.
pub(crate) fn read_frame<R: Read + AsRawFd>(
    input: &mut R,
    deadline: Option<Instant>,
) -> Result<(u8, Vec<u8>), ReadError> {
    let mut head = [0u8; 5];
    read_exact_until(input, &mut head, deadline)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > MAX_FRAME {
        return Err(ReadError::TooLarge(len));
    }
    if len == 0 {
        return Err(ReadError::Malformed("a frame of 0 bytes".into()));
    }
    let mut payload = vec![0u8; len - 1];
    read_exact_until(input, &mut payload, deadline)?;
    Ok((head[4], payload))
}

fn read_exact_until<R: Read + AsRawFd>(
    input: &mut R,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> Result<(), ReadError> {
    let mut filled = 0;
    while filled < buf.len() {
        wait_readable(input.as_raw_fd(), deadline)?;
        match input.read(&mut buf[filled..]) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(n) => filled += n,
            // WouldBlock: the pipe is non-blocking (see PythonHook) and poll's word was stale.
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock) => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(())
}

/// Waits until `fd` has data (or is closed), or the deadline passes.
fn wait_readable(fd: i32, deadline: Option<Instant>) -> Result<(), ReadError> {
    loop {
        let timeout_ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ReadError::TimedOut);
                }
                // Round up, so a wait never spins on a 0 ms timeout before the deadline.
                left.as_millis().saturating_add(1).min(i32::MAX as u128) as i32
            }
        };
        // Readable, or hung up / error: the read says which.
        if crate::sys::poll_readable(fd, timeout_ms).map_err(ReadError::Io)? {
            return Ok(());
        }
    }
}

/// An answer frame's parts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer<'a> {
    pub status: u16,
    pub content_type: &'a str,
    /// The script's further headers, `name NUL value NUL ...` (empty: none).
    pub headers: &'a [u8],
    pub body: &'a [u8],
}

/// Splits an answer payload: u16 status, u16 content-type length, the content type, u32
/// header-block length, the header block, the body.
pub(crate) fn parse_answer(payload: &[u8]) -> Option<Answer<'_>> {
    let status = u16::from_be_bytes(payload.get(0..2)?.try_into().ok()?);
    let ct_len = u16::from_be_bytes(payload.get(2..4)?.try_into().ok()?) as usize;
    let ct = payload.get(4..4 + ct_len)?;
    let rest = &payload[4 + ct_len..];
    let h_len = u32::from_be_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
    let headers = rest.get(4..4usize.checked_add(h_len)?)?;
    let body = &rest[4 + h_len..];
    let content_type = std::str::from_utf8(ct).unwrap_or("application/octet-stream");
    Some(Answer { status, content_type, headers, body })
}

/// The pairs of a header block (a malformed one yields what pairs it holds).
pub(crate) fn header_pairs(block: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut parts = block.split(|&b| b == 0).filter(|_| !block.is_empty());
    std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_frame_round_trips_and_a_closed_pipe_is_closed() {
        let (mut r, mut w) = std::io::pipe().unwrap();
        let mut scratch = Vec::new();
        let mut headers = Headers::default();
        for (name, value) in [
            ("x-ms-client-request-id", "abc"),
            ("x-b3-traceid", "1"),
            ("x-repeated", "a"),
            ("x-repeated", "b"),
            ("authorization", "Bearer secret"),
            ("x_under", "dropped"),
        ] {
            headers.push(name, value.as_bytes());
        }
        build_run(&mut scratch, "application/json", Some(&headers), b"{\"a\":1}").unwrap();
        w.write_all(&scratch).unwrap();
        drop(w);
        let (k, payload) = read_frame(&mut r, None).unwrap();
        assert_eq!(k, kind::RUN);
        assert_eq!(&payload[..2], &16u16.to_be_bytes());
        assert_eq!(&payload[2..18], b"application/json");
        let block_len = u32::from_be_bytes(payload[18..22].try_into().unwrap()) as usize;
        let mut pairs: Vec<_> = header_pairs(&payload[22..22 + block_len])
            .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        pairs.sort();
        assert_eq!(
            pairs,
            [("X-B3-Traceid", "1"), ("X-Ms-Client-Request-Id", "abc"), ("X-Repeated", "a,b")]
                .map(|(n, v)| (n.to_string(), v.to_string()))
        );
        assert_eq!(&payload[22 + block_len..], b"{\"a\":1}");
        assert!(matches!(read_frame(&mut r, None), Err(ReadError::Closed)));
    }

    #[test]
    fn worker_side_frames_round_trip() {
        let (mut r, mut w) = std::io::pipe().unwrap();
        let mut scratch = Vec::new();
        build_run(&mut scratch, "text/csv", None, b"1,2").unwrap();
        w.write_all(&scratch).unwrap();
        let (k, payload) = read_frame(&mut r, None).unwrap();
        assert_eq!((k, parse_run(&payload)), (kind::RUN, Some(("text/csv", &b""[..], &b"1,2"[..]))));
        write_answer(&mut w, &mut scratch, 201, "application/json", b"[1]").unwrap();
        let (k, payload) = read_frame(&mut r, None).unwrap();
        let answer = Answer { status: 201, content_type: "application/json", headers: b"", body: b"[1]" };
        assert_eq!((k, parse_answer(&payload)), (kind::ANSWER, Some(answer)));
        assert_eq!(parse_run(b"\x00"), None);
        assert_eq!(parse_run(b"\x00\x05ab"), None);
    }

    #[test]
    fn a_silent_pipe_times_out() {
        let (mut r, _w) = std::io::pipe().unwrap();
        let deadline = Instant::now() + std::time::Duration::from_millis(20);
        assert!(matches!(read_frame(&mut r, Some(deadline)), Err(ReadError::TimedOut)));
    }

    #[test]
    fn malformed_answers_are_refused_not_panicked_on() {
        let a = parse_answer(b"\x00\xc8\x00\x02ab\x00\x00\x00\x03x\x00y{}").unwrap();
        assert_eq!((a.status, a.content_type, a.headers, a.body), (200, "ab", &b"x\0y"[..], &b"{}"[..]));
        assert_eq!(header_pairs(a.headers).collect::<Vec<_>>(), [(&b"x"[..], &b"y"[..])]);
        assert_eq!(header_pairs(b"").count(), 0);
        assert_eq!(parse_answer(b"\x00\xc8\x00\x02ab\x00\x00\x00\x09x"), None);
        assert_eq!(parse_answer(b"\x00\xc8\x00\x09ab"), None);
        assert_eq!(parse_answer(b"\x00"), None);
        let (mut r, mut w) = std::io::pipe().unwrap();
        w.write_all(&[0, 0, 0, 0, b'A']).unwrap();
        assert!(matches!(read_frame(&mut r, None), Err(ReadError::Malformed(_))));
    }
}
