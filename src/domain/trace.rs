//! Correlation: the request id that ties a request's or connection's log
//! lines together, and the W3C trace context (`traceparent`) that ties this
//! server's upstream AI requests to the caller's trace.

use thiserror::Error;

/// Longest `X-Request-Id` taken from a client; longer ones are replaced.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// Why a client's `X-Request-Id` was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RequestIdError {
    #[error("request id is empty")]
    Empty,
    #[error("request id is longer than {MAX_REQUEST_ID_CHARS} characters")]
    TooLong,
    /// Only ASCII letters, digits and `-_.:/+=@` are kept: the id goes into
    /// logs and response headers, where anything else could forge or break a line.
    #[error("request id has a character outside [A-Za-z0-9-_.:/+=@]")]
    BadCharacter,
}

/// The id of one HTTP request or WebSocket connection: the client's own
/// `X-Request-Id` when it is safe to repeat, otherwise a fresh one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Box<str>);

impl RequestId {
    /// A client-supplied id, if it is bounded and made of safe characters.
    ///
    /// # Errors
    /// [`RequestIdError`] says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, RequestIdError> {
        if text.is_empty() {
            return Err(RequestIdError::Empty);
        }
        if text.len() > MAX_REQUEST_ID_CHARS {
            return Err(RequestIdError::TooLong);
        }
        let safe = |c: char| c.is_ascii_alphanumeric() || "-_.:/+=@".contains(c);
        if !text.chars().all(safe) {
            return Err(RequestIdError::BadCharacter);
        }
        Ok(Self(text.into()))
    }

    /// A new random id (32 hex digits).
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string().into())
    }

    /// The client's id when it is acceptable, else a new one.
    pub fn from_header(value: Option<&str>) -> Self {
        value
            .and_then(|v| Self::parse(v.trim()).ok())
            .unwrap_or_else(Self::generate)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `tracing` target of spans made for traces only (OpenTelemetry
/// export): the log layers never see them, and the trace layer sees only
/// them (plus events), so a span made for log context is never exported and
/// a span made for a trace never lengthens a log line. Without export, no
/// layer wants them and creating one costs a callsite check.
pub const TRACE_TARGET: &str = "chatbot_server::traces";

/// Why a `traceparent` header was not taken (it is then ignored, as the W3C
/// spec asks, and a new trace starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("traceparent is not version-00 W3C trace context")]
pub struct TraceParentError;

/// A W3C trace context: the trace this work belongs to, the span that asked
/// for it, and the sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`). An
    /// all-zero trace or parent id, upper-case hex or version `ff` is
    /// invalid; a later version is read by its first four fields.
    ///
    /// # Errors
    /// [`TraceParentError`] for anything else.
    pub fn parse(header: &str) -> Result<Self, TraceParentError> {
        let header = header.trim();
        let mut parts = header.splitn(5, '-');
        let (Some(version), Some(trace), Some(parent), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TraceParentError);
        };
        let rest = parts.next();
        let version = hex_bytes::<1>(version).ok_or(TraceParentError)?[0];
        // Version 00 has exactly four fields; later versions may append more.
        if version == 0xff || (version == 0 && rest.is_some()) {
            return Err(TraceParentError);
        }
        let trace_id = hex_bytes::<16>(trace).ok_or(TraceParentError)?;
        let parent_id = hex_bytes::<8>(parent).ok_or(TraceParentError)?;
        let flags = hex_bytes::<1>(flags).ok_or(TraceParentError)?[0];
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return Err(TraceParentError);
        }
        Ok(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The start of a new trace (sampled), for work no caller traced.
    pub fn new_root() -> Self {
        Self {
            trace_id: random_nonzero(),
            parent_id: random_nonzero(),
            flags: 0x01,
        }
    }

    /// A context in the same trace whose parent is a new span of ours: what
    /// one outgoing request carries.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            parent_id: random_nonzero(),
            flags: self.flags,
        }
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The parts as bytes: trace id, parent span id, flags (for a tracer
    /// that continues this trace).
    pub fn parts(&self) -> ([u8; 16], [u8; 8], u8) {
        (self.trace_id, self.parent_id, self.flags)
    }

    /// A context from a tracer's own parts; `None` for an all-zero id.
    pub fn from_parts(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Option<Self> {
        (trace_id != [0; 16] && parent_id != [0; 8]).then_some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The `traceparent` header value.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

/// `N` bytes from exactly `2N` lower-case hex digits.
fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Random bytes that are not all zero (an all-zero id is invalid).
fn random_nonzero<const N: usize>() -> [u8; N] {
    loop {
        let mut out = [0u8; N];
        out.iter_mut().for_each(|b| *b = fastrand::u8(..));
        if out != [0; N] {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let t = TraceContext::parse(SAMPLE).unwrap();
        assert_eq!(t.header(), SAMPLE);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_parent() {
        let t = TraceContext::parse(SAMPLE).unwrap();
        let c = t.child();
        assert_eq!(c.trace_id(), t.trace_id());
        assert_ne!(c.header(), t.header());
        assert!(TraceContext::parse(&c.header()).is_ok());
        let root = TraceContext::new_root();
        assert!(TraceContext::parse(&root.header()).is_ok());
    }

    #[test]
    fn parts_round_trip_and_zero_ids_are_refused() {
        let t = TraceContext::parse(SAMPLE).unwrap();
        let (trace, parent, flags) = t.parts();
        assert_eq!(TraceContext::from_parts(trace, parent, flags), Some(t));
        assert_eq!(TraceContext::from_parts([0; 16], parent, flags), None);
        assert_eq!(TraceContext::from_parts(trace, [0; 8], flags), None);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::parse(bad).is_err(), "{bad:?}");
        }
        // A later version may carry more fields.
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_ok()
        );
    }

    #[test]
    fn request_ids_are_bounded_and_safe() {
        assert_eq!(
            RequestId::parse("abc-123_x.y").unwrap().as_str(),
            "abc-123_x.y"
        );
        assert_eq!(RequestId::parse(""), Err(RequestIdError::Empty));
        assert_eq!(
            RequestId::parse(&"a".repeat(MAX_REQUEST_ID_CHARS + 1)),
            Err(RequestIdError::TooLong)
        );
        assert!(RequestId::parse(&"a".repeat(MAX_REQUEST_ID_CHARS)).is_ok());
        for bad in ["a b", "a\"b", "a\nb", "é", "a{b}", "a\\b"] {
            assert_eq!(
                RequestId::parse(bad),
                Err(RequestIdError::BadCharacter),
                "{bad:?}"
            );
        }
        let made = RequestId::from_header(Some("bad id"));
        assert_eq!(made.as_str().len(), 32);
        assert_eq!(RequestId::from_header(Some(" ok-1 ")).as_str(), "ok-1");
        assert_ne!(RequestId::generate(), RequestId::generate());
    }
}
