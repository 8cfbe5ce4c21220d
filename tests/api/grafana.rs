//! The Grafana dashboard (`deploy/grafana/chatbot-server.json`) against the
//! server binary: every `chatbot_*` series its queries use (and every fixed
//! label value they select) is in `/metrics` on the first scrape of a fresh
//! server, so a renamed metric or label fails here and a new server shows
//! every panel (zeros, not "No data").

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::common::spawn_process;

const DASHBOARD: &str = include_str!("../../deploy/grafana/chatbot-server.json");

/// One use of a series in a query: its name and the label values it
/// selects exactly (`label="value"`, or each word of `label=~"a|b"`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Selector {
    name: String,
    labels: Vec<(String, String)>,
}

/// Every query text in the dashboard: the panels' `expr` and the template
/// variables' `query`/`definition`, however deeply nested.
fn queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The `chatbot_*` selectors of a PromQL text.
fn selectors(query: &str) -> Vec<Selector> {
    let mut out = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("chatbot_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let mut labels = Vec::new();
        let after = &tail[end..];
        if let Some(inner) = after.strip_prefix('{') {
            let close = inner.find('}').expect("a closed selector");
            labels = fixed_matchers(&inner[..close]);
        }
        out.push(Selector { name, labels });
        rest = &tail[end..];
    }
    out
}

/// `label="value"` and `label=~"a|b"` matchers whose values are plain words
/// (not a `$variable` or a pattern).
fn fixed_matchers(inside: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for matcher in inside.split(',').map(str::trim) {
        let (label, value, regex) = if let Some((l, v)) = matcher.split_once("=~") {
            (l, v, true)
        } else if let Some((l, v)) = matcher.split_once("!=") {
            let _ = (l, v);
            continue;
        } else if let Some((l, v)) = matcher.split_once('=') {
            (l, v, false)
        } else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        let plain =
            |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let words: Vec<&str> = if regex {
            value.split('|').collect()
        } else {
            vec![value]
        };
        if words.iter().all(|w| plain(w)) {
            for w in words {
                out.push((label.trim().to_owned(), w.to_owned()));
            }
        }
    }
    out
}

/// The exposition's series: name to the label sets it has.
fn exported(text: &str) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut out: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        out.entry(name.to_owned()).or_default().push(labels);
    }
    out
}

/// What of `used` the exposition lacks, one line each.
fn missing(used: &BTreeSet<Selector>, text: &str) -> Vec<String> {
    let series = exported(text);
    let mut gaps = Vec::new();
    for selector in used {
        let Some(sets) = series.get(&selector.name) else {
            gaps.push(format!("{} is not exported", selector.name));
            continue;
        };
        for (label, value) in &selector.labels {
            if !sets.iter().any(|set| set.get(label) == Some(value)) {
                gaps.push(format!(
                    "{}{{{label}=\"{value}\"}} is not exported",
                    selector.name
                ));
            }
        }
    }
    gaps
}

fn dashboard_selectors() -> BTreeSet<Selector> {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut texts = Vec::new();
    queries(&dashboard, &mut texts);
    texts.iter().flat_map(|q| selectors(q)).collect()
}

#[test]
fn the_dashboard_covers_what_an_operator_needs() {
    let names: BTreeSet<String> = dashboard_selectors().into_iter().map(|s| s.name).collect();
    for needed in [
        "chatbot_websocket_connections_active",
        "chatbot_generations_total",
        "chatbot_generation_first_token_seconds_bucket",
        "chatbot_generation_duration_seconds_bucket",
        "chatbot_tokens_streamed_total",
        "chatbot_upstream_requests_total",
        "chatbot_upstream_circuit_open",
        "chatbot_rate_limited_total",
        "chatbot_handoff_queue_length",
        "chatbot_handoff_wait_seconds_bucket",
    ] {
        assert!(names.contains(needed), "no panel uses {needed}: {names:?}");
    }
    assert!(DASHBOARD.contains("histogram_quantile("));
}

/// What Grafana's import needs: a title and uid, unique panel ids, each
/// panel on the 24-column grid with a data source and distinct query ids.
#[test]
fn the_dashboard_imports() {
    let d: Value = serde_json::from_str(DASHBOARD).unwrap();
    assert_eq!(d["uid"], "chatbot-server");
    assert!(d["title"].is_string());
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate id: {p}");
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{p}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{p}");
        let refs: BTreeSet<&str> = p["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), p["targets"].as_array().unwrap().len(), "{p}");
    }
}

#[test]
fn the_checker_sees_a_renamed_metric_or_label() {
    let used: BTreeSet<Selector> =
        selectors(r#"sum(rate(chatbot_a_total{instance=~"$instance", kind="x"}[5m])) / chatbot_b"#)
            .into_iter()
            .collect();
    let text = "# TYPE chatbot_a_total counter\nchatbot_a_total{kind=\"x\"} 0\nchatbot_b 1\n";
    assert!(
        missing(&used, text).is_empty(),
        "{:?}",
        missing(&used, text)
    );
    let renamed = text.replace("chatbot_b ", "chatbot_c ");
    assert_eq!(missing(&used, &renamed), ["chatbot_b is not exported"]);
    let relabelled = text.replace("kind=\"x\"", "kind=\"y\"");
    assert_eq!(
        missing(&used, &relabelled),
        ["chatbot_a_total{kind=\"x\"} is not exported"]
    );
}

/// A fresh binary with both upstreams configured (neither needs to answer):
/// its first scrape already has every series the dashboard reads.
#[tokio::test]
async fn a_fresh_server_exports_every_series_the_dashboard_uses() {
    let app = spawn_process(&[
        ("FASTAPI_URL", "http://127.0.0.1:9"),
        ("AI_FALLBACK_PROVIDER", "openai"),
        ("AI_FALLBACK_OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
        ("AI_FALLBACK_OPENAI_MODEL", "m"),
    ])
    .await;
    let text = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let used = dashboard_selectors();
    assert!(used.len() > 20, "{used:?}");
    let gaps = missing(&used, &text);
    assert!(gaps.is_empty(), "{}\n\n{text}", gaps.join("\n"));
}
