//! Per-user token budgets: fixed windows counted from the Unix epoch (so a
//! `1d` window turns over at UTC midnight on every instance alike), and
//! where a user stands in the current one.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use thiserror::Error;

/// Why a budget window was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("a budget window must be whole seconds, from 1s to 366d")]
pub struct BudgetWindowError;

/// The longest window: a year (leap) is as long as a budget period gets.
const MAX_WINDOW_SECS: u64 = 366 * 86_400;

/// The length of a budget window (`USER_TOKEN_BUDGET_WINDOW`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetWindow {
    secs: u64,
}

impl BudgetWindow {
    pub fn parse(length: Duration) -> Result<Self, BudgetWindowError> {
        let secs = length.as_secs();
        if length.subsec_nanos() != 0 || secs == 0 || secs > MAX_WINDOW_SECS {
            return Err(BudgetWindowError);
        }
        Ok(Self { secs })
    }

    pub fn seconds(self) -> u64 {
        self.secs
    }

    /// The window as an operator writes it: the largest unit it is a whole
    /// number of (`1d`, `12h`, `90m`, `45s`).
    pub fn label(self) -> String {
        let s = self.secs;
        if s.is_multiple_of(86_400) {
            format!("{}d", s / 86_400)
        } else if s.is_multiple_of(3600) {
            format!("{}h", s / 3600)
        } else if s.is_multiple_of(60) {
            format!("{}m", s / 60)
        } else {
            format!("{s}s")
        }
    }

    /// The window `at` falls in.
    pub fn span(self, at: DateTime<Utc>) -> WindowSpan {
        let now = u64::try_from(at.timestamp()).unwrap_or(0);
        let start = now - now % self.secs;
        WindowSpan {
            start,
            length: self.secs,
        }
    }
}

impl Default for BudgetWindow {
    fn default() -> Self {
        Self { secs: 86_400 }
    }
}

/// One window: `[start, start + length)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowSpan {
    pub start: u64,
    pub length: u64,
}

impl WindowSpan {
    /// Unix seconds at which the window ends (the next one starts).
    pub fn end(self) -> u64 {
        self.start.saturating_add(self.length)
    }

    pub fn ends_at(self) -> DateTime<Utc> {
        let end = i64::try_from(self.end()).unwrap_or(i64::MAX);
        Utc.timestamp_opt(end, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// `USER_TOKEN_BUDGET` over `USER_TOKEN_BUDGET_WINDOW`; no limit when off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenBudget {
    pub limit: Option<u64>,
    pub window: BudgetWindow,
}

impl TokenBudget {
    /// Where a user who used `used` tokens in the window of `at` stands.
    pub fn quota(self, used: u64, at: DateTime<Utc>) -> Quota {
        Quota {
            used,
            limit: self.limit,
            resets_at: self.limit.map(|_| self.window.span(at).ends_at()),
        }
    }
}

/// A user's standing in the current window. `limit` and `resets_at` are
/// `None` without a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub used: u64,
    pub limit: Option<u64>,
    pub resets_at: Option<DateTime<Utc>>,
}

impl Quota {
    /// No new answer starts once the budget is used up.
    pub fn exhausted(&self) -> bool {
        self.limit.is_some_and(|limit| self.used >= limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_day_window_turns_over_at_utc_midnight() {
        let day = BudgetWindow::default();
        let span = day.span(at("2025-09-12T10:30:00Z"));
        assert_eq!(span.ends_at(), at("2025-09-13T00:00:00Z"));
        assert_eq!(day.span(at("2025-09-12T23:59:59Z")), span);
        assert_ne!(day.span(at("2025-09-13T00:00:00Z")), span);
        assert_eq!(day.label(), "1d");
    }

    #[test]
    fn windows_are_whole_seconds_up_to_a_year() {
        assert!(BudgetWindow::parse(Duration::from_millis(1500)).is_err());
        assert!(BudgetWindow::parse(Duration::ZERO).is_err());
        assert!(BudgetWindow::parse(Duration::from_secs(367 * 86_400)).is_err());
        let w = BudgetWindow::parse(Duration::from_secs(5400)).unwrap();
        assert_eq!(w.label(), "90m");
        assert_eq!(
            BudgetWindow::parse(Duration::from_secs(7)).unwrap().label(),
            "7s"
        );
        assert_eq!(
            BudgetWindow::parse(Duration::from_secs(7200))
                .unwrap()
                .label(),
            "2h"
        );
    }

    #[test]
    fn a_budget_is_exhausted_at_its_limit() {
        let now = at("2025-09-12T10:30:00Z");
        let budget = TokenBudget {
            limit: Some(100),
            window: BudgetWindow::default(),
        };
        assert!(!budget.quota(99, now).exhausted());
        let q = budget.quota(100, now);
        assert!(q.exhausted());
        assert_eq!(q.resets_at, Some(at("2025-09-13T00:00:00Z")));
        let off = TokenBudget::default().quota(1_000_000, now);
        assert!(!off.exhausted());
        assert_eq!((off.limit, off.resets_at), (None, None));
    }
}
