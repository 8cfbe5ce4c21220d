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

/// What replaces hyper's own answers to a request head it cannot take: a
/// target over 65534 bytes (414), more than 100 headers or a head over its
/// buffer (431). hyper writes those itself, with an empty body and no way
/// to change it, so they are recognised as they are written.
static URI_TOO_LONG: LazyLock<Vec<u8>> =
    LazyLock::new(|| raw_error_response(ErrorCode::UriTooLong, &[]));
static HEADERS_TOO_LARGE: LazyLock<Vec<u8>> =
    LazyLock::new(|| raw_error_response(ErrorCode::HeadersTooLarge, &[]));

/// Our JSON answer in place of `head`, if `head` is one of hyper's bodiless
/// automatic 414/431 answers (ours always have a body).
fn replacement_for(head: &[u8]) -> Option<&'static [u8]> {
    let rest = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let answer: &[u8] = match rest.get(..4)? {
        b"414 " => &URI_TOO_LONG,
        b"431 " => &HEADERS_TOO_LARGE,
        _ => return None,
    };
    let bodiless = head
        .windows(b"\r\ncontent-length: 0\r\n".len())
        .any(|w| w == b"\r\ncontent-length: 0\r\n");
    (bodiless && head.ends_with(b"\r\n\r\n")).then_some(answer)
}

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

    /// Writes our JSON answer instead of hyper's bodiless 414/431 `head`
    /// and tells hyper its bytes went out; hyper closes the connection next.
    /// `None` when `head` is anything else, or the socket cannot take ours
    /// in one go (then hyper's own answer is sent).
    fn substitute(&mut self, head: &[u8]) -> Option<Poll<io::Result<usize>>> {
        self.conn.as_ref()?;
        let answer = replacement_for(head)?;
        match self.stream.try_write(answer) {
            Ok(n) if n == answer.len() => Some(Poll::Ready(Ok(head.len()))),
            // Part of ours is out: sending hyper's would garble both.
            Ok(_) => Some(Poll::Ready(Err(io::ErrorKind::WriteZero.into()))),
            Err(_) => None,
        }
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
        if let Some(done) = this.substitute(buf) {
            return done;
        }
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.on_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // hyper's automatic answer is a head alone, in one buffer.
        if let [head] = bufs {
            if let Some(done) = this.substitute(head) {
                return done;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::replacement_for;

    #[test]
    fn only_hypers_bodiless_414_and_431_are_replaced() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
            content-length: 0\r\ndate: Fri, 04 Dec 2026 17:00:00 GMT\r\n\r\n";
        let ours = replacement_for(hyper_431).expect("replaced");
        let text = std::str::from_utf8(ours).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        assert!(text.contains("\"error\":\"headers_too_large\""), "{text}");
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n";
        assert!(std::str::from_utf8(replacement_for(hyper_414).unwrap())
            .unwrap()
            .contains("\"error\":\"uri_too_long\""));
        // A handler's answer (it has a body), another status, a fragment.
        for other in [
            &b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 80\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n",
            b"{\"error\":\"x\"}",
        ] {
            assert!(replacement_for(other).is_none(), "{other:?}");
        }
    }
}
