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
            "client.escalate()",
        ),
        (
            "/assets/agent.js",
            "text/javascript; charset=utf-8",
            "new AgentClient(",
        ),
        (
            "/assets/common.js",
            "text/javascript; charset=utf-8",
            "class Transcript",
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
async fn the_sdk_is_served_like_the_pages_scripts() {
    let app = spawn_app(&[]).await;
    let client = reqwest::Client::new();
    let path = "/sdk/chatbot-server-client.js";
    let resp = client.get(app.url(path)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-cache");
    assert!(!headers.contains_key("content-security-policy"));
    let body = resp.text().await.unwrap();
    // The committed browser build, byte for byte: an ES module with both clients.
    let committed = include_str!("../../clients/typescript/browser/chatbot-server-client.js");
    assert_eq!(body, committed);
    for needle in [
        "export {",
        "ChatClient",
        "AgentClient",
        "/api/auth/ws-ticket",
    ] {
        assert!(body.contains(needle), "the SDK lacks {needle}");
    }
    // Revalidated with its tag, as the pages' scripts are.
    let again = client
        .get(app.url(path))
        .header("if-none-match", headers["etag"].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    // Only at its own path; only GET and HEAD.
    let aside = client
        .get(app.url("/assets/chatbot-server-client.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(aside.status(), 404);
    let other = client.get(app.url("/sdk/other.js")).send().await.unwrap();
    assert_eq!(other.status(), 404);
    let post = client.post(app.url(path)).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    // The pages load it from there.
    for page in ["/assets/chat.js", "/assets/agent.js"] {
        let script = client.get(app.url(page)).send().await.unwrap();
        let text = script.text().await.unwrap();
        assert!(
            text.contains("from \"/sdk/chatbot-server-client.js\""),
            "{page}"
        );
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
