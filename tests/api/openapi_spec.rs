//! The committed OpenAPI spec must be exactly what the code generates, must be
//! valid OpenAPI 3, and must list every response each operation can give.
//!
//! After changing a REST type or route: `UPDATE_OPENAPI=1 cargo test --test api openapi_spec`.

use std::collections::BTreeSet;
use std::io::Write as _;

use chatbot_server::adapters::inbound::errors::ErrorCode;
use chatbot_server::adapters::inbound::http::openapi_json;
use serde_json::Value;

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
         `UPDATE_OPENAPI=1 cargo test --test api openapi_spec` and commit it"
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
        ("/api/agent/replies", "get", &["200", "401", "403", "503"]),
        (
            "/api/agent/replies",
            "post",
            &["200", "201", "400", "401", "403", "409", "413", "503"],
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
            let media: Vec<&String> = resp.content.keys().collect();
            assert_eq!(
                media,
                ["application/json"],
                "{method} {path} {code} has a plain JSON body"
            );
        }
    }
    let schemas = &spec.components.as_ref().expect("components").schemas;
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

fn spec_value() -> Value {
    serde_json::from_str(&openapi_json()).unwrap()
}

/// The schema `schema` names, following a `$ref`.
fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            &spec["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Every operation: (path, method, operation).
fn operations(spec: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = vec![];
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((path.clone(), method.clone(), op));
        }
    }
    ops
}

#[test]
fn every_operation_has_its_operation_id_and_bearer_routes_declare_the_scheme() {
    let spec = spec_value();
    let scheme = &spec["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(scheme["bearerFormat"], "JWT");
    let expected: &[(&str, &str, &str, Option<bool>)] = &[
        ("/api/auth/register", "post", "register", None),
        ("/api/auth/login", "post", "login", None),
        // The token may also come in the body: bearer is optional.
        ("/api/auth/verify", "post", "verify", Some(false)),
        ("/api/auth/refresh", "post", "refresh", None),
        ("/api/auth/logout", "post", "logout", Some(true)),
        ("/api/auth/logout-all", "post", "logoutAll", Some(true)),
        ("/api/auth/ws-ticket", "post", "createWsTicket", Some(true)),
        ("/health", "get", "health", None),
        ("/health/live", "get", "healthLive", None),
        ("/health/ready", "get", "healthReady", None),
        ("/api/stats", "get", "stats", None),
        ("/api/websocket/info", "get", "websocketInfo", None),
        ("/api/sessions", "get", "listSessions", Some(true)),
        (
            "/api/sessions/{id}/events",
            "get",
            "sessionEvents",
            Some(true),
        ),
        (
            "/api/sessions/{id}/messages",
            "get",
            "sessionMessages",
            Some(true),
        ),
        ("/api/sessions/{id}", "delete", "deleteSession", Some(true)),
        ("/api/agent/queue", "get", "agentQueue", Some(true)),
        (
            "/api/agent/conversations",
            "get",
            "agentConversations",
            Some(true),
        ),
        (
            "/api/agent/conversations/{id}/claim",
            "post",
            "claimConversation",
            Some(true),
        ),
        (
            "/api/agent/conversations/{id}/release",
            "post",
            "releaseConversation",
            Some(true),
        ),
        (
            "/api/agent/conversations/{id}/resolve",
            "post",
            "resolveConversation",
            Some(true),
        ),
        (
            "/api/agent/conversations/{id}/messages",
            "post",
            "sendAgentMessage",
            Some(true),
        ),
        ("/api/usage", "get", "usage", Some(true)),
        ("/api/agent/replies", "get", "listReplies", Some(true)),
        ("/api/agent/replies", "post", "saveReply", Some(true)),
        (
            "/api/agent/replies/{shortcut}",
            "delete",
            "deleteReply",
            Some(true),
        ),
        (
            "/api/agent/users/{id}/usage",
            "get",
            "userUsage",
            Some(true),
        ),
    ];
    assert_eq!(
        operations(&spec).len(),
        expected.len(),
        "every operation is listed here"
    );
    for (path, method, id, bearer) in expected {
        let op = &spec["paths"][path][method];
        assert_eq!(op["operationId"], *id, "{method} {path}");
        let security = op["security"].as_array();
        match bearer {
            None => assert!(security.is_none(), "{method} {path} takes no token"),
            Some(required) => {
                let security = security.unwrap_or_else(|| panic!("{method} {path}"));
                assert_eq!(security[0], serde_json::json!({"bearerAuth": []}));
                // An empty requirement makes the token optional.
                assert_eq!(security.len() == 1, *required, "{method} {path}");
            }
        }
    }
}

#[test]
fn every_error_response_lists_its_codes_from_the_catalogue() {
    let spec = spec_value();
    let catalogue: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    // What each route can answer, read off the handlers: a code added to a
    // handler without its response's code set panics in debug builds.
    let bearer = [
        "missing_token",
        "invalid_token",
        "token_expired",
        "token_revoked",
    ];
    let expected: &[(&str, &str, &[&str])] = &[
        (
            "register",
            "400",
            &[
                "invalid_request",
                "invalid_username",
                "invalid_email",
                "invalid_password",
            ],
        ),
        ("register", "409", &["username_taken", "email_taken"]),
        ("register", "403", &["registration_closed"]),
        ("login", "401", &["invalid_credentials"]),
        ("verify", "401", &bearer),
        ("refresh", "401", &["invalid_refresh_token"]),
        ("logout", "401", &bearer),
        ("logoutAll", "503", &["service_unavailable"]),
        ("stats", "503", &["session_store_unavailable"]),
        (
            "listSessions",
            "503",
            &["service_unavailable", "session_store_unavailable"],
        ),
        ("sessionEvents", "404", &["session_not_found"]),
        ("sessionEvents", "400", &["invalid_request"]),
        ("agentQueue", "403", &["agent_only"]),
        ("agentQueue", "401", &bearer),
        (
            "claimConversation",
            "409",
            &["already_claimed", "not_queued", "agent_at_capacity"],
        ),
        ("claimConversation", "404", &["session_not_found"]),
        ("releaseConversation", "409", &["not_assigned"]),
        ("resolveConversation", "409", &["not_assigned"]),
        (
            "sendAgentMessage",
            "400",
            &["invalid_request", "invalid_content", "content_too_long"],
        ),
        ("sendAgentMessage", "409", &["not_assigned"]),
        (
            "agentConversations",
            "503",
            &["service_unavailable", "session_store_unavailable"],
        ),
        ("sessionMessages", "400", &["invalid_request"]),
        ("sessionMessages", "404", &["session_not_found"]),
        (
            "sessionMessages",
            "503",
            &["service_unavailable", "session_store_unavailable"],
        ),
        ("deleteSession", "404", &["session_not_found"]),
        ("deleteSession", "401", &bearer),
        ("saveReply", "400", &["invalid_request", "invalid_reply"]),
        ("saveReply", "409", &["too_many_replies"]),
        ("deleteReply", "404", &["reply_not_found"]),
        ("listReplies", "403", &["agent_only"]),
    ];
    let mut checked = 0;
    for (path, method, op) in operations(&spec) {
        let id = op["operationId"].as_str().unwrap();
        for (status, resp) in op["responses"].as_object().unwrap() {
            let Some(schema) = resp["content"]["application/json"].get("schema") else {
                continue;
            };
            let schema = resolve(&spec, schema);
            let Some(codes) = schema["properties"]["error"]["enum"].as_array() else {
                assert!(
                    // The health answers' 503s carry the health body itself.
                    status.starts_with('2') || id == "health" || id == "healthReady",
                    "{method} {path} {status}"
                );
                continue;
            };
            let codes: Vec<&str> = codes.iter().map(|c| c.as_str().unwrap()).collect();
            assert!(!codes.is_empty(), "{method} {path} {status}");
            for code in &codes {
                assert!(catalogue.contains(code), "{code} is in the catalogue");
            }
            assert_eq!(schema["required"], serde_json::json!(["error", "message"]));
            // The example is a body the response can carry.
            let example = &schema["example"];
            assert!(
                codes.contains(&example["error"].as_str().unwrap()),
                "{example}"
            );
            match status.as_str() {
                "413" => assert_eq!(codes, ["payload_too_large"]),
                "429" => assert_eq!(codes, ["rate_limited"]),
                "500" => assert_eq!(codes, ["internal_error"]),
                _ => {}
            }
            if let Some((.., want)) = expected.iter().find(|(o, s, _)| *o == id && *s == status) {
                assert_eq!(codes, *want, "{id} {status}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, expected.len(), "every expectation met a response");
}

#[test]
fn every_body_has_an_example_and_null_is_declared_where_it_is_sent() {
    let spec = spec_value();
    for (path, method, op) in operations(&spec) {
        let mut bodies = vec![];
        if let Some(req) = op.get("requestBody") {
            bodies.push(("request".to_owned(), &req["content"]));
        }
        for (status, resp) in op["responses"].as_object().unwrap() {
            if let Some(content) = resp.get("content") {
                bodies.push((status.clone(), content));
            }
        }
        for (what, content) in bodies {
            let media: Vec<&String> = content.as_object().unwrap().keys().collect();
            assert_eq!(media, ["application/json"], "{method} {path} {what}");
            let schema = resolve(&spec, &content["application/json"]["schema"]);
            assert!(
                schema.get("example").is_some(),
                "{method} {path} {what} has an example"
            );
        }
    }
    let schemas = &spec["components"]["schemas"];
    let last_login = &schemas["UserView"]["properties"]["lastLogin"];
    assert_eq!(last_login["nullable"], true);
    assert_eq!(last_login["format"], "date-time");
    assert!(schemas["UserView"]["example"]["lastLogin"].is_string());
    assert_eq!(
        schemas["LogoutRequest"]["properties"]["refreshToken"]["nullable"],
        true
    );
    // Constraints only where the domain enforces them.
    let register = &schemas["RegisterRequest"]["properties"];
    assert_eq!(register["username"]["minLength"], 3);
    assert_eq!(register["username"]["maxLength"], 32);
    assert_eq!(register["email"]["format"], "email");
    assert_eq!(register["password"]["minLength"], 8);
    assert_eq!(register["password"]["maxLength"], 128);
    let limit = &spec["paths"]["/api/sessions/{id}/events"]["get"]["parameters"][2];
    assert_eq!(limit["name"], "limit");
    assert_eq!(
        (
            limit["schema"]["minimum"].as_f64(),
            limit["schema"]["maximum"].as_f64()
        ),
        (Some(1.0), Some(1000.0))
    );
    let limit = &spec["paths"]["/api/sessions/{id}/messages"]["get"]["parameters"];
    let limit = limit
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(
        (
            limit["schema"]["minimum"].as_f64(),
            limit["schema"]["maximum"].as_f64()
        ),
        (Some(1.0), Some(200.0))
    );
    let message = &schemas["TranscriptMessage"]["properties"];
    assert_eq!(
        message["role"]["$ref"], "#/components/schemas/MessageRole",
        "{message}"
    );
    assert_eq!(
        schemas["MessageRole"]["enum"],
        serde_json::json!(["user", "assistant", "agent"])
    );
    let login = schemas["LoginRequest"]["properties"].as_object().unwrap();
    for field in login.values() {
        assert_eq!(
            field.as_object().unwrap().len(),
            field.get("description").map_or(1, |_| 2),
            "{field}"
        );
    }
}
