//! The answer's event stream read straight off the response body, by the
//! WHATWG EventSource rules for what an answer uses: lines end at LF, CRLF
//! or a lone CR; `data:` fields gather (joined by LF) until a blank line
//! hands the event on; comments and the `event`, `id` and `retry` fields are
//! read and ignored; an event unfinished when the body ends is dropped.
//!
//! Our own reader rather than reqwest-eventsource: that one builds every
//! event field by field through a parser-combinator library and a chain of
//! stream adapters, and at hundreds of concurrent answers it was about 7% of
//! the gateway's CPU. This one scans each chunk for line ends and copies a
//! token's bytes once, into a buffer it keeps and lends out (an event's data
//! is a `&str` valid until the next call, not a fresh `String` per token:
//! two allocations per token fewer). It also keeps memory bounded: a line or
//! an event may hold at most [`MAX_EVENT_BYTES`], however long the upstream
//! goes on, and a buffer a long event grew is let go once that event is read.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// The most one event's data (or one line) may hold; an upstream that sends
/// more without a line end or blank line is broken or hostile.
pub(super) const MAX_EVENT_BYTES: usize = 1 << 20;

/// The most the event buffer keeps between events: tokens need a few hundred
/// bytes; a rare long event's megabyte is not held for the rest of the answer.
const KEPT_EVENT_BYTES: usize = 16 << 10;

/// Why an event stream could not be read further.
#[derive(Debug)]
pub(super) enum SseError {
    /// The body could not be read (the connection was cut, or timed out).
    Transport(reqwest::Error),
    /// An event's data is not UTF-8.
    Utf8,
    /// A line or an event longer than [`MAX_EVENT_BYTES`].
    TooLong,
}

/// The events of a body whose chunks come from `S`.
pub(super) struct EventReader<S> {
    body: S,
    /// The chunk being read, and how far.
    chunk: Bytes,
    at: usize,
    /// The start of a line whose end is in a later chunk.
    partial: Vec<u8>,
    /// The data of the event being gathered, each field followed by LF;
    /// once handed on, that event's data (lent until the next call).
    data: Vec<u8>,
    /// `data` holds the event last handed on: it goes before the next one.
    handed_on: bool,
    /// Whether the event has a `data` field yet (even an empty one).
    has_data: bool,
    /// The last line ended with CR: an LF first thing now is its CRLF.
    after_cr: bool,
    /// Nothing read yet: a byte order mark may open the stream.
    at_start: bool,
}

impl<S, E> EventReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<SseError>,
{
    pub(super) fn new(body: S) -> Self {
        Self {
            body,
            chunk: Bytes::new(),
            at: 0,
            partial: Vec::new(),
            data: Vec::new(),
            handed_on: false,
            has_data: false,
            after_cr: false,
            at_start: true,
        }
    }

    /// The data of the next event, lent until the next call; `None` when
    /// the body has ended. Cancel-safe: what was read stays in the reader.
    pub(super) async fn next_event(&mut self) -> Option<Result<&str, SseError>> {
        if std::mem::take(&mut self.handed_on) {
            self.forget_event();
        }
        loop {
            match self.next_in_chunk() {
                Some(Ok(())) => break,
                Some(Err(e)) => return Some(Err(e)),
                None => {}
            }
            // Read to its end: let it go before the next read, so the
            // connection may reuse its buffer instead of allocating another
            // for each chunk (8 KiB per token while we held on to it).
            self.chunk = Bytes::new();
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Some(Err(e)) => return Some(Err(e.into())),
                // Whatever was not ended by a blank line is no event.
                None => return None,
            }
        }
        self.handed_on = true;
        Some(std::str::from_utf8(&self.data).map_err(|_| SseError::Utf8))
    }

    /// Empties the buffer of the event handed on, keeping its room unless a
    /// long event grew it beyond [`KEPT_EVENT_BYTES`].
    fn forget_event(&mut self) {
        if self.data.capacity() > KEPT_EVENT_BYTES {
            self.data = Vec::new();
        } else {
            self.data.clear();
        }
    }

    /// Whether an event ends in what is left of the current chunk (its data
    /// then in `data`).
    fn next_in_chunk(&mut self) -> Option<Result<(), SseError>> {
        while self.at < self.chunk.len() {
            let rest = &self.chunk[self.at..];
            if std::mem::take(&mut self.after_cr) && rest[0] == b'\n' {
                self.at += 1;
                continue;
            }
            let Some(end) = memchr::memchr2(b'\n', b'\r', rest) else {
                if self.partial.len() + rest.len() > MAX_EVENT_BYTES {
                    return Some(Err(SseError::TooLong));
                }
                self.partial.extend_from_slice(rest);
                self.at = self.chunk.len();
                return None;
            };
            self.after_cr = rest[end] == b'\r';
            let line_in_chunk = self.at..self.at + end;
            self.at += end + 1;
            let event = if self.partial.is_empty() {
                // Taken out for the call (no copy, no reference count).
                let chunk = std::mem::take(&mut self.chunk);
                let event = self.line(&chunk[line_in_chunk]);
                self.chunk = chunk;
                event
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&self.chunk[line_in_chunk]);
                let event = self.line(&line);
                line.clear();
                self.partial = line;
                event
            };
            if event.is_some() {
                return event;
            }
        }
        None
    }

    /// Takes in one whole line (without its end); a blank one hands on the
    /// event gathered so far, if it has data.
    fn line(&mut self, line: &[u8]) -> Option<Result<(), SseError>> {
        let line = if std::mem::take(&mut self.at_start) {
            line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line)
        } else {
            line
        };
        if line.is_empty() {
            return self.dispatch();
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        if field == b"data" {
            if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
                return Some(Err(SseError::TooLong));
            }
            self.data.extend_from_slice(value);
            self.data.push(b'\n');
            self.has_data = true;
        }
        None
    }

    /// Whether the event gathered so far has data and so is handed on (its
    /// last field's LF dropped); the next one starts empty.
    fn dispatch(&mut self) -> Option<Result<(), SseError>> {
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        self.data.pop();
        Some(Ok(()))
    }
}

impl From<reqwest::Error> for SseError {
    fn from(e: reqwest::Error) -> Self {
        SseError::Transport(e)
    }
}

/// `body` as a response body cut at `cuts` (each taken modulo the body's
/// length + 1) would arrive: the chunks between the cut points, in order.
#[cfg(test)]
pub(super) fn cut_body(
    body: &[u8],
    cuts: &[usize],
) -> EventReader<futures_util::stream::Iter<std::vec::IntoIter<Result<Bytes, SseError>>>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.extend([0, body.len()]);
    points.sort_unstable();
    points.dedup();
    let pieces: Vec<Result<Bytes, SseError>> = points
        .windows(2)
        .map(|w| Ok(Bytes::copy_from_slice(&body[w[0]..w[1]])))
        .collect();
    EventReader::new(futures_util::stream::iter(pieces))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of `body` read in pieces cut at `cuts`.
    fn events(body: &[u8], cuts: &[usize]) -> (Vec<String>, Option<String>) {
        let mut reader = cut_body(body, cuts);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut got = Vec::new();
            while let Some(event) = reader.next_event().await {
                match event {
                    Ok(data) => got.push(data.to_owned()),
                    Err(e) => return (got, Some(format!("{e:?}"))),
                }
            }
            (got, None)
        })
    }

    #[test]
    fn fields_lines_and_comments_as_the_standard_reads_them() {
        let body = "\u{feff}: a comment\ndata: one\n\nevent: x\nid: 7\nretry: 10\ndata:two\ndata:  three\n\n\
                    data\n\ndata: four\r\n\r\ndata: five\r\rdata: cut off at the end\n";
        let want = ["one", "two\n three", "", "four", "five"];
        assert_eq!(
            events(body.as_bytes(), &[]),
            (want.map(String::from).to_vec(), None)
        );
        for cut in 0..body.len() {
            let got = events(body.as_bytes(), &[cut, cut * 7 + 3]);
            assert_eq!(got, (want.map(String::from).to_vec(), None), "cut at {cut}");
        }
    }

    #[test]
    fn a_blank_line_without_data_hands_on_nothing() {
        assert_eq!(
            events(b"\n\n: keep-alive\n\nevent: ping\n\n", &[]),
            (vec![], None)
        );
    }

    #[test]
    fn a_line_or_an_event_beyond_the_limit_ends_the_stream() {
        let long_line = vec![b'a'; MAX_EVENT_BYTES + 1];
        let (got, end) = events(&long_line, &[1000, 70_000]);
        assert_eq!((got, end.as_deref()), (vec![], Some("TooLong")));
        let mut long_event = Vec::new();
        // Lines each under the limit; their data (17 of every 23 bytes) over it.
        while long_event.len() <= 2 * MAX_EVENT_BYTES {
            long_event.extend_from_slice(b"data: 0123456789abcdef\n");
        }
        let (_, end) = events(&long_event, &[]);
        assert_eq!(end.as_deref(), Some("TooLong"));
    }

    #[test]
    fn a_long_event_does_not_keep_its_buffer() {
        let long = "x".repeat(2 * KEPT_EVENT_BYTES);
        let body = format!("data: {long}\n\ndata: short\n\n");
        let mut reader = cut_body(body.as_bytes(), &[100]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            assert_eq!(reader.next_event().await.unwrap().unwrap(), long);
            assert_eq!(reader.next_event().await.unwrap().unwrap(), "short");
        });
        assert!(reader.data.capacity() <= KEPT_EVENT_BYTES);
    }

    #[test]
    fn data_that_is_not_utf8_is_an_error() {
        let (got, end) = events(b"data: ok\n\ndata: \xff\xfe\n\n", &[3]);
        assert_eq!((got, end.as_deref()), (vec!["ok".to_owned()], Some("Utf8")));
    }
}
