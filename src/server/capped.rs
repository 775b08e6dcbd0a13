//! A connection cap and a handshake deadline for a listener whose server has neither: the gRPC
//! plane (tonic serves every connection its listener yields, and hyper's HTTP/2 waits for a
//! client's connection preface without a deadline).
//!
//! Why: every connection holds a file descriptor. Without a cap, enough clients that connect
//! and hold (idle, or never speaking HTTP/2 at all) use up the process's descriptors, and then
//! nothing can be accepted or opened — not the REST planes, not a model file ([`super::limits`]
//! caps the HTTP planes for the same reason). With a cap and no deadline, the same clients
//! would fill the cap for good; so a connection must send HTTP/2's connection preface (24
//! bytes) within [`PREFACE_DEADLINE`] of being accepted, else it is closed. After the preface,
//! HTTP/2 keepalive pings find the dead ones. A client over the cap waits in the listen backlog
//! until a connection closes, as on the HTTP planes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// How long an accepted connection has to send HTTP/2's connection preface.
pub(crate) const PREFACE_DEADLINE: Duration = Duration::from_secs(10);

/// The length of HTTP/2's client connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
const PREFACE_BYTES: usize = 24;

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// The connections of `inner`, at most `slots` open at once: the next one is taken from the
/// listener only once one of the open ones has closed.
pub(crate) struct Capped<S> {
    inner: S,
    slots: Arc<Semaphore>,
    waiting: Option<Acquire>,
    slot: Option<OwnedSemaphorePermit>,
    /// After a failed accept (out of descriptors: the listener stays readable), a pause before
    /// the next: tonic's accept loop goes on at once, and would spin on the error.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long accepting pauses after an accept fails.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

impl<S> Capped<S> {
    pub(crate) fn new(inner: S, slots: usize) -> Self {
        Capped { inner, slots: Arc::new(Semaphore::new(slots.max(1))), waiting: None, slot: None, pause: None }
    }
}

impl<S> Stream for Capped<S>
where
    S: Stream<Item = io::Result<TcpStream>> + Unpin,
{
    type Item = io::Result<CappedConnection>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(pause) = &mut this.pause {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.pause = None;
        }
        if this.slot.is_none() {
            let slots = &this.slots;
            let waiting = this.waiting.get_or_insert_with(|| Box::pin(Arc::clone(slots).acquire_owned()));
            match waiting.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(slot)) => {
                    this.waiting = None;
                    this.slot = Some(slot);
                }
                Poll::Ready(Err(_)) => return Poll::Ready(None),
            }
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(stream))) => match this.slot.take() {
                Some(slot) => Poll::Ready(Some(Ok(CappedConnection::new(stream, slot)))),
                None => Poll::Ready(Some(Err(io::Error::other("a connection was accepted without a slot")))),
            },
            Poll::Ready(Some(Err(e))) => {
                this.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_PAUSE)));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One accepted connection: its slot is freed when it is dropped (closed); reading from it
/// fails with `TimedOut` if the preface has not come within [`PREFACE_DEADLINE`].
pub(crate) struct CappedConnection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Until the preface has been read: its bytes so far and the deadline.
    preface: Option<(usize, Pin<Box<tokio::time::Sleep>>)>,
}

impl CappedConnection {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit) -> Self {
        let deadline = Box::pin(tokio::time::sleep(PREFACE_DEADLINE));
        CappedConnection { stream, _slot: slot, preface: Some((0, deadline)) }
    }
}

impl AsyncRead for CappedConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        let Some((seen, deadline)) = &mut self.preface else { return polled };
        *seen += read;
        if *seen >= PREFACE_BYTES {
            self.preface = None;
            return polled;
        }
        match polled {
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 connection preface within the deadline",
            ))),
            other => other,
        }
    }
}

impl AsyncWrite for CappedConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for CappedConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The accepted connections of a fresh listener, capped at `slots`, and its address.
    async fn listener(slots: usize) -> (Capped<tonic::transport::server::TcpIncoming>, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (Capped::new(tonic::transport::server::TcpIncoming::from(listener), slots), addr)
    }

    async fn next(incoming: &mut Capped<tonic::transport::server::TcpIncoming>) -> CappedConnection {
        std::future::poll_fn(|cx| Pin::new(&mut *incoming).poll_next(cx)).await.unwrap().unwrap()
    }

    /// Whether a connection is yielded within a (paused-clock) second.
    async fn yields(incoming: &mut Capped<tonic::transport::server::TcpIncoming>) -> bool {
        tokio::time::timeout(Duration::from_secs(1), next(incoming)).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_cap_a_connection_waits_until_one_closes() {
        let (mut incoming, addr) = listener(1).await;
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let first = next(&mut incoming).await;
        assert!(!yields(&mut incoming).await, "the second waits while the first is open");
        drop(first);
        assert!(yields(&mut incoming).await, "and is taken once it closes");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_no_preface_is_closed_at_the_deadline() {
        let (mut incoming, addr) = listener(4).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut server_side = next(&mut incoming).await;
        let mut buf = [0u8; 64];
        // A few bytes are not the preface: the deadline still holds.
        silent.write_all(b"PRI * HTTP").await.unwrap();
        let read = server_side.read(&mut buf).await.unwrap();
        assert_eq!(read, 10);
        let err = tokio::time::timeout(PREFACE_DEADLINE * 2, server_side.read(&mut buf))
            .await
            .expect("closed at the deadline, not left waiting")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let mut speaking = TcpStream::connect(addr).await.unwrap();
        let mut server_side = next(&mut incoming).await;
        speaking.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let mut got = 0;
        while got < PREFACE_BYTES {
            got += server_side.read(&mut buf).await.unwrap();
        }
        // Past the preface, an idle connection is HTTP/2's to judge (keepalive), not cut here.
        let idle = tokio::time::timeout(PREFACE_DEADLINE * 2, server_side.read(&mut buf)).await;
        assert!(idle.is_err(), "still open and waiting: {idle:?}");
    }
}
