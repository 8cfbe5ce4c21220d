//! The variable reader: a lookup of variables with the parsing rules every
//! section shares, each reading a [`Setting`] (its name, and the default it
//! falls back to when unset).

use std::fmt;
use std::time::Duration;

use super::settings::Setting;
use super::{ConfigError, SecretUrl, WindowLimit, MAX_COUNT};
use crate::domain::time::{parse_duration, MAX_DURATION, MAX_DURATION_TEXT};

/// The variable lookup with the parsing rules every group shares.
pub(super) struct Vars<'a>(pub(super) &'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    /// The trimmed value, or the setting's default when unset or blank;
    /// `None` when it is unset and has no default.
    pub(super) fn get(&self, setting: Setting) -> Option<String> {
        (self.0)(setting.name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .or_else(|| setting.default.map(str::to_owned))
    }

    /// The value parsed as a `T`; `None` when unset with no default.
    pub(super) fn parse<T: std::str::FromStr>(
        &self,
        setting: Setting,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(setting) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ConfigError::invalid(setting.name, &v, expected)),
        }
    }

    /// The value parsed as a `T`, for a setting the table gives a default.
    pub(super) fn required<T: std::str::FromStr>(
        &self,
        setting: Setting,
        expected: &str,
    ) -> Result<T, ConfigError> {
        self.parse(setting, expected)?
            .ok_or_else(|| ConfigError(format!("{} has no default", setting.name)))
    }

    /// A whole number from 1 to `max`.
    pub(super) fn positive(&self, setting: Setting, max: usize) -> Result<usize, ConfigError> {
        let expected = format!("a whole number from 1 to {max}");
        let n: usize = self.required(setting, &expected)?;
        if n == 0 || n > max {
            let text = self.get(setting).unwrap_or_default();
            return Err(ConfigError::invalid(setting.name, &text, &expected));
        }
        Ok(n)
    }

    /// A count where `0` means "no limit" (`None`), at most [`MAX_COUNT`].
    pub(super) fn limit(&self, setting: Setting) -> Result<Option<u32>, ConfigError> {
        let expected = format!("a whole number from 0 to {MAX_COUNT} (0 turns the limit off)");
        let n: u32 = self.required(setting, &expected)?;
        if n > MAX_COUNT {
            let text = self.get(setting).unwrap_or_default();
            return Err(ConfigError::invalid(setting.name, &text, &expected));
        }
        Ok((n > 0).then_some(n))
    }

    /// A count per window, both configurable.
    pub(super) fn window_limit(
        &self,
        setting: Setting,
        window: Duration,
    ) -> Result<Option<WindowLimit>, ConfigError> {
        Ok(self.limit(setting)?.map(|max| WindowLimit { max, window }))
    }

    /// A duration such as `500ms`, `30s`, `5m`, `1h`, at most
    /// [`MAX_DURATION`]; `expected` describes the form when it is malformed.
    fn bounded_duration(&self, setting: Setting, expected: &str) -> Result<Duration, ConfigError> {
        let name = setting.name;
        let text = self.get(setting).unwrap_or_default();
        let d = parse_duration(&text).ok_or_else(|| ConfigError::invalid(name, &text, expected))?;
        if d > MAX_DURATION {
            return Err(ConfigError::invalid(
                name,
                &text,
                &format!("a duration of at most {MAX_DURATION_TEXT} (100 years)"),
            ));
        }
        Ok(d)
    }

    /// A non-zero duration such as `500ms`, `30s`, `5m`, `1h`.
    pub(super) fn duration(&self, setting: Setting) -> Result<Duration, ConfigError> {
        const EXPECTED: &str = "a duration such as 500ms, 30s, 5m, 1h";
        let d = self.bounded_duration(setting, EXPECTED)?;
        if d.is_zero() {
            let text = self.get(setting).unwrap_or_default();
            return Err(ConfigError::invalid(setting.name, &text, EXPECTED));
        }
        Ok(d)
    }

    /// A duration as [`Vars::duration`] with no default: unset is `None`.
    pub(super) fn optional_duration(
        &self,
        setting: Setting,
    ) -> Result<Option<Duration>, ConfigError> {
        match self.get(setting) {
            None => Ok(None),
            Some(_) => self.duration(setting).map(Some),
        }
    }

    /// A duration as [`Vars::duration`], where `0` is allowed (turns a grace off).
    pub(super) fn duration_or_zero(&self, setting: Setting) -> Result<Duration, ConfigError> {
        self.bounded_duration(setting, "a duration such as 0, 500ms, 30s, 5m")
    }

    /// A duration where `0` means "no limit" (`None`).
    pub(super) fn timeout(&self, setting: Setting) -> Result<Option<Duration>, ConfigError> {
        let d = self.bounded_duration(setting, "a duration such as 10s or 2m (0 turns it off)")?;
        Ok((!d.is_zero()).then_some(d))
    }

    /// One of a setting's words, read by the domain's own `parse`.
    pub(super) fn choice<T, E: fmt::Display>(
        &self,
        setting: Setting,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<T, ConfigError> {
        let text = self.get(setting).unwrap_or_default();
        parse(&text).map_err(|e| ConfigError::invalid(setting.name, &text, &e.to_string()))
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case).
    pub(super) fn boolean(&self, setting: Setting) -> Result<bool, ConfigError> {
        let text = self.get(setting).unwrap_or_default();
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(ConfigError::invalid(setting.name, &text, "true or false")),
        }
    }

    /// A URL that may hold a password, checked for one of `schemes`.
    pub(super) fn secret_url(
        &self,
        setting: Setting,
        schemes: &[&str],
    ) -> Result<Option<SecretUrl>, ConfigError> {
        let Some(url) = self.get(setting) else {
            return Ok(None);
        };
        if !schemes.iter().any(|s| url.starts_with(s)) {
            let expected = format!("a URL starting with {}", schemes.join(" or "));
            return Err(ConfigError::invalid_secret(setting.name, &expected));
        }
        Ok(Some(SecretUrl(url)))
    }
}
