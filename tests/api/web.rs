//! The browser pages over real HTTP: what each path serves, with which
//! content type, security headers and cache validators. (What the pages do
//! in a browser is `.ci/e2e.sh`'s part.)

use crate::common;

use common::spawn_app;
use serde_json::Value;

#[tokio::test]
async fn the_pages_and_their_assets_are_served_with_their_types() {
    let app = spawn_app(&[]).await;
    let client = reqwest::Client::new();
    for (path, content_type, needle) in [
        ("/", "text/html; charset=utf-8", "/assets/chat.js"),
        ("/agent", "text/html; charset=utf-8", "/assets/agent.js"),
        (
            "/assets/chat.js",
            "text/javascript; charset=utf-8",
            "human-escalation",
        ),
        (
            "/assets/agent.js",
            "text/javascript; charset=utf-8",
            "watch",
        ),
        (
            "/assets/common.js",
            "text/javascript; charset=utf-8",
            "ws-ticket",
        ),
        ("/assets/style.css", "text/css; charset=utf-8", ".messages"),
        ("/assets/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let resp = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert!(headers.contains_key("etag"), "{path}");
        let is_page = content_type.starts_with("text/html");
        assert_eq!(
            headers.contains_key("content-security-policy"),
            is_page,
            "{path}"
        );
        let body = resp.text().await.unwrap();
        assert!(body.contains(needle), "{path} lacks {needle}");
    }
}

#[tokio::test]
async fn the_pages_forbid_inline_and_foreign_code() {
    let app = spawn_app(&[]).await;
    for path in ["/", "/agent"] {
        let resp = reqwest::get(app.url(path)).await.unwrap();
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp} lacks {directive}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(resp.headers()["x-frame-options"], "DENY");
    }
}

#[tokio::test]
async fn an_unchanged_asset_is_a_304() {
    let app = spawn_app(&[]).await;
    let client = reqwest::Client::new();
    let first = client.get(app.url("/assets/chat.js")).send().await.unwrap();
    let etag = first.headers()["etag"].clone();
    let again = client
        .get(app.url("/assets/chat.js"))
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag);
    assert!(again.text().await.unwrap().is_empty());
    // Another file's tag does not match.
    let other = client
        .get(app.url("/assets/agent.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn unknown_assets_and_wrong_methods_get_json_errors() {
    let app = spawn_app(&[]).await;
    let client = reqwest::Client::new();
    for path in [
        "/assets/nope.js",
        "/assets/index.html",
        "/assets/",
        "/agents",
    ] {
        let resp = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "not_found", "{path}: {body}");
    }
    for path in ["/", "/agent", "/assets/chat.js"] {
        let resp = client.post(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 405, "{path}");
        assert_eq!(resp.headers()["allow"], "GET, HEAD", "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed", "{path}: {body}");
    }
    let head = client.head(app.url("/")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "text/html; charset=utf-8");
}
