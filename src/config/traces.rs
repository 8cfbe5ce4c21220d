//! The traces section: OpenTelemetry export over OTLP/HTTP, turned on by the
//! standard `OTEL_*` variables, with the names and meanings of the
//! OpenTelemetry specification (so a collector's usual `.env` works), but
//! stricter: a value the SDK would ignore with a warning exits with code 2.

use std::fmt;

use super::settings::{
    OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG,
};
use super::{ConfigError, Setting, Vars};

/// Where the traces go and which are kept. Present only when an endpoint is set.
#[derive(Debug, Clone, PartialEq)]
pub struct TracesConfig {
    /// The full URL spans are POSTed to: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// as written, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`.
    pub endpoint: String,
    /// `OTEL_EXPORTER_OTLP_HEADERS`, decoded (often an API key).
    pub headers: ExportHeaders,
    /// `OTEL_SERVICE_NAME`: the resource's `service.name`.
    pub service_name: String,
    /// `OTEL_TRACES_SAMPLER` with its `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler: TraceSampler,
}

/// Which traces are recorded, as `OTEL_TRACES_SAMPLER` names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TraceSampler {
    AlwaysOn,
    AlwaysOff,
    /// This fraction of traces (0 to 1), by trace id.
    Ratio(f64),
    /// The caller's decision when it sent a `traceparent`, else the inner one.
    ParentBased(RootSampler),
}

/// The decision of a [`TraceSampler::ParentBased`] sampler for a new trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RootSampler {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

/// Headers sent with every export. `Debug` shows the names, never the values.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ExportHeaders(Vec<(String, String)>);

impl ExportHeaders {
    /// The headers as configured, values included: for the exporter only.
    pub fn expose(&self) -> &[(String, String)] {
        &self.0
    }
}

impl fmt::Debug for ExportHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "ExportHeaders({names:?}, values redacted)")
    }
}

impl TracesConfig {
    /// `None` when neither endpoint is set: nothing is exported.
    pub(super) fn parse(vars: &Vars) -> Result<Option<Self>, ConfigError> {
        let protocol = vars.get(OTEL_EXPORTER_OTLP_PROTOCOL).unwrap_or_default();
        if protocol != "http/protobuf" {
            return Err(ConfigError::invalid(
                OTEL_EXPORTER_OTLP_PROTOCOL.name,
                &protocol,
                "http/protobuf (the only OTLP transport this server speaks)",
            ));
        }
        let endpoint = match (
            endpoint(vars, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)?,
            endpoint(vars, OTEL_EXPORTER_OTLP_ENDPOINT)?,
        ) {
            (Some(traces), _) => traces,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        Ok(Some(Self {
            endpoint,
            headers: headers(vars)?,
            service_name: vars.get(OTEL_SERVICE_NAME).unwrap_or_default(),
            sampler: sampler(vars)?,
        }))
    }
}

/// An `http://` or `https://` URL with a host.
fn endpoint(vars: &Vars, setting: Setting) -> Result<Option<String>, ConfigError> {
    let Some(text) = vars.get(setting) else {
        return Ok(None);
    };
    let valid = reqwest::Url::parse(&text)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if !valid {
        return Err(ConfigError::invalid(
            setting.name,
            &text,
            "an http:// or https:// URL such as http://localhost:4318",
        ));
    }
    Ok(Some(text))
}

/// `name=value` pairs separated by commas, values percent-encoded (W3C
/// baggage style, as the specification says). Never echoes a value.
fn headers(vars: &Vars) -> Result<ExportHeaders, ConfigError> {
    let name = OTEL_EXPORTER_OTLP_HEADERS.name;
    let Some(text) = vars.get(OTEL_EXPORTER_OTLP_HEADERS) else {
        return Ok(ExportHeaders::default());
    };
    let mut out = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            ConfigError::invalid_secret(
                name,
                "comma-separated name=value pairs such as api-key=abc,x-team=chat \
                 (values percent-encoded)",
            )
        };
        let (key, value) = pair.split_once('=').ok_or_else(bad)?;
        let key = key.trim();
        let value = percent_decode(value.trim()).ok_or_else(bad)?;
        if reqwest::header::HeaderName::from_bytes(key.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(&value).is_err()
        {
            return Err(bad());
        }
        out.push((key.to_ascii_lowercase(), value));
    }
    Ok(ExportHeaders(out))
}

/// `%XX` sequences decoded; `None` for a broken sequence or non-UTF-8 result.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The sampler and, for the ratio ones, its argument (default 1.0, as the
/// specification says; outside 0..=1 is refused).
fn sampler(vars: &Vars) -> Result<TraceSampler, ConfigError> {
    let text = vars.get(OTEL_TRACES_SAMPLER).unwrap_or_default();
    let ratio = || -> Result<f64, ConfigError> {
        let Some(arg) = vars.get(OTEL_TRACES_SAMPLER_ARG) else {
            return Ok(1.0);
        };
        match arg.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(ConfigError::invalid(
                OTEL_TRACES_SAMPLER_ARG.name,
                &arg,
                "a fraction from 0 to 1, such as 0.25",
            )),
        }
    };
    Ok(match text.to_ascii_lowercase().as_str() {
        "always_on" => TraceSampler::AlwaysOn,
        "always_off" => TraceSampler::AlwaysOff,
        "traceidratio" => TraceSampler::Ratio(ratio()?),
        "parentbased_always_on" => TraceSampler::ParentBased(RootSampler::AlwaysOn),
        "parentbased_always_off" => TraceSampler::ParentBased(RootSampler::AlwaysOff),
        "parentbased_traceidratio" => TraceSampler::ParentBased(RootSampler::Ratio(ratio()?)),
        _ => {
            return Err(ConfigError::invalid(
                OTEL_TRACES_SAMPLER.name,
                &text,
                "always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off or parentbased_traceidratio",
            ))
        }
    })
}
