//! The WebSocket transport every kind of socket shares: socket limits, the one
//! writer task per connection, pings, close codes and slow-reader handling.
//! It knows frames, not the JSON protocol spoken over them.

use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use poem::web::websocket::{CloseCode, Message, WebSocketConfig, WebSocketStream};

use crate::adapters::inbound::errors::ErrorCode;
use crate::adapters::inbound::MAX_FRAME_BYTES;
use crate::adapters::queue;

/// Initial read buffer of a connection, in bytes.
pub const READ_BUFFER: usize = 256;

/// Frames queued for one client before senders wait.
pub const OUTBOUND_QUEUE: usize = 64;
/// At most this many conversation frames that are ready at once go out in
/// one write. One token at a time is the common case and leaves at once;
/// under load several are ready, and one `send` system call for all of them
/// (instead of one each) is what keeps a saturated box from falling further
/// behind: the per-frame system call was a third of the gateway's CPU.
const MAX_BATCH: usize = 32;
/// Bytes tungstenite may hold before it writes without being flushed; frames
/// of one batch collect up to this, then the batch's flush writes them.
const WRITE_BUFFER: usize = 16 * 1024;
/// A client that does not take a single frame for this long is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Socket limits. The read buffer is what an idle connection mostly costs:
/// tungstenite reserves it up front (128 KiB by default) and grows it for a
/// bigger frame, so a small one keeps ten thousand idle connections cheap
/// (measured: 512 B -> 256 B saved 0.3 KiB per idle connection); a longer chat
/// message simply takes a few reads. The write buffer is not reserved up
/// front: it is the target size before tungstenite writes unflushed frames.
pub fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(4 * MAX_FRAME_BYTES)
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .max_message_size(Some(MAX_FRAME_BYTES))
}

/// Why the server closes a connection, with the close code the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// 1001: the server is stopping; reconnect (to another instance) and resume.
    ShuttingDown,
    /// 1001: the client stopped answering pings.
    PingTimeout,
    /// 1009: a frame or message over the size limit.
    TooBig,
    /// 1007: a text frame (or message) that is not valid UTF-8 (RFC 6455 §8.1).
    InvalidUtf8,
    /// 1002: a frame that breaks RFC 6455 (unmasked, reserved opcode or RSV
    /// bits, a fragmented or oversized control frame, a stray continuation).
    ProtocolViolation,
    /// 4008: this connection fell further behind the conversation than its
    /// buffer allows; reconnect with `lastSeq` to catch up from the log.
    FellBehind,
    /// 4004: the session no longer exists in the store (expired, or the store
    /// lost its data); reconnect without `sessionId` for a fresh one.
    SessionLost,
    /// 4503: the conversation store stopped delivering this session's events
    /// (Redis went away); reconnect with `sessionId` and `lastSeq`, backing
    /// off while the upgrade answers 503.
    StoreUnavailable,
    /// 4001 `token_expired`: the token the socket was opened with expired and
    /// no `auth` message brought a fresh one; refresh, then reconnect.
    TokenExpired,
    /// 4001 `token_revoked`: the socket's token was revoked (logout,
    /// logout-all); log in again.
    TokenRevoked,
    /// 4001 `invalid_token`: the account was deactivated or deleted while
    /// the agent socket was open.
    TokenInvalid,
    /// 4003 `agent_only`: the agent socket's user is no longer an agent
    /// (demoted while connected); their conversations went back to the queue.
    NotAnAgent,
}

impl CloseReason {
    /// Every reason, as `/api/websocket/info` lists them.
    pub const ALL: &'static [CloseReason] = &[
        CloseReason::ShuttingDown,
        CloseReason::PingTimeout,
        CloseReason::TooBig,
        CloseReason::InvalidUtf8,
        CloseReason::ProtocolViolation,
        CloseReason::FellBehind,
        CloseReason::SessionLost,
        CloseReason::StoreUnavailable,
        CloseReason::TokenExpired,
        CloseReason::TokenRevoked,
        CloseReason::TokenInvalid,
        CloseReason::NotAnAgent,
    ];

    pub fn code(self) -> CloseCode {
        match self {
            CloseReason::ShuttingDown | CloseReason::PingTimeout => CloseCode::Away,
            CloseReason::TooBig => CloseCode::Size,
            CloseReason::InvalidUtf8 => CloseCode::Invalid,
            CloseReason::ProtocolViolation => CloseCode::Protocol,
            CloseReason::FellBehind => CloseCode::Reserved(4008),
            CloseReason::SessionLost => CloseCode::Reserved(4004),
            CloseReason::StoreUnavailable => CloseCode::Reserved(4503),
            CloseReason::TokenExpired | CloseReason::TokenRevoked | CloseReason::TokenInvalid => {
                CloseCode::Reserved(4001)
            }
            CloseReason::NotAnAgent => CloseCode::Reserved(4003),
        }
    }

    /// The reason as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::ShuttingDown => ErrorCode::ShuttingDown.as_str(),
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::TooBig => "too_big",
            CloseReason::InvalidUtf8 => "invalid_utf8",
            CloseReason::ProtocolViolation => "protocol_violation",
            CloseReason::FellBehind => "fell_behind",
            CloseReason::SessionLost => "session_lost",
            CloseReason::StoreUnavailable => ErrorCode::SessionStoreUnavailable.as_str(),
            CloseReason::TokenExpired => ErrorCode::TokenExpired.as_str(),
            CloseReason::TokenRevoked => ErrorCode::TokenRevoked.as_str(),
            CloseReason::TokenInvalid => ErrorCode::InvalidToken.as_str(),
            CloseReason::NotAnAgent => ErrorCode::AgentOnly.as_str(),
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            CloseReason::ShuttingDown => "server shutting down",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::TooBig => "message too big",
            CloseReason::InvalidUtf8 => "invalid UTF-8 in a text frame",
            CloseReason::ProtocolViolation => "protocol violation",
            CloseReason::FellBehind => "fell behind; reconnect with lastSeq",
            CloseReason::SessionLost => "session lost; reconnect for a new session",
            CloseReason::StoreUnavailable => {
                "session store unavailable; reconnect with lastSeq shortly"
            }
            // The close reason is the error code, so clients can switch on it.
            CloseReason::TokenExpired => ErrorCode::TokenExpired.as_str(),
            CloseReason::TokenRevoked => ErrorCode::TokenRevoked.as_str(),
            CloseReason::TokenInvalid => ErrorCode::InvalidToken.as_str(),
            CloseReason::NotAnAgent => ErrorCode::AgentOnly.as_str(),
        }
    }
}

/// What the writer task is asked to send. Messages are queued already
/// serialised: tokio's channel allocates its slots 32 at a time, and 24-byte
/// strings instead of large enums save kilobytes on every idle connection.
#[derive(Debug)]
pub enum Outbound {
    Message(String),
    Ping,
    /// Send a close frame and stop writing.
    Close(CloseReason),
}

/// What a connection's feed hands the writer: a text frame, or the reason it
/// must close (it fell behind, lost its subscription).
#[derive(Debug)]
pub enum FeedFrame {
    Text(String),
    Close(CloseReason),
}

/// A source of frames the writer pulls from besides its queue (the
/// conversation's events). Pulling, rather than a task pushing into the queue,
/// saves every connection a task and a hop per token.
pub trait FrameFeed: Send {
    /// The next frame. MUST be cancel-safe: the writer drops this future
    /// whenever its queue has something first.
    fn next_frame(&mut self) -> impl std::future::Future<Output = FeedFrame> + Send;
}

/// The only place that writes to the socket: replies and pings from `queue`,
/// and the feed's frames as they come. Returns, whatever made it stop, the
/// close reason it sent, if any; the read loop watches this task's handle to
/// learn that the client is gone.
///
/// There is one `send` await in here, boxed, on purpose: this future lives as
/// long as the connection, and a send future held in place (a batch, its
/// timeout's timer) would add to what every idle socket costs; one small
/// allocation per write is cheaper than that.
#[allow(clippy::manual_async_fn)] // an `async fn` keeps its arguments twice
pub fn write_loop<F: FrameFeed>(
    mut sink: SplitSink<WebSocketStream, Message>,
    mut queue: queue::Receiver<Outbound>,
    mut feed: F,
) -> impl std::future::Future<Output = Option<CloseReason>> + Send {
    // Not an `async fn`, which would keep its arguments twice (as passed and
    // moved into its body) for the connection's life: the block uses them in
    // place.
    async move {
        let mut closing: Option<CloseReason> = None;
        let closed = loop {
            // Only a conversation frame starts a batch: a reply or ping from the
            // queue goes out alone, ahead of the feed, as it always did.
            let (item, batch) = match closing {
                Some(reason) => (flushed_before(&mut feed, reason), false),
                None => tokio::select! {
                    biased;
                    // Polled in place: `pop`'s own future would keep a
                    // second reference in every idle socket's writer.
                    item = std::future::poll_fn(|cx| queue.poll_pop(cx)) => match item {
                        Some(Outbound::Close(reason)) => {
                            closing = Some(reason);
                            continue;
                        }
                        Some(item) => (item, false),
                        None => break None,
                    },
                    // The feed's queue is outside tokio's cooperative budget,
                    // but a batch's `send` yields first, so a feed that is
                    // always ready still lets the other tasks run. Nothing is
                    // awaited here: what a select arm awaits, the select's
                    // output sits beside in every idle socket's future.
                    frame = feed.next_frame() => match frame {
                        FeedFrame::Text(json) => (Outbound::Message(json), true),
                        FeedFrame::Close(reason) => (Outbound::Close(reason), false),
                    },
                },
            };
            let close = match &item {
                Outbound::Close(reason) => Some(*reason),
                _ => None,
            };
            let more = batch.then_some(Batch {
                feed: &mut feed,
                queue: &queue,
                closing: &mut closing,
            });
            if Box::pin(send(&mut sink, item, more)).await.is_err() || close.is_some() {
                break close;
            }
        };
        // Boxed: needed once, at the end, and not worth a place in every idle socket.
        let _ = Box::pin(tokio::time::timeout(Duration::from_secs(1), sink.close())).await;
        closed
    }
}

/// While closing: what the feed already holds goes out before the close.
fn flushed_before<F: FrameFeed>(feed: &mut F, reason: CloseReason) -> Outbound {
    use futures_util::FutureExt as _;
    match feed.next_frame().now_or_never() {
        Some(FeedFrame::Text(json)) => Outbound::Message(json),
        _ => Outbound::Close(reason),
    }
}

/// Where a batch of conversation frames comes from, and what stops it.
struct Batch<'a, F> {
    feed: &'a mut F,
    /// A reply waiting here ends the batch, so it is not overtaken.
    queue: &'a queue::Receiver<Outbound>,
    /// Set when the feed asks for a close on the way.
    closing: &'a mut Option<CloseReason>,
}

impl<F: FrameFeed> Batch<'_, F> {
    /// The next conversation frame that is ready right now, if it may join.
    fn next_ready(&mut self) -> Option<String> {
        use futures_util::FutureExt as _;
        if !self.queue.is_empty() {
            return None;
        }
        // Cancel-safe (FrameFeed's contract), and the writer's next poll of
        // the feed registers its waker again.
        match self.feed.next_frame().now_or_never()? {
            FeedFrame::Text(json) => Some(json),
            FeedFrame::Close(reason) => {
                *self.closing = Some(reason);
                None
            }
        }
    }
}

/// One frame and, when `more` is given, the conversation frames that are
/// ready right now (up to [`MAX_BATCH`]), flushed together within
/// [`WRITE_TIMEOUT`].
async fn send<F: FrameFeed>(
    sink: &mut SplitSink<WebSocketStream, Message>,
    item: Outbound,
    mut more: Option<Batch<'_, F>>,
) -> Result<(), ()> {
    let frame = match item {
        Outbound::Message(json) => Message::Text(json),
        Outbound::Ping => Message::Ping(Vec::new()),
        Outbound::Close(reason) => Message::close_with(reason.code(), reason.text()),
    };
    if more.is_some() {
        // One turn of the scheduler first: when the box is busy, generations
        // add more tokens meanwhile and they share this write (measured at
        // 1000 concurrent chats on two cores: p99 2.1 s -> 0.2 s, because
        // every write costs the client a read and a wake-up too); when it is
        // idle the turn costs microseconds. Outside the timeout, so the turn
        // never arms a timer.
        tokio::task::yield_now().await;
    }
    let batch = async {
        sink.feed(frame).await?;
        if let Some(more) = more.as_mut() {
            for _ in 1..MAX_BATCH {
                let Some(json) = more.next_ready() else { break };
                sink.feed(Message::Text(json)).await?;
            }
        }
        sink.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, batch).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "websocket write failed");
            Err(())
        }
        Err(_) => {
            tracing::info!("client stopped reading for {WRITE_TIMEOUT:?}; dropping it");
            Err(())
        }
    }
}

/// The close a failed read calls for, if the client is still there to be
/// told: 1009 for a frame over the size limit, 1007 for a text frame that is
/// not UTF-8, 1002 for a frame that breaks the protocol. `None` for a
/// connection that is simply gone (reset, closed without a close frame).
///
/// poem passes tungstenite's errors on only as the text of an `io::Error`
/// (`io::Error::other(error.to_string())`; I/O errors themselves unchanged),
/// so the text is all there is to tell them by. A unit test below pins each
/// text to tungstenite's error, so an upgrade that rewords one fails there.
pub fn close_for_read_error(e: &std::io::Error) -> Option<CloseReason> {
    let text = e.to_string();
    if text.starts_with("Space limit exceeded") {
        Some(CloseReason::TooBig)
    } else if text.starts_with("UTF-8 encoding error") {
        Some(CloseReason::InvalidUtf8)
    } else if text.starts_with("WebSocket protocol error") {
        // The peer went away, or already closed: nobody left to tell.
        let gone = text.contains("Connection reset without closing handshake")
            || text.contains("after having closed")
            || text.contains("after closing");
        (!gone).then_some(CloseReason::ProtocolViolation)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error, ProtocolError};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    /// What poem's stream hands the read loop for a tungstenite error.
    fn as_poem_gives_it(error: Error) -> std::io::Error {
        match error {
            Error::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        }
    }

    #[test]
    fn read_errors_map_to_the_close_codes_rfc_6455_asks_for() {
        let too_big = Error::Capacity(CapacityError::MessageTooLong {
            size: 70_000,
            max_size: 65_536,
        });
        let invalid_utf8 = Error::Utf8("invalid utf-8 sequence".into());
        let cases = [
            (too_big, Some(CloseReason::TooBig)),
            (invalid_utf8, Some(CloseReason::InvalidUtf8)),
            (
                Error::Protocol(ProtocolError::UnmaskedFrameFromClient),
                Some(CloseReason::ProtocolViolation),
            ),
            (
                Error::Protocol(ProtocolError::NonZeroReservedBits),
                Some(CloseReason::ProtocolViolation),
            ),
            (
                Error::Protocol(ProtocolError::UnknownDataFrameType(3)),
                Some(CloseReason::ProtocolViolation),
            ),
            (
                Error::Protocol(ProtocolError::UnknownControlFrameType(11)),
                Some(CloseReason::ProtocolViolation),
            ),
            (
                Error::Protocol(ProtocolError::FragmentedControlFrame),
                Some(CloseReason::ProtocolViolation),
            ),
            (
                Error::Protocol(ProtocolError::UnexpectedContinueFrame),
                Some(CloseReason::ProtocolViolation),
            ),
            (
                Error::Protocol(ProtocolError::ExpectedFragment(Data::Text)),
                Some(CloseReason::ProtocolViolation),
            ),
            (
                Error::Protocol(ProtocolError::InvalidOpcode(u8::from(OpCode::from(3)))),
                Some(CloseReason::ProtocolViolation),
            ),
            (
                Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
                None,
            ),
            (
                Error::Protocol(ProtocolError::InvalidCloseSequence),
                Some(CloseReason::ProtocolViolation),
            ),
            (Error::Protocol(ProtocolError::ReceivedAfterClosing), None),
            (Error::ConnectionClosed, None),
            (Error::AlreadyClosed, None),
            (Error::Io(std::io::ErrorKind::ConnectionReset.into()), None),
        ];
        for (error, expected) in cases {
            let shown = error.to_string();
            assert_eq!(
                close_for_read_error(&as_poem_gives_it(error)),
                expected,
                "{shown}"
            );
        }
    }

    #[test]
    fn close_codes_are_the_rfc_ones() {
        let code = |r: CloseReason| u16::from(r.code());
        assert_eq!(code(CloseReason::InvalidUtf8), 1007);
        assert_eq!(code(CloseReason::ProtocolViolation), 1002);
        assert_eq!(code(CloseReason::TooBig), 1009);
    }
}
