//! Property tests: any value of any setting is accepted with its meaning,
//! or refused in one line naming the setting.

use super::ai::MAX_AI_RETRIES;
use super::tests::{durations, DURATIONS, DURATIONS_OR_ZERO, LIMITS, POSITIVE};
use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

fn cfg(pairs: &[(&str, String)]) -> Result<Config, ConfigError> {
    let map: HashMap<&str, &str> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Config::from_lookup(|k| map.get(k).map(|v| (*v).to_owned()))
}

/// Every variable the server reads.
fn all_names() -> Vec<&'static str> {
    let mut names = vec![
        "PORT",
        "HOST",
        "APP_ENV",
        "NODE_ENV",
        "JWT_SECRET",
        "JWT_EXPIRES_IN",
        "ALLOW_REGISTRATION",
        "MONGODB_URI",
        "SQLITE_PATH",
        "REDIS_URL",
        "REDIS_KEY_PREFIX",
        "AI_PROVIDER",
        "FASTAPI_URL",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_MODEL",
        "AI_SYSTEM_PROMPT",
        "AI_FALLBACK_PROVIDER",
        "AI_FALLBACK_FASTAPI_URL",
        "AI_FALLBACK_OPENAI_BASE_URL",
        "AI_FALLBACK_OPENAI_API_KEY",
        "AI_FALLBACK_OPENAI_MODEL",
        "AI_FALLBACK_SYSTEM_PROMPT",
        "AI_MAX_RETRIES",
        "CORS_ORIGIN",
        "TRUSTED_PROXIES",
    ];
    names.extend(
        DURATIONS
            .iter()
            .chain(DURATIONS_OR_ZERO)
            .chain(LIMITS)
            .chain(POSITIVE),
    );
    names
}

/// Text near what a setting expects (numbers with units, words, URLs)
/// or anything at all.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ ]?-?[0-9]{1,22}[ ]?(ms|s|m|h|d|days|y|)[ ]?",
        "(true|false|yes|no|on|off|TRUE|maybe|)",
        "(https?|redis|mongodb|ftp)://[a-z0-9.:@/?#]{0,20}",
        "[0-9a-f:./, *]{0,30}",
        any::<String>(),
    ]
}

/// What `n` followed by `unit` means, by a model independent of the parser.
fn model_duration(n: u128, unit: &str) -> Option<u128> {
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" | "days" => 86_400_000,
        _ => return None,
    };
    Some(n * ms)
}

fn check_accepted(c: &Config) -> Result<(), TestCaseError> {
    let now = std::time::Instant::now();
    let today = chrono::Utc::now();
    for (name, d) in durations(c) {
        prop_assert!(d <= crate::domain::time::MAX_DURATION, "{} = {:?}", name, d);
        // What the server does with them: deadlines and expiry dates.
        prop_assert!(now.checked_add(d * 4).is_some());
        let d = chrono::Duration::from_std(d).unwrap();
        prop_assert!(today.checked_add_signed(d).is_some());
    }
    prop_assert!(c.sessions.event_log_limit <= MAX_COUNT as usize);
    prop_assert!(c.websocket.max_message_chars <= MAX_COUNT as usize);
    prop_assert!(c.ai.max_retries <= MAX_AI_RETRIES);
    Ok(())
}

fn check_refused(err: &ConfigError, names: &[&str]) -> Result<(), TestCaseError> {
    let text = err.to_string();
    prop_assert!(!text.contains('\n') && !text.contains('\r'), "{:?}", text);
    prop_assert!(
        names.iter().any(|n| text.contains(n)),
        "{} names none of {:?}",
        text,
        names
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_setting_with_any_value_starts_or_is_refused_in_one_line(
        pairs in prop::collection::vec((prop::sample::select(all_names()), value()), 1..6)
    ) {
        match cfg(&pairs) {
            Ok(c) => check_accepted(&c)?,
            Err(e) => {
                let mut names: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
                // Settings that need each other name the missing one.
                names.extend(["AI_FALLBACK", "OPENAI_MODEL", "FASTAPI_URL", "JWT_SECRET"]);
                check_refused(&e, &names)?;
            }
        }
    }

    #[test]
    fn durations_mean_what_they_say_or_are_refused(
        name in prop::sample::select([DURATIONS, DURATIONS_OR_ZERO].concat()),
        n in prop_oneof![0u64..100_000, any::<u64>(), 3_153_599_999u64..3_153_600_002],
        unit in prop::sample::select(vec!["", "s", "ms", "m", "h", "d", "days", "y", "us"]),
    ) {
        let text = format!("{n}{unit}");
        let zero_ok = DURATIONS_OR_ZERO.contains(&name);
        let expected_ms = model_duration(u128::from(n), unit)
            .filter(|&ms| ms <= 36_500 * 86_400_000 && (zero_ok || ms > 0));
        match (cfg(&[(name, text.clone())]), expected_ms) {
            (Ok(c), Some(ms)) => {
                let got = durations(&c).into_iter().find(|(n, _)| *n == name).map(|(_, d)| d);
                // `0` of a timeout turns it off: then it is absent.
                prop_assert_eq!(got.map_or(0, |d| d.as_millis()), ms, "{}={}", name, text);
            }
            (Err(e), None) => check_refused(&e, &[name])?,
            (got, expected) => prop_assert!(false, "{}={}: got {:?}, expected {:?} ms", name, text, got.map(|_| ()), expected),
        }
    }

    #[test]
    fn counts_mean_what_they_say_or_are_refused(
        name in prop::sample::select([LIMITS, POSITIVE].concat()),
        text in prop_oneof!["-?[0-9]{1,12}", "[0-9]{1,7}", any::<String>()],
    ) {
        let n: Option<u64> = text.trim().parse().ok();
        let least = u64::from(POSITIVE.contains(&name));
        let ok = n.filter(|n| (least..=u64::from(MAX_COUNT)).contains(n));
        let blank = text.trim().is_empty();
        match cfg(&[(name, text.clone())]) {
            Ok(c) => {
                check_accepted(&c)?;
                prop_assert!(ok.is_some() || blank, "{}={:?} accepted", name, text);
            }
            Err(e) => {
                prop_assert!(ok.is_none(), "{}={:?} refused: {}", name, text, e);
                check_refused(&e, &[name])?;
            }
        }
    }

    #[test]
    fn booleans_are_the_documented_words(text in prop_oneof![
        "(?i)(true|false|yes|no|on|off|1|0)", any::<String>()
    ]) {
        let word = text.trim().to_ascii_lowercase();
        let expected = match word.as_str() {
            "true" | "1" | "yes" | "on" | "" => Some(true),
            "false" | "0" | "no" | "off" => Some(false),
            _ => None,
        };
        let got = cfg(&[("ALLOW_REGISTRATION", text.clone())]).map(|c| c.access.allow_registration);
        match (got, expected) {
            (Ok(b), Some(e)) => prop_assert_eq!(b, e),
            (Err(e), None) => check_refused(&e, &["ALLOW_REGISTRATION"])?,
            (got, expected) => prop_assert!(false, "{:?}: {:?} vs {:?}", text, got, expected),
        }
    }

    #[test]
    fn connection_urls_keep_their_scheme_and_never_echo_a_refused_one(
        name in prop::sample::select(vec!["REDIS_URL", "MONGODB_URI"]),
        text in prop_oneof![
            "(redis|rediss|mongodb|mongodb\\+srv|http)://[a-z]{1,6}:S3CR3T[a-z]{0,4}@[a-z0-9.:/]{1,20}",
            any::<String>(),
        ],
    ) {
        match cfg(&[(name, text.clone())]) {
            Ok(c) => {
                let url = if name == "REDIS_URL" { c.sessions.redis_url } else { c.storage.mongodb_uri };
                match url {
                    Some(url) => {
                        prop_assert_eq!(url.expose(), text.trim());
                        let shown = format!("{url:?} {url}");
                        prop_assert!(!shown.contains("S3CR3T"), "{}", shown);
                    }
                    None => prop_assert!(text.trim().is_empty()),
                }
            }
            Err(e) => {
                check_refused(&e, &[name])?;
                prop_assert!(!e.to_string().contains("S3CR3T"));
            }
        }
    }

    #[test]
    fn ai_urls_are_http_without_query_or_refused(text in prop_oneof![
        "(https?|ftp|)(://)?[a-z0-9.:/?#]{0,20}",
        any::<String>(),
    ]) {
        match cfg(&[("FASTAPI_URL", text.clone())]) {
            Ok(c) => match c.ai.primary {
                Some(UpstreamConfig::FastApi { url }) => {
                    prop_assert!(url.starts_with("http://") || url.starts_with("https://"));
                    prop_assert!(!url.contains(['?', '#']));
                    prop_assert_eq!(url.as_str(), text.trim());
                }
                other => prop_assert!(other.is_none() && text.trim().is_empty()),
            },
            Err(e) => check_refused(&e, &["FASTAPI_URL"])?,
        }
    }

    #[test]
    fn trusted_proxy_lists_parse_or_are_refused_by_name(text in prop_oneof![
        "([0-9]{1,3}\\.){3}[0-9]{1,3}(/[0-9]{1,2})?(, ?[0-9a-f:]{2,12}(/[0-9]{1,3})?){0,2}",
        any::<String>(),
    ]) {
        match cfg(&[("TRUSTED_PROXIES", text.clone())]) {
            Ok(c) => prop_assert_eq!(
                c.limits.trusted_proxies.is_empty(),
                text.split(',').all(|e| e.trim().is_empty())
            ),
            Err(e) => check_refused(&e, &["TRUSTED_PROXIES"])?,
        }
    }
}
