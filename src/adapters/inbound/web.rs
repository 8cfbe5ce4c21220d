//! The browser pages: the customer chat at `/`, the agent console at
//! `/agent` and their scripts and styles under `/assets/`, and the client
//! SDK's browser build at `/sdk/chatbot-server-client.js`, all compiled into
//! the binary (plain files from `web/`, and the bundle committed in
//! `clients/typescript/browser/`: no build step, no npm for `cargo build`).

use std::sync::OnceLock;

use poem::http::{header, HeaderValue, StatusCode};
use poem::web::Path;
use poem::{handler, Request, Response};
use sha2::{Digest, Sha256};

use super::errors::{ErrorBody, ErrorCode};

/// Scripts and styles come from this server only and nothing inline runs;
/// sockets and fetches go back to the same origin (CSP 3 lets `'self'` cover
/// `ws:`/`wss:` of it). No frames, no plugins, no foreign forms.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file served; the pages first, then `/assets/<name>`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: HTML,
        body: include_str!("../../../web/index.html"),
    },
    Asset {
        name: "agent.html",
        content_type: HTML,
        body: include_str!("../../../web/agent.html"),
    },
    Asset {
        name: "common.js",
        content_type: JS,
        body: include_str!("../../../web/common.js"),
    },
    Asset {
        name: "chat.js",
        content_type: JS,
        body: include_str!("../../../web/chat.js"),
    },
    Asset {
        name: "agent.js",
        content_type: JS,
        body: include_str!("../../../web/agent.js"),
    },
    Asset {
        name: "style.css",
        content_type: CSS,
        body: include_str!("../../../web/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: SVG,
        body: include_str!("../../../web/favicon.svg"),
    },
    Asset {
        name: SDK_NAME,
        content_type: JS,
        body: include_str!("../../../clients/typescript/browser/chatbot-server-client.js"),
    },
];

/// Where the SDK's browser build is served (as socket.io serves its client):
/// a page loads it with `import … from "/sdk/chatbot-server-client.js"`.
pub const SDK_PATH: &str = "/sdk/chatbot-server-client.js";
const SDK_NAME: &str = "chatbot-server-client.js";

/// The strong `ETag` of each asset, in [`ASSETS`] order: a digest of what the
/// binary holds, so a new build is seen at once and an unchanged file costs
/// a 304.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body.as_bytes());
                format!("\"{}\"", hex::encode(&digest[..12]))
            })
            .collect()
    })
}

/// `GET /`: the customer chat page.
#[handler]
pub fn customer_page(req: &Request) -> Response {
    serve("index.html", req)
}

/// `GET /agent`: the agent console.
#[handler]
pub fn agent_page(req: &Request) -> Response {
    serve("agent.html", req)
}

/// `GET /assets/<name>`: a script, style sheet or icon of the pages.
#[handler]
pub fn asset_file(Path(name): Path<String>, req: &Request) -> Response {
    // The pages are served at their own paths only, and so is the SDK.
    if name.ends_with(".html") || name == SDK_NAME {
        return ErrorBody::response(ErrorCode::NotFound);
    }
    serve(&name, req)
}

/// `GET /sdk/chatbot-server-client.js`: the client SDK's browser build (an
/// ES module), revalidated like the pages' own scripts.
#[handler]
pub fn sdk_file(req: &Request) -> Response {
    serve(SDK_NAME, req)
}

/// The named asset, or 304 when the browser's copy is current. Browsers
/// revalidate every time (`no-cache`): the files are small, and a page must
/// never run with a script from another build.
fn serve(name: &str, req: &Request) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return ErrorBody::response(ErrorCode::NotFound);
    };
    let file = &ASSETS[index];
    let etag = &etags()[index];
    let fresh = req
        .header(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let builder = Response::builder()
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::ETAG, etag.as_str())
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer");
    let builder = if file.content_type == HTML {
        builder
            .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
            .header(header::X_FRAME_OPTIONS, "DENY")
    } else {
        builder
    };
    if fresh {
        return builder.status(StatusCode::NOT_MODIFIED).finish();
    }
    builder
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static(file.content_type),
        )
        .body(file.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_name_and_tag() {
        let tags = etags();
        assert_eq!(tags.len(), ASSETS.len());
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            assert!(ASSETS.iter().skip(i + 1).all(|b| b.name != a.name));
            assert!(tags[i].starts_with('"') && tags[i].ends_with('"'));
        }
    }

    #[test]
    fn the_pages_load_only_files_that_are_served() {
        for page in ["index.html", "agent.html"] {
            let body = ASSETS.iter().find(|a| a.name == page).unwrap().body;
            // No inline script or style: the CSP would block it.
            assert!(!body.contains("<script>"), "{page} has an inline script");
            assert!(!body.contains("style="), "{page} has an inline style");
            for part in body.split("/assets/").skip(1) {
                let name: String = part.chars().take_while(|c| *c != '"').collect();
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{page} loads /assets/{name}, which is not served"
                );
            }
        }
    }

    #[test]
    fn the_scripts_import_the_sdk_from_where_it_is_served() {
        let sdk = ASSETS.iter().find(|a| a.name == SDK_NAME).unwrap();
        assert!(sdk.body.contains("ChatClient = class"));
        assert!(sdk.body.contains("AgentClient = class"));
        for page in ["chat.js", "agent.js"] {
            let body = ASSETS.iter().find(|a| a.name == page).unwrap().body;
            assert!(
                body.contains(&format!("from \"{SDK_PATH}\"")),
                "{page} does not import the SDK from {SDK_PATH}"
            );
        }
    }
}
