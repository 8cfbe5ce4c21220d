//! When people answer (`HANDOFF_HOURS` in `HANDOFF_TIMEZONE`): outside these
//! hours a request for a human stays with the bot, told when the desk opens.
//!
//! The hours are wall-clock times of the desk's time zone, so they follow its
//! daylight-saving changes: `09:00` is nine o'clock local time in winter and
//! in summer. An opening that falls in a spring-forward gap opens at the
//! first instant after it; one that falls twice (fall-back) opens the first
//! time.
//!
//! Syntax: comma-separated entries `DAYS HH:MM-HH:MM [HH:MM-HH:MM ...]`.
//! `DAYS` is a day (`Mon`, `monday`), a range (`Mon-Fri`, and wrapping,
//! `Fri-Mon`), or a list written as entries without hours that take the
//! next entry's hours (`Mon, Wed, Fri 09:00-12:00`). A range ending at or
//! before its start runs past midnight (`Fri 22:00-02:00` is Friday night to
//! Saturday 2 am); `24:00` is the end of the day.

use std::fmt;

use chrono::{DateTime, Utc};
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use thiserror::Error;

/// Why `HANDOFF_HOURS` or `HANDOFF_TIMEZONE` was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OfficeHoursError {
    #[error("an IANA time zone name such as Europe/Berlin (unknown: {0:?})")]
    UnknownZone(String),
    #[error("entries such as 'Mon-Fri 09:00-17:30, Sat 10:00-14:00' ({0})")]
    Syntax(String),
}

const DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Minutes from local midnight; a close of [`END_OF_DAY`] is midnight after.
type Minute = u16;
const END_OF_DAY: Minute = 24 * 60;

/// One opening: on `day` (0 = Monday) from `open` to `close`, past midnight
/// into the next day when `close <= open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Opening {
    day: u8,
    open: Minute,
    close: Minute,
}

impl Opening {
    fn overnight(self) -> bool {
        self.close <= self.open
    }
}

/// The desk's opening hours in its time zone.
#[derive(Clone)]
pub struct OfficeHours {
    openings: Vec<Opening>,
    zone: TimeZone,
    zone_name: String,
    /// The hours as configured, to show.
    spec: String,
}

impl fmt::Debug for OfficeHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OfficeHours")
            .field("openings", &self.openings)
            .field("zone", &self.zone_name)
            .finish()
    }
}

impl PartialEq for OfficeHours {
    fn eq(&self, other: &Self) -> bool {
        self.openings == other.openings && self.zone_name == other.zone_name
    }
}

/// The time zone `HANDOFF_TIMEZONE` names (IANA, from the bundled database).
pub fn parse_zone(name: &str) -> Result<TimeZone, OfficeHoursError> {
    let name = name.trim();
    TimeZone::get(name).map_err(|_| OfficeHoursError::UnknownZone(name.to_owned()))
}

impl OfficeHours {
    /// Reads `hours` (see the module's syntax) in the zone `zone`.
    pub fn parse(hours: &str, zone: &str) -> Result<Self, OfficeHoursError> {
        let tz = parse_zone(zone)?;
        let mut openings = Vec::new();
        let mut days: Vec<u8> = Vec::new();
        let entries: Vec<&str> = hours.split(',').map(str::trim).collect();
        for entry in &entries {
            let mut words = entry.split_whitespace();
            let Some(first) = words.next() else {
                return Err(syntax(format!("empty entry in {hours:?}")));
            };
            days.extend(day_range(first)?);
            let ranges: Vec<&str> = words.collect();
            if ranges.is_empty() {
                continue; // A list: these days take the next entry's hours.
            }
            for range in ranges {
                let (open, close) = time_range(range)?;
                openings.extend(days.iter().map(|&day| Opening { day, open, close }));
            }
            days.clear();
        }
        if !days.is_empty() {
            return Err(syntax(format!("the last entry of {hours:?} has no hours")));
        }
        Ok(Self {
            openings,
            zone: tz,
            zone_name: zone.trim().to_owned(),
            spec: hours.trim().to_owned(),
        })
    }

    /// The hours as configured.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// The zone's name, as configured.
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// Whether the desk is open at `now`.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        let local = jiff_instant(now).to_zoned(self.zone.clone());
        let day = weekday(local.date());
        let minute = minute_of(local.time());
        let yesterday = (day + 6) % 7;
        self.openings.iter().any(|o| {
            let today = o.day == day && minute >= o.open && (o.overnight() || minute < o.close);
            let from_last_night = o.overnight() && o.day == yesterday && minute < o.close;
            today || from_last_night
        })
    }

    /// When the desk next opens after `now` (`None` only without any
    /// opening, which parsing never gives).
    pub fn next_opening(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = jiff_instant(now).to_zoned(self.zone.clone());
        let mut date = local.date();
        // Each weekday comes again within a week; one more day covers an
        // opening later today being in the past.
        for _ in 0..8 {
            let day = weekday(date);
            let found = self
                .openings
                .iter()
                .filter(|o| o.day == day)
                .filter_map(|o| self.instant(date, o.open))
                .filter(|at| *at > now)
                .min();
            if found.is_some() {
                return found;
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The instant of `minute` on the local `date` (a gap's time is moved
    /// forward past the gap, a fold's is the first of the two).
    fn instant(&self, date: Date, minute: Minute) -> Option<DateTime<Utc>> {
        let hour = i8::try_from(minute / 60).ok()?;
        let min = i8::try_from(minute % 60).ok()?;
        let zoned = date.at(hour, min, 0, 0).to_zoned(self.zone.clone()).ok()?;
        DateTime::from_timestamp_millis(zoned.timestamp().as_millisecond())
    }
}

fn syntax(why: String) -> OfficeHoursError {
    OfficeHoursError::Syntax(why)
}

fn jiff_instant(at: DateTime<Utc>) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(at.timestamp_millis()).unwrap_or(jiff::Timestamp::MAX)
}

fn weekday(date: Date) -> u8 {
    u8::try_from(date.weekday().to_monday_zero_offset()).unwrap_or(0)
}

fn minute_of(t: Time) -> Minute {
    u16::try_from(t.hour()).unwrap_or(0) * 60 + u16::try_from(t.minute()).unwrap_or(0)
}

/// `Mon`, `monday`, or a range `Mon-Fri` (wrapping past Sunday).
fn day_range(word: &str) -> Result<Vec<u8>, OfficeHoursError> {
    let (from, to) = match word.split_once('-') {
        Some((a, b)) => (day(a)?, day(b)?),
        None => {
            let d = day(word)?;
            (d, d)
        }
    };
    let len = (to + 7 - from) % 7 + 1;
    Ok((0..len).map(|i| (from + i) % 7).collect())
}

fn day(word: &str) -> Result<u8, OfficeHoursError> {
    let w = word.trim().to_ascii_lowercase();
    DAYS.iter()
        .position(|d| w.len() >= 3 && d.starts_with(&w) && (w.len() == 3 || *d == w))
        .and_then(|i| u8::try_from(i).ok())
        .ok_or_else(|| syntax(format!("{word:?} is not a day such as Mon or Monday")))
}

/// `HH:MM-HH:MM`.
fn time_range(range: &str) -> Result<(Minute, Minute), OfficeHoursError> {
    let bad = || syntax(format!("{range:?} is not a time range such as 09:00-17:30"));
    let (open, close) = range.split_once('-').ok_or_else(bad)?;
    let open = clock(open, false).ok_or_else(bad)?;
    let close = clock(close, true).ok_or_else(bad)?;
    if open == close {
        return Err(syntax(format!("{range:?} opens and closes at once")));
    }
    Ok((open, close))
}

/// `HH:MM` (24:00 only as a close).
fn clock(text: &str, close: bool) -> Option<Minute> {
    let (h, m) = text.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (Minute, Minute) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if close => Some(END_OF_DAY),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn hours(spec: &str, zone: &str) -> OfficeHours {
        OfficeHours::parse(spec, zone).unwrap()
    }

    #[test]
    fn weekdays_and_a_short_saturday() {
        let h = hours("Mon-Fri 09:00-17:30, Sat 10:00-14:00", "UTC");
        // 2026-12-07 is a Monday.
        assert!(!h.is_open(utc("2026-12-07T08:59:59Z")));
        assert!(h.is_open(utc("2026-12-07T09:00:00Z")));
        assert!(h.is_open(utc("2026-12-07T17:29:59Z")));
        assert!(!h.is_open(utc("2026-12-07T17:30:00Z")));
        assert!(h.is_open(utc("2026-12-12T13:00:00Z")), "Saturday");
        assert!(!h.is_open(utc("2026-12-13T12:00:00Z")), "Sunday");
        assert_eq!(
            h.next_opening(utc("2026-12-07T17:30:00Z")),
            Some(utc("2026-12-08T09:00:00Z"))
        );
        assert_eq!(
            h.next_opening(utc("2026-12-12T15:00:00Z")),
            Some(utc("2026-12-14T09:00:00Z")),
            "Saturday afternoon: Monday"
        );
        assert_eq!(
            h.next_opening(utc("2026-12-07T06:00:00Z")),
            Some(utc("2026-12-07T09:00:00Z")),
            "later today"
        );
    }

    #[test]
    fn day_lists_ranges_names_and_several_ranges_a_day() {
        let h = hours(
            "mon, Wednesday, FRI 09:00-12:00 13:00-17:00, Sat-Sun 10:00-11:00",
            "UTC",
        );
        assert!(h.is_open(utc("2026-12-09T09:30:00Z")), "Wednesday");
        assert!(!h.is_open(utc("2026-12-08T09:30:00Z")), "not Tuesday");
        assert!(!h.is_open(utc("2026-12-11T12:30:00Z")), "Friday lunch");
        assert!(h.is_open(utc("2026-12-11T13:30:00Z")));
        assert!(h.is_open(utc("2026-12-13T10:30:00Z")), "Sunday");
        let wrap = hours("Fri-Mon 10:00-11:00", "UTC");
        assert!(
            wrap.is_open(utc("2026-12-13T10:30:00Z")),
            "Sunday in Fri-Mon"
        );
        assert!(
            !wrap.is_open(utc("2026-12-09T10:30:00Z")),
            "Wednesday is not"
        );
    }

    #[test]
    fn an_overnight_range_runs_into_the_next_day() {
        let h = hours("Fri 22:00-02:00, Sat 10:00-24:00", "UTC");
        assert!(h.is_open(utc("2026-12-11T23:00:00Z")), "Friday night");
        assert!(h.is_open(utc("2026-12-12T01:59:00Z")), "Saturday early");
        assert!(!h.is_open(utc("2026-12-12T02:00:00Z")));
        assert!(h.is_open(utc("2026-12-12T23:59:00Z")), "until midnight");
        assert!(!h.is_open(utc("2026-12-13T00:00:00Z")));
        assert_eq!(
            h.next_opening(utc("2026-12-12T03:00:00Z")),
            Some(utc("2026-12-12T10:00:00Z"))
        );
    }

    #[test]
    fn local_hours_follow_daylight_saving_time() {
        let h = hours("Mon-Sun 09:00-17:00", "Europe/Berlin");
        // Winter: UTC+1; summer: UTC+2.
        assert!(h.is_open(utc("2026-01-15T08:00:00Z")));
        assert!(!h.is_open(utc("2026-01-15T07:59:00Z")));
        assert!(h.is_open(utc("2026-07-15T07:00:00Z")));
        assert!(!h.is_open(utc("2026-07-15T06:59:00Z")));
        // 2026-03-29: clocks go from 02:00 to 03:00 in Berlin.
        assert_eq!(
            h.next_opening(utc("2026-03-28T20:00:00Z")),
            Some(utc("2026-03-29T07:00:00Z"))
        );
        // An opening inside the gap opens right after it.
        let gap = hours("Sun 02:30-04:00", "Europe/Berlin");
        assert_eq!(
            gap.next_opening(utc("2026-03-28T20:00:00Z")),
            Some(utc("2026-03-29T01:30:00Z")),
            "03:30 local, the gap's 02:30 moved past it"
        );
        assert!(gap.is_open(utc("2026-03-29T01:00:00Z")), "03:00 local");
        // 2026-10-25: 03:00 goes back to 02:00; 02:30 happens twice: the first.
        let fold = hours("Sun 02:30-04:00", "Europe/Berlin");
        assert_eq!(
            fold.next_opening(utc("2026-10-24T20:00:00Z")),
            Some(utc("2026-10-25T00:30:00Z"))
        );
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        let bad = |spec: &str| OfficeHours::parse(spec, "UTC").unwrap_err();
        for spec in [
            "",
            "Mon-Fri",
            "Mon-Fri 9-17",
            "Mon-Fri 09:00",
            "Mon-Fri 09:00-25:00",
            "Mon-Fri 24:00-10:00",
            "Funday 09:00-10:00",
            "Mo 09:00-10:00",
            "Mon 10:00-10:00",
            "Mon 09:00-17:00,",
        ] {
            assert!(matches!(bad(spec), OfficeHoursError::Syntax(_)), "{spec:?}");
        }
        assert_eq!(
            OfficeHours::parse("Mon 09:00-10:00", "Mars/Olympus").unwrap_err(),
            OfficeHoursError::UnknownZone("Mars/Olympus".into())
        );
        assert!(parse_zone("America/New_York").is_ok());
    }
}
