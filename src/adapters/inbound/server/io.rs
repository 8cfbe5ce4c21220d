//! A client socket that enforces its connection's deadline: when neither a
//! read nor a write can make progress past it, the socket fails, which ends
//! the HTTP connection. A client that began a request gets a 408 first.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::raw_error_response;
use super::registry::{Connection, OpenSlot};
use crate::adapters::inbound::errors::ErrorCode;

/// Sent to a client whose request head did not arrive in time.
static TIMEOUT_RESPONSE: LazyLock<Vec<u8>> =
    LazyLock::new(|| raw_error_response(ErrorCode::RequestTimeout, &[]));

/// The socket hyper reads and writes, and (after an upgrade) the WebSocket.
pub struct ClientIo {
    stream: TcpStream,
    /// The connection's state while it speaks HTTP.
    conn: Option<Arc<Connection>>,
    /// Once upgraded, only its place among the open connections is kept:
    /// a WebSocket lives long, and every byte per socket counts.
    slot: Option<OpenSlot>,
    /// Armed while the connection's phase has a deadline; dropped otherwise,
    /// so an upgraded socket carries no timer.
    timer: Option<Pin<Box<Sleep>>>,
    /// The last write could not complete: hyper still holds bytes, so a 408
    /// written now would cut into them.
    write_blocked: bool,
    /// The deadline passed: every further poll fails, and nothing more is written.
    expired: bool,
}

impl ClientIo {
    pub fn new(stream: TcpStream, conn: Arc<Connection>) -> Self {
        Self {
            stream,
            conn: Some(conn),
            slot: None,
            timer: None,
            write_blocked: false,
            expired: false,
        }
    }

    /// Called when the socket cannot make progress: `Ready` with an error
    /// once the connection's deadline has passed, `Pending` (with a wake-up
    /// at the deadline) before it.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.expired {
            return Poll::Ready(deadline_passed());
        }
        let Some(conn) = &self.conn else {
            return Poll::Pending;
        };
        let Some(deadline) = conn.deadline() else {
            self.timer = None;
            if conn.is_upgraded() {
                self.slot = conn.into_open_slot();
                self.conn = None;
            }
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.timer = None;
        self.expired = true;
        if conn.owes_timeout_response() && !self.write_blocked {
            // Best effort: the socket's buffer is empty unless the client
            // stopped reading, and then it does not want an answer.
            let _ = self.stream.try_write(&TIMEOUT_RESPONSE);
        }
        tracing::debug!(
            idle = conn.is_idle(),
            "closing a client connection past its deadline"
        );
        Poll::Ready(deadline_passed())
    }

    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => {
                self.write_blocked = true;
                self.poll_deadline(cx).map(Err)
            }
            ready => {
                self.write_blocked = false;
                ready
            }
        }
    }
}

fn deadline_passed() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "client connection deadline passed")
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(conn) = this.conn.as_ref().filter(|_| buf.filled().len() > before) {
                    conn.bytes_received();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_deadline(cx).map(Err),
        }
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.on_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.on_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.on_write(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.on_write(cx, polled)
    }
}
