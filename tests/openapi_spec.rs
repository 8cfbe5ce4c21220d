//! The committed OpenAPI spec must be exactly what the code generates, must be
//! valid OpenAPI 3, and must list every response each operation can give.
//!
//! After changing a REST type or route: `UPDATE_OPENAPI=1 cargo test --test openapi_spec`.

use std::collections::BTreeSet;
use std::io::Write as _;

use chatbot_server::adapters::inbound::http::openapi_json;

const SPEC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");

#[test]
fn committed_spec_matches_the_code() {
    let generated = openapi_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(SPEC_PATH, format!("{generated}\n")).unwrap();
    }
    let committed = std::fs::read_to_string(SPEC_PATH).expect("openapi/openapi.json exists");
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is out of date; regenerate it with \
         `UPDATE_OPENAPI=1 cargo test --test openapi_spec` and commit it"
    );
}

#[test]
fn spec_is_openapi_3_and_documents_every_response() {
    let spec: openapiv3::OpenAPI =
        serde_json::from_str(&openapi_json()).expect("the spec parses as an OpenAPI 3 document");
    assert!(spec.openapi.starts_with("3."), "{}", spec.openapi);

    let expected: &[(&str, &str, &[&str])] = &[
        (
            "/api/auth/register",
            "post",
            &["201", "400", "403", "409", "413", "429", "500", "503"],
        ),
        (
            "/api/auth/login",
            "post",
            &["200", "400", "401", "413", "429", "500", "503"],
        ),
        (
            "/api/auth/verify",
            "post",
            &["200", "400", "401", "413", "429", "500"],
        ),
        (
            "/api/auth/refresh",
            "post",
            &["200", "400", "401", "413", "500"],
        ),
        (
            "/api/auth/logout",
            "post",
            &["204", "400", "401", "413", "503"],
        ),
        ("/api/auth/logout-all", "post", &["204", "401", "503"]),
        ("/api/auth/ws-ticket", "post", &["200", "401", "429", "503"]),
        ("/health", "get", &["200", "503"]),
        ("/health/live", "get", &["200"]),
        ("/health/ready", "get", &["200", "503"]),
        ("/api/stats", "get", &["200", "503"]),
        ("/api/websocket/info", "get", &["200"]),
        ("/api/sessions", "get", &["200", "401", "503"]),
        (
            "/api/sessions/{id}/events",
            "get",
            &["200", "400", "401", "404", "503"],
        ),
    ];
    for (path, method, statuses) in expected {
        let item = spec
            .paths
            .paths
            .get(*path)
            .and_then(|p| p.as_item())
            .unwrap_or_else(|| panic!("{path} is missing"));
        let op = match *method {
            "get" => item.get.as_ref(),
            "post" => item.post.as_ref(),
            _ => None,
        }
        .unwrap_or_else(|| panic!("{method} {path} is missing"));
        let documented: BTreeSet<String> = op
            .responses
            .responses
            .keys()
            .map(|c| c.to_string())
            .collect();
        let wanted: BTreeSet<String> = statuses.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(documented, wanted, "{method} {path}");
        for (code, resp) in &op.responses.responses {
            let resp = resp.as_item().expect("inline response");
            if code.to_string() == "204" {
                assert!(resp.content.is_empty(), "{method} {path} 204 has no body");
                continue;
            }
            assert!(
                resp.content.contains_key("application/json; charset=utf-8")
                    || resp.content.contains_key("application/json"),
                "{method} {path} {code} has a JSON body"
            );
        }
    }
    let schemas = &spec.components.as_ref().expect("components").schemas;
    let error = schemas.get("ErrorBody").expect("ErrorBody schema");
    let error = serde_json::to_value(error).unwrap();
    let required: BTreeSet<&str> = error["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, BTreeSet::from(["error", "message"]));
    // Every 429 says when to come back.
    for path in ["/api/auth/register", "/api/auth/login", "/api/auth/verify"] {
        let op = spec.paths.paths[path]
            .as_item()
            .unwrap()
            .post
            .as_ref()
            .unwrap();
        let limited = op.responses.responses[&openapiv3::StatusCode::Code(429)]
            .as_item()
            .unwrap();
        assert!(
            limited
                .headers
                .keys()
                .any(|h| h.eq_ignore_ascii_case("retry-after")),
            "{path}"
        );
    }
    let user = serde_json::to_value(schemas.get("UserView").expect("UserView")).unwrap();
    assert!(user["properties"].get("password").is_none());
}

/// A second opinion from the reference validator, where it is installed
/// (`.ci/run` installs it; `pip install openapi-spec-validator` locally).
#[test]
fn spec_passes_openapi_spec_validator_when_available() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        let _ = writeln!(std::io::stderr(), "SKIPPED openapi-spec-validator check: python3 module openapi_spec_validator is not installed"
        );
        return;
    }
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator", SPEC_PATH])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator rejected the spec:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
