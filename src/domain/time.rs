//! The one timestamp format of the whole system: ISO-8601 UTC with milliseconds.
//!
//! Clients see it in every message, and both stores write it, so a timestamp
//! reads the same whether it came from the wire, SQLite or Redis.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use thiserror::Error;

/// Formats `2025-09-12T10:30:00.000Z`.
pub fn iso_millis(at: DateTime<Utc>) -> String {
    IsoMillis(at).to_string()
}

/// A time as RFC 3339 in UTC with milliseconds (what [`iso_millis`]
/// returns), written where it is displayed, with no string of its own:
/// every streamed token carries a timestamp, and a string per token was an
/// allocation per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoMillis(pub DateTime<Utc>);

impl fmt::Display for IsoMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use chrono::{Datelike as _, Timelike as _};
        let at = self.0;
        let nanos = at.nanosecond();
        // Four-digit years and no leap second: what chrono writes then is
        // fixed-width digits. The rest (never seen in practice) goes through
        // chrono itself.
        if !(0..=9999).contains(&at.year()) || nanos >= 1_000_000_000 {
            return f.write_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true));
        }
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            at.year(),
            at.month(),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            nanos / 1_000_000
        )
    }
}

/// Parses any RFC 3339 timestamp (the format above, and the offsets older
/// rows may carry) into UTC.
pub fn parse_iso(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The longest duration anything is configured with: 36500 days (100 years).
/// Longer is a typo or a unit mistake, and would overflow the clocks and
/// calendars it is added to (chrono's `DateTime` ends in the year 262143).
pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * 86_400);

/// [`MAX_DURATION`] as an operator writes it.
pub const MAX_DURATION_TEXT: &str = "36500d";

/// Parses `3600` (seconds), `500ms`, `30s`, `90m`, `24h`, `7d`: the forms the
/// Node server's `jsonwebtoken` accepted for `expiresIn` that people actually use.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => secs(1),
        "ms" => Some(Duration::from_millis(n)),
        "m" | "min" | "mins" | "minute" | "minutes" => secs(60),
        "h" | "hr" | "hrs" | "hour" | "hours" => secs(3600),
        "d" | "day" | "days" => secs(86_400),
        _ => None,
    }
}

/// Why a token lifetime was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "expected seconds or a number with s, m, h or d (e.g. 3600, 90m, 24h, 7d), \
     from 1s to 36500d"
)]
pub struct TokenLifetimeError;

/// How long an access token lives, kept with the text the operator wrote
/// (`24h`), because clients of the Node server read that text back as `expiresIn`.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenLifetime {
    text: String,
    duration: Duration,
}

impl TokenLifetime {
    /// At least one whole second: a token must outlive the response that
    /// carries it; at most [`MAX_DURATION`], so its `exp` stays a date.
    pub fn parse(text: &str) -> Result<Self, TokenLifetimeError> {
        let text = text.trim();
        let duration = parse_duration(text)
            .filter(|d| d.as_secs() >= 1 && *d <= MAX_DURATION)
            .ok_or(TokenLifetimeError)?;
        Ok(Self {
            text: text.to_owned(),
            duration,
        })
    }

    /// The lifetime as configured, e.g. `24h`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    pub fn seconds(&self) -> u64 {
        self.duration.as_secs()
    }
}

impl fmt::Debug for TokenLifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenLifetime({})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_have_millis_and_z_and_read_back() {
        let t = Utc.with_ymd_and_hms(2025, 9, 12, 10, 30, 0).unwrap();
        assert_eq!(iso_millis(t), "2025-09-12T10:30:00.000Z");
        assert_eq!(parse_iso("2025-09-12T10:30:00.000Z"), Some(t));
        assert_eq!(parse_iso("2025-09-12T12:30:00+02:00"), Some(t));
        assert_eq!(parse_iso("yesterday"), None);
    }

    /// What chrono writes for the format, which ours must equal.
    fn chrono_millis(at: DateTime<Utc>) -> String {
        at.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    #[test]
    fn iso_millis_is_what_chrono_writes() {
        let edges = [
            Utc.with_ymd_and_hms(2025, 9, 12, 10, 30, 0).unwrap(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()
                + chrono::Duration::milliseconds(999),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).unwrap(),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::nanoseconds(999_999),
            // A leap second, as chrono represents it.
            chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
                .and_then(|d| d.and_hms_milli_opt(23, 59, 59, 1_500))
                .unwrap()
                .and_utc(),
        ];
        for at in edges {
            assert_eq!(iso_millis(at), chrono_millis(at), "{at:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn iso_millis_is_what_chrono_writes_at_any_time(
            secs in DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp(),
            nanos in 0u32..1_000_000_000,
            recent in proptest::bool::ANY,
        ) {
            // Half of the cases in the years that are actually seen.
            let secs = if recent { secs.rem_euclid(4_102_444_800) } else { secs };
            if let Some(at) = DateTime::from_timestamp(secs, nanos) {
                proptest::prop_assert_eq!(iso_millis(at), chrono_millis(at));
            }
        }
    }

    #[test]
    fn duration_forms() {
        for (text, secs) in [
            ("3600", 3600),
            ("90m", 5400),
            ("24h", 86_400),
            ("7d", 604_800),
            ("45s", 45),
        ] {
            assert_eq!(
                parse_duration(text),
                Some(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "h", "1y", "-5", "1.5h", "abc"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn token_lifetimes_keep_their_text() {
        let l = TokenLifetime::parse(" 90m ").unwrap();
        assert_eq!((l.as_str(), l.seconds()), ("90m", 5400));
        assert_eq!(
            TokenLifetime::parse("36500d").unwrap().seconds(),
            3_153_600_000
        );
        for bad in ["0", "500ms", "forever", "", "36501d", "2052117620574877"] {
            assert_eq!(TokenLifetime::parse(bad), Err(TokenLifetimeError), "{bad}");
        }
    }
}
