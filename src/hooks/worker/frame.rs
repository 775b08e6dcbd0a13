//! The frame protocol between Switchyard and a worker process (runtime/python/switchyard_worker.py
//! documents the frame types; `switchyard native-worker` speaks the same, plus `P`): a 4-byte
//! big-endian length (of type and payload), a 1-byte type, the payload.
//!
//! Reads take a deadline and wait with `poll(2)`, not a blocking `read`: a worker that hangs
//! must never hang the thread that waits for it (mirror copies run without a `Cancellation`,
//! and init has no request to time it out). The bytes read so far are kept by the caller, not
//! in a `BufReader`, so `poll` always tells the truth about what is left to read.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::Instant;

/// The largest frame a worker may send: an answer bigger than this is a broken worker.
pub const MAX_FRAME: usize = 256 * 1024 * 1024;

/// Frame types (one byte on the wire).
pub mod kind {
    /// Switchyard → worker: score one request.
    pub const RUN: u8 = b'R';
    /// Worker → Switchyard: init done.
    pub const INIT_OK: u8 = b'I';
    /// Worker → Switchyard: init raised (then the worker exits).
    pub const INIT_FAILED: u8 = b'E';
    /// Worker → Switchyard: an answer.
    pub const ANSWER: u8 = b'A';
    /// Worker → Switchyard: `run` raised.
    pub const RAISED: u8 = b'X';
    /// Worker → Switchyard: the input is not what the script takes (HTTP 400).
    pub const BAD_INPUT: u8 = b'B';
    /// Worker → Switchyard: the code panicked (HTTP 424); the worker exits after sending it
    /// and is replaced (native plugins: `SWITCHYARD_PANIC`).
    pub const PANICKED: u8 = b'P';
}

/// Why no frame came back.
#[derive(Debug)]
pub enum ReadError {
    /// The worker closed its end (it exited or was killed).
    Closed,
    /// The deadline passed first.
    TimedOut,
    /// The frame is malformed (too long, empty).
    Malformed(String),
    /// Any other I/O error.
    Io(io::Error),
}

/// Writes a run frame: the content type, then the body.
pub fn write_run(out: &mut impl Write, scratch: &mut Vec<u8>, content_type: &str, body: &[u8]) -> io::Result<()> {
    let ct = &content_type.as_bytes()[..content_type.len().min(u16::MAX as usize)];
    let len = 1 + 2 + ct.len() + body.len();
    let len = u32::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "request too large"))?;
    scratch.clear();
    scratch.extend_from_slice(&len.to_be_bytes());
    scratch.push(kind::RUN);
    scratch.extend_from_slice(&(ct.len() as u16).to_be_bytes());
    scratch.extend_from_slice(ct);
    scratch.extend_from_slice(body);
    out.write_all(scratch)
}

/// Writes one frame of `kind` whose payload is `parts`, one after the other (the worker side).
pub fn write_frame(out: &mut impl Write, scratch: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) -> io::Result<()> {
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

/// Writes an answer frame: status, content type, body (the worker side).
pub fn write_answer(
    out: &mut impl Write,
    scratch: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let ct = &content_type.as_bytes()[..content_type.len().min(u16::MAX as usize)];
    write_frame(out, scratch, kind::ANSWER, &[&status.to_be_bytes(), &(ct.len() as u16).to_be_bytes(), ct, body])
}

/// Splits a run payload into content type and body (the worker side).
pub fn parse_run(payload: &[u8]) -> Option<(&str, &[u8])> {
    let ct_len = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]) as usize;
    let ct = payload.get(2..2 + ct_len)?;
    let body = payload.get(2 + ct_len..)?;
    Some((std::str::from_utf8(ct).unwrap_or(""), body))
}

/// Reads one frame, waiting at most until `deadline` (`None`: no limit). Returns its type and
/// payload.
pub fn read_frame<R: Read + AsRawFd>(input: &mut R, deadline: Option<Instant>) -> Result<(u8, Vec<u8>), ReadError> {
    let mut head = [0u8; 5];
    read_exact_until(input, &mut head, deadline)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(ReadError::Malformed(format!("a frame of {len} bytes")));
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
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
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

/// Splits an answer payload into status, content type and body.
pub fn parse_answer(payload: &[u8]) -> Option<(u16, &str, &[u8])> {
    if payload.len() < 4 {
        return None;
    }
    let status = u16::from_be_bytes([payload[0], payload[1]]);
    let ct_len = u16::from_be_bytes([payload[2], payload[3]]) as usize;
    let ct = payload.get(4..4 + ct_len)?;
    let body = payload.get(4 + ct_len..)?;
    Some((status, std::str::from_utf8(ct).unwrap_or("application/octet-stream"), body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_frame_round_trips_and_a_closed_pipe_is_closed() {
        let (mut r, mut w) = std::io::pipe().unwrap();
        let mut scratch = Vec::new();
        write_run(&mut w, &mut scratch, "application/json", b"{\"a\":1}").unwrap();
        drop(w);
        let (k, payload) = read_frame(&mut r, None).unwrap();
        assert_eq!(k, kind::RUN);
        assert_eq!(&payload[..2], &16u16.to_be_bytes());
        assert_eq!(&payload[2..18], b"application/json");
        assert_eq!(&payload[18..], b"{\"a\":1}");
        assert!(matches!(read_frame(&mut r, None), Err(ReadError::Closed)));
    }

    #[test]
    fn worker_side_frames_round_trip() {
        let (mut r, mut w) = std::io::pipe().unwrap();
        let mut scratch = Vec::new();
        write_run(&mut w, &mut scratch, "text/csv", b"1,2").unwrap();
        let (k, payload) = read_frame(&mut r, None).unwrap();
        assert_eq!((k, parse_run(&payload)), (kind::RUN, Some(("text/csv", &b"1,2"[..]))));
        write_answer(&mut w, &mut scratch, 201, "application/json", b"[1]").unwrap();
        let (k, payload) = read_frame(&mut r, None).unwrap();
        assert_eq!((k, parse_answer(&payload)), (kind::ANSWER, Some((201, "application/json", &b"[1]"[..]))));
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
        assert_eq!(parse_answer(b"\x00\xc8\x00\x02ab{}"), Some((200, "ab", &b"{}"[..])));
        assert_eq!(parse_answer(b"\x00\xc8\x00\x09ab"), None);
        assert_eq!(parse_answer(b"\x00"), None);
        let (mut r, mut w) = std::io::pipe().unwrap();
        w.write_all(&[0, 0, 0, 0, b'A']).unwrap();
        assert!(matches!(read_frame(&mut r, None), Err(ReadError::Malformed(_))));
    }
}
