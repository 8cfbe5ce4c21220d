//! The AsyncAPI document (`asyncapi/asyncapi.yaml`) cannot drift from the
//! server: per socket and direction its message types are exactly the
//! server's own, its error codes the catalogue's, its examples fit their
//! schemas, and every frame of a real conversation with a spawned server (a
//! customer on `/ws`, an agent on `/agent/ws`) fits the schema of its type,
//! with no field the document does not declare.
//!
//! After adding a message type or a field: describe it in the document.

use crate::common;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use chatbot_server::adapters::inbound::errors::ErrorCode;
use chatbot_server::adapters::inbound::ws::agent_protocol::{
    AGENT_CLIENT_MESSAGE_TYPES, AGENT_SERVER_MESSAGE_TYPES,
};
use chatbot_server::adapters::inbound::ws::protocol::{CLIENT_MESSAGE_TYPES, SERVER_MESSAGE_TYPES};
use common::{spawn_app, TestApp, Upstream, WsClient};
use serde_json::{json, Value};

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/asyncapi/asyncapi.yaml");

const CUSTOMER: &str = "/ws";
const AGENT: &str = "/agent/ws";

/// Who sends a message, in the document's words (it describes the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Direction {
    /// `action: receive`: the client sends it.
    FromClient,
    /// `action: send`: the server sends it.
    FromServer,
}

/// The document, with each message's payload schema per socket, direction
/// and `type`.
struct Spec {
    doc: Value,
    messages: BTreeMap<(String, Direction), BTreeMap<String, Value>>,
}

impl Spec {
    fn load() -> Self {
        let text = std::fs::read_to_string(DOC_PATH).expect("asyncapi/asyncapi.yaml exists");
        let doc: Value = serde_yaml_ng::from_str(&text).expect("asyncapi/asyncapi.yaml is YAML");
        assert_eq!(doc["asyncapi"], "3.0.0", "an AsyncAPI 3.0.0 document");
        let mut messages: BTreeMap<(String, Direction), BTreeMap<String, Value>> = BTreeMap::new();
        let operations = doc["operations"].as_object().expect("operations");
        for (name, op) in operations {
            let direction = match op["action"].as_str() {
                Some("receive") => Direction::FromClient,
                Some("send") => Direction::FromServer,
                other => panic!("operation {name}: action {other:?}"),
            };
            let channel = resolve(&doc, &op["channel"]);
            let address = channel["address"].as_str().expect("channel address");
            let listed = op["messages"].as_array().expect("operation messages");
            for message in listed {
                let message = resolve(&doc, message);
                let payload = message["payload"].clone();
                let kind = message_type(&doc, &payload)
                    .unwrap_or_else(|| panic!("operation {name}: a payload without a const type"));
                assert_eq!(
                    message["name"].as_str(),
                    Some(kind.as_str()),
                    "a message's name is its type"
                );
                let by_type = messages.entry((address.to_owned(), direction)).or_default();
                let twice = by_type.insert(kind.clone(), payload).is_some();
                assert!(!twice, "{address} {direction:?}: {kind} listed twice");
            }
        }
        Self { doc, messages }
    }

    fn types(&self, socket: &str, direction: Direction) -> BTreeSet<&str> {
        self.messages
            .get(&(socket.to_owned(), direction))
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Why `frame` does not fit the schema of its type, if it does not.
    fn violations(&self, socket: &str, direction: Direction, frame: &Value) -> Vec<String> {
        let Some(kind) = frame["type"].as_str() else {
            return vec![format!("no string type: {frame}")];
        };
        let Some(schema) = self
            .messages
            .get(&(socket.to_owned(), direction))
            .and_then(|m| m.get(kind))
        else {
            return vec![format!(
                "{socket} {direction:?} has no message of type {kind}"
            )];
        };
        let mut errors = Vec::new();
        Validator {
            doc: &self.doc,
            errors: &mut errors,
        }
        .check(schema, frame, "$", true);
        errors
    }

    fn check(&self, socket: &str, direction: Direction, frame: &Value) {
        let violations = self.violations(socket, direction, frame);
        assert!(
            violations.is_empty(),
            "{socket} {direction:?} frame does not fit asyncapi/asyncapi.yaml: {violations:#?}\n{frame}"
        );
    }
}

/// Follows local `$ref`s (`#/a/b`) until a value that is not one.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
            return value;
        };
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local references: {reference}"));
        value = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling reference {reference}"));
    }
    panic!("a reference cycle")
}

/// The `type` a payload schema fixes with `const`, directly or in an `allOf`.
fn message_type(doc: &Value, payload: &Value) -> Option<String> {
    let schema = resolve(doc, payload);
    if let Some(kind) = schema["properties"]["type"]["const"].as_str() {
        return Some(kind.to_owned());
    }
    schema["allOf"]
        .as_array()?
        .iter()
        .find_map(|part| message_type(doc, part))
}

/// The subset of JSON Schema the document uses, checked strictly: a keyword
/// it does not know fails the test (rather than being silently ignored), and
/// an object may hold only the properties its schema declares.
struct Validator<'a> {
    doc: &'a Value,
    errors: &'a mut Vec<String>,
}

/// Keywords that only describe.
const ANNOTATIONS: &[&str] = &["description", "title", "examples"];

impl Validator<'_> {
    fn fail(&mut self, at: &str, why: impl std::fmt::Display) {
        self.errors.push(format!("{at}: {why}"));
    }

    /// `closed`: properties not declared here (or in an `allOf` part) are
    /// errors; parts of an `allOf` are checked open, the whole closed.
    fn check(&mut self, schema: &Value, value: &Value, at: &str, closed: bool) {
        let schema = resolve(self.doc, schema);
        let Some(keywords) = schema.as_object() else {
            return self.fail(at, format_args!("schema is not an object: {schema}"));
        };
        for (keyword, arg) in keywords {
            match keyword.as_str() {
                k if ANNOTATIONS.contains(&k) => {}
                "allOf" => {
                    for part in arg.as_array().into_iter().flatten() {
                        self.check(part, value, at, false);
                    }
                }
                "oneOf" => self.one_of(arg, value, at),
                "type" => self.type_is(arg, value, at),
                "const" if value != arg => self.fail(at, format_args!("{value} is not {arg}")),
                "enum" if !arg.as_array().is_some_and(|a| a.contains(value)) => {
                    self.fail(at, format_args!("{value} is not one of {arg}"));
                }
                "const" | "enum" => {}
                "required" => {
                    for name in arg.as_array().into_iter().flatten() {
                        let name = name.as_str().unwrap_or_default();
                        if value.is_object() && value.get(name).is_none() {
                            self.fail(at, format_args!("missing required {name}"));
                        }
                    }
                }
                "properties" => {
                    for (name, sub) in arg.as_object().into_iter().flatten() {
                        if let Some(v) = value.get(name) {
                            self.check(sub, v, &format!("{at}.{name}"), true);
                        }
                    }
                }
                "items" => {
                    for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                        self.check(arg, item, &format!("{at}[{i}]"), true);
                    }
                }
                "minimum" => {
                    if value.as_f64().zip(arg.as_f64()).is_some_and(|(v, m)| v < m) {
                        self.fail(at, format_args!("{value} < {arg}"));
                    }
                }
                "minLength" | "maxLength" | "pattern" | "format" => {
                    self.string_rule(keyword, arg, value, at)
                }
                other => self.fail(at, format_args!("the test knows no keyword {other}")),
            }
        }
        // A `oneOf`'s options were each checked closed.
        if closed && schema.get("oneOf").is_none() {
            if let Some(fields) = value.as_object() {
                let declared = self.declared(schema);
                for name in fields.keys().filter(|n| !declared.contains(*n)) {
                    self.fail(at, format_args!("{name} is not in the document"));
                }
            }
        }
    }

    /// The property names a schema declares, with its `allOf` parts'.
    fn declared(&self, schema: &Value) -> BTreeSet<String> {
        let schema = resolve(self.doc, schema);
        let mut names: BTreeSet<String> = schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for part in schema["allOf"].as_array().into_iter().flatten() {
            names.extend(self.declared(part));
        }
        names
    }

    fn one_of(&mut self, options: &Value, value: &Value, at: &str) {
        let fitting = options
            .as_array()
            .into_iter()
            .flatten()
            .filter(|option| {
                let mut errors = Vec::new();
                Validator {
                    doc: self.doc,
                    errors: &mut errors,
                }
                .check(option, value, at, true);
                errors.is_empty()
            })
            .count();
        if fitting != 1 {
            self.fail(at, format_args!("{value} fits {fitting} oneOf options"));
        }
    }

    fn type_is(&mut self, expected: &Value, value: &Value, at: &str) {
        let fits = |t: &Value| match t.as_str() {
            Some("object") => value.is_object(),
            Some("array") => value.is_array(),
            Some("string") => value.is_string(),
            Some("integer") => value.is_u64() || value.is_i64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            Some("null") => value.is_null(),
            _ => false,
        };
        let ok = match expected {
            Value::Array(types) => types.iter().any(fits),
            single => fits(single),
        };
        if !ok {
            self.fail(at, format_args!("{value} is not of type {expected}"));
        }
    }

    fn string_rule(&mut self, keyword: &str, arg: &Value, value: &Value, at: &str) {
        let Some(s) = value.as_str() else { return };
        let chars = s.chars().count() as u64;
        let ok = match (keyword, arg) {
            ("minLength", Value::Number(n)) => n.as_u64().is_some_and(|n| chars >= n),
            ("maxLength", Value::Number(n)) => n.as_u64().is_some_and(|n| chars <= n),
            ("pattern", Value::String(p)) => matches_pattern(p, s),
            ("format", Value::String(f)) if f == "date-time" => {
                chrono::DateTime::parse_from_rfc3339(s).is_ok()
            }
            ("format", Value::String(f)) if f == "email" => s.contains('@'),
            _ => {
                return self.fail(at, format_args!("the test knows no {keyword} {arg}"));
            }
        };
        if !ok {
            self.fail(at, format_args!("{value} breaks {keyword} {arg}"));
        }
    }
}

/// The document's patterns are all `^[...]+$` character classes.
fn matches_pattern(pattern: &str, s: &str) -> bool {
    let class = pattern
        .strip_prefix("^[")
        .and_then(|p| p.strip_suffix("]+$"))
        .unwrap_or_else(|| panic!("the test knows only ^[...]+$ patterns, not {pattern}"));
    let mut allowed: Vec<(char, char)> = Vec::new();
    let chars: Vec<char> = class.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if i + 2 < chars.len() && chars[i + 1] == '-' {
            allowed.push((chars[i], chars[i + 2]));
            i += 3;
        } else {
            allowed.push((chars[i], chars[i]));
            i += 1;
        }
    }
    !s.is_empty()
        && s.chars()
            .all(|c| allowed.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)))
}

fn sorted(types: &[&'static str]) -> BTreeSet<&'static str> {
    types.iter().copied().collect()
}

#[test]
fn each_socket_and_direction_has_exactly_the_servers_message_types() {
    let spec = Spec::load();
    let expected = [
        (CUSTOMER, Direction::FromClient, CLIENT_MESSAGE_TYPES),
        (CUSTOMER, Direction::FromServer, SERVER_MESSAGE_TYPES),
        (AGENT, Direction::FromClient, AGENT_CLIENT_MESSAGE_TYPES),
        (AGENT, Direction::FromServer, AGENT_SERVER_MESSAGE_TYPES),
    ];
    for (socket, direction, code) in expected {
        let documented = spec.types(socket, direction);
        let code = sorted(code);
        let undocumented: Vec<_> = code.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&code).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "{socket} {direction:?}: the server has {undocumented:?} that asyncapi/asyncapi.yaml \
             lacks, and the document has {unknown:?} that the server does not know"
        );
    }
    let sockets: BTreeSet<&str> = spec.messages.keys().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sockets, BTreeSet::from([CUSTOMER, AGENT]));
}

#[test]
fn error_codes_are_the_catalogues_websocket_codes() {
    let spec = Spec::load();
    let documented: BTreeSet<&str> = spec.doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("an ErrorCode enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let catalogue: BTreeSet<&str> = ErrorCode::websocket_codes()
        .map(ErrorCode::as_str)
        .collect();
    assert_eq!(
        documented, catalogue,
        "components.schemas.ErrorCode in asyncapi/asyncapi.yaml must list exactly the codes \
         src/adapters/inbound/errors.rs marks `websocket: true`"
    );
}

#[test]
fn every_message_is_used_and_its_examples_fit() {
    let spec = Spec::load();
    let messages = spec.doc["components"]["messages"]
        .as_object()
        .expect("components.messages");
    let mut checked = 0;
    for (name, message) in messages {
        let places: Vec<_> = spec
            .messages
            .iter()
            .filter(|(_, by_type)| by_type.values().any(|p| *p == message["payload"]))
            .map(|(place, _)| place)
            .collect();
        assert!(!places.is_empty(), "message {name} is in no operation");
        for example in message["examples"].as_array().into_iter().flatten() {
            for (socket, direction) in &places {
                spec.check(socket, *direction, &example["payload"]);
                checked += 1;
            }
        }
    }
    assert!(checked >= 40, "only {checked} examples checked");
}

/// A `## ` section of the README, up to the next.
fn readme_section<'a>(readme: &'a str, title: &str) -> &'a str {
    let start = readme
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README has a {title} section"));
    let section = &readme[start + 1..];
    &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)]
}

#[test]
fn the_readme_links_the_document_and_names_every_message() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let protocol = readme_section(&readme, "WebSocket protocol");
    let handoff = readme_section(&readme, "Human handoff");
    for section in [protocol, handoff] {
        assert!(
            section.contains("(asyncapi/asyncapi.yaml)"),
            "the README's {} section links asyncapi/asyncapi.yaml",
            section.lines().next().unwrap_or_default()
        );
    }
    let spec = Spec::load();
    let named = |kind: &str| {
        [protocol, handoff].iter().any(|section| {
            section.contains(&format!("`{kind}`"))
                || section.contains(&format!("\"type\":\"{kind}\""))
        })
    };
    let unnamed: BTreeSet<&str> = spec
        .messages
        .values()
        .flat_map(|by_type| by_type.keys())
        .map(String::as_str)
        .filter(|kind| !named(kind))
        .collect();
    assert!(
        unnamed.is_empty(),
        "the README's WebSocket protocol and Human handoff sections never name {unnamed:?}"
    );
}

#[test]
fn the_checker_refuses_what_the_document_does_not_say() {
    let spec = Spec::load();
    let pong = json!({"type": "pong", "timestamp": "2025-09-12T10:30:00.000Z"});
    assert!(spec
        .violations(CUSTOMER, Direction::FromServer, &pong)
        .is_empty());
    let bad = [
        json!({"type": "pong"}),
        json!({"type": "pong", "timestamp": "yesterday"}),
        json!({"type": "pong", "timestamp": "2025-09-12T10:30:00.000Z", "extra": 1}),
        json!({"type": "stream-end", "seq": 1, "messageId": "m", "status": "done", "timestamp": "2025-09-12T10:30:00.000Z"}),
        json!({"type": "ack", "clientMessageId": "a b", "messageId": "m", "seq": 1, "timestamp": "2025-09-12T10:30:00.000Z"}),
        json!({"type": "dance", "timestamp": "2025-09-12T10:30:00.000Z"}),
    ];
    for frame in bad {
        assert!(
            !spec
                .violations(CUSTOMER, Direction::FromServer, &frame)
                .is_empty(),
            "{frame} passed"
        );
    }
    // A conversation event on the agent socket needs its sessionId.
    let joined = json!({"type": "agent-joined", "seq": 3, "agent": {"id": "u1", "username": "bob"}, "timestamp": "2025-09-12T10:30:00.000Z"});
    assert!(spec
        .violations(CUSTOMER, Direction::FromServer, &joined)
        .is_empty());
    assert!(!spec
        .violations(AGENT, Direction::FromServer, &joined)
        .is_empty());
}

/// The types each socket has received.
type Seen = RefCell<BTreeSet<(&'static str, String)>>;

/// A socket whose every frame, both ways, is checked against the document,
/// remembering the types the server sent.
struct Checked<'a> {
    spec: &'a Spec,
    socket: &'static str,
    ws: WsClient,
    seen: &'a Seen,
}

impl Checked<'_> {
    async fn send(&mut self, frame: Value) {
        self.spec.check(self.socket, Direction::FromClient, &frame);
        self.ws.send_json(frame).await;
    }

    /// A frame the server must refuse: not a message of the document.
    async fn send_invalid(&mut self, frame: Value) {
        assert!(!self
            .spec
            .violations(self.socket, Direction::FromClient, &frame)
            .is_empty());
        self.ws.send_json(frame).await;
    }

    async fn recv(&mut self) -> Value {
        let frame = self.ws.recv_any().await;
        self.spec.check(self.socket, Direction::FromServer, &frame);
        let kind = frame["type"].as_str().unwrap_or_default().to_owned();
        self.seen.borrow_mut().insert((self.socket, kind));
        frame
    }

    /// Reads until a frame of `kind` (every frame on the way checked too).
    async fn until(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Reads until a frame of each of `kinds` has come, in any order.
    async fn until_each(&mut self, kinds: &[&str]) {
        let mut waiting: BTreeSet<&str> = kinds.iter().copied().collect();
        while !waiting.is_empty() {
            let frame = self.recv().await;
            waiting.remove(frame["type"].as_str().unwrap_or_default());
        }
    }

    /// Reads until `pred` holds.
    async fn until_fits(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let frame = self.recv().await;
            if pred(&frame) {
                return frame;
            }
        }
    }
}

/// A spawned server, and the document its frames are checked against.
struct Scene<'a> {
    spec: &'a Spec,
    seen: &'a Seen,
    app: TestApp,
}

impl<'a> Scene<'a> {
    async fn start(spec: &'a Spec, seen: &'a Seen, env: &[(&str, &str)]) -> Self {
        Self {
            spec,
            seen,
            app: spawn_app(env).await,
        }
    }

    /// Opens `socket` with `query` and reads its `connected`.
    async fn open(&self, socket: &'static str, query: &str) -> (Checked<'a>, Value) {
        let url = format!("ws://{}{socket}?{query}", self.app.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("socket connects");
        let mut checked = Checked {
            spec: self.spec,
            socket,
            ws: WsClient { ws },
            seen: self.seen,
        };
        let hello = checked.recv().await;
        assert_eq!(hello["type"], "connected", "{hello}");
        (checked, hello)
    }

    async fn post(&self, token: &str, path: &str) -> u16 {
        reqwest::Client::new()
            .post(self.app.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

#[tokio::test]
async fn a_whole_handoff_conversation_fits_the_document_frame_by_frame() {
    let spec = Spec::load();
    let seen = Seen::default();
    // The conversations wait in the queue even while no console is open.
    let queue = [("HANDOFF", "on"), ("HANDOFF_WHEN_NO_AGENT_ONLINE", "queue")];
    main_conversation(&Scene::start(&spec, &seen, &queue).await).await;
    let timeout = [("HANDOFF_QUEUE_TIMEOUT", "2s"), queue[0], queue[1]];
    queue_timeout(&Scene::start(&spec, &seen, &timeout).await).await;
    let short = [("EVENT_LOG_LIMIT", "2"), queue[0], queue[1]];
    trimmed_history(&Scene::start(&spec, &seen, &short).await).await;
    nobody_online(&Scene::start(&spec, &seen, &[]).await).await;
    let upstream = Upstream::start().await;
    let thinking = [
        ("FASTAPI_URL", upstream.url.as_str()),
        ("RELAY_REASONING", "true"),
        ("RELAY_TOOL_ARGUMENTS", "true"),
        queue[0],
        queue[1],
    ];
    answer_parts(&Scene::start(&spec, &seen, &thinking).await).await;
    let seen = seen.into_inner();

    // What the conversations here cannot bring about.
    let not_driven = BTreeSet::from([(CUSTOMER, "session-lost")]);
    for (socket, types) in [
        (CUSTOMER, SERVER_MESSAGE_TYPES),
        (AGENT, AGENT_SERVER_MESSAGE_TYPES),
    ] {
        let missed: Vec<_> = types
            .iter()
            .filter(|t| !seen.contains(&(socket, (**t).to_owned())))
            .filter(|t| !not_driven.contains(&(socket, **t)))
            .collect();
        assert!(
            missed.is_empty(),
            "{socket}: no {missed:?} was seen; drive it in this test"
        );
    }
}

/// A customer chats with the bot, asks for a human, cancels, asks again; an
/// agent claims, they talk, the agent releases, claims again through REST,
/// resolves; both sides then replay the whole conversation.
async fn main_conversation(scene: &Scene<'_>) {
    let carol = scene.app.register("carol").await;
    let ann = scene.app.register_agent("agentann").await;
    let session = customer_asks_for_a_human(scene, &carol).await;
    // A second customer waits behind Carol and moves up when she is taken.
    let zed = scene.app.register("zed").await;
    let (mut behind, hello) = scene.open(CUSTOMER, &format!("token={zed}")).await;
    behind.send(json!({"type": "human-escalation"})).await;
    assert_eq!(behind.until("handoff-queued").await["position"], 2);
    agent_claims(scene, &ann, &session).await;
    assert_eq!(behind.until("queue-position").await["position"], 1);
    let second = hello["sessionId"].as_str().unwrap().to_owned();
    agent_replays_a_wait(scene, &ann, &second).await;
    typing_both_ways(scene, &carol, &ann, &session).await;

    let (mut tab, hello) = scene
        .open(CUSTOMER, &format!("token={carol}&sessionId={session}"))
        .await;
    assert_eq!(hello["mode"], "assigned", "{hello}");
    tab.send(json!({"type": "chat", "content": "my order is late", "clientMessageId": "c-2"}))
        .await;
    tab.until("ack").await;
    drop(tab);

    agent_talks_releases_and_resolves(scene, &ann, &session).await;
    both_sides_replay(scene, &carol, &ann, &session).await;
}

/// Returns the session, queued for a human.
async fn customer_asks_for_a_human(scene: &Scene<'_>, token: &str) -> String {
    let (mut tab, hello) = scene.open(CUSTOMER, &format!("token={token}")).await;
    tab.send(json!({"type": "ping"})).await;
    tab.until("pong").await;
    tab.send(json!({"type": "auth", "token": token})).await;
    tab.until("authenticated").await;
    tab.send_invalid(json!({"type": "dance"})).await;
    assert_eq!(tab.until("error").await["code"], "unknown_type");
    tab.send(json!({"type": "chat", "content": "hello there", "clientMessageId": "c-1"}))
        .await;
    let answered = tab.until("stream-end").await;
    let answer = answered["messageId"].as_str().unwrap().to_owned();
    tab.send(
        json!({"type": "feedback", "messageId": answer, "rating": "down", "comment": "too vague"}),
    )
    .await;
    tab.until_each(&["ack", "feedback"]).await;
    tab.send_invalid(json!({"type": "feedback", "messageId": answer, "rating": "meh"}))
        .await;
    assert_eq!(tab.until("error").await["code"], "invalid_feedback");
    tab.send(json!({"type": "regenerate"})).await;
    tab.until("stream-end").await;
    tab.send(json!({"type": "stop"})).await;
    assert_eq!(tab.until("error").await["code"], "no_active_generation");
    tab.send(json!({"type": "human-escalation", "message": "a human, please"}))
        .await;
    tab.until("handoff-queued").await;
    tab.send(json!({"type": "chat", "content": "is anyone there?"}))
        .await;
    assert_eq!(tab.until("handoff-waiting").await["position"], 1);
    tab.send(json!({"type": "handoff-cancel"})).await;
    tab.until("handoff-cancelled").await;
    tab.send(json!({"type": "human-escalation"})).await;
    tab.until("handoff-queued").await;
    hello["sessionId"].as_str().unwrap().to_owned()
}

async fn agent_claims(scene: &Scene<'_>, token: &str, session: &str) {
    let (mut console, _) = scene.open(AGENT, &format!("token={token}")).await;
    console.until("queue").await;
    console.send(json!({"type": "ping"})).await;
    console.until("pong").await;
    console.send(json!({"type": "auth", "token": token})).await;
    console.until("authenticated").await;
    for status in ["away", "available"] {
        console
            .send(json!({"type": "status", "status": status}))
            .await;
        assert_eq!(console.until("status").await["status"], status);
    }
    console
        .send_invalid(json!({"type": "claim", "requestId": "r0"}))
        .await;
    assert_eq!(console.until("error").await["code"], "invalid_message");
    console
        .send(json!({"type": "claim", "sessionId": session, "requestId": "r1"}))
        .await;
    // The customer said something first, so the echo model summarises it.
    console
        .until_each(&["ack", "agent-joined", "handoff-summary"])
        .await;
}

/// The customer types, the agent hears it; the agent types, the customer
/// hears it (live only, so each side is attached before the other types).
async fn typing_both_ways(scene: &Scene<'_>, customer: &str, agent: &str, session: &str) {
    let (mut console, _) = scene.open(AGENT, &format!("token={agent}")).await;
    console
        .send(json!({"type": "watch", "sessionId": session, "lastSeq": 0}))
        .await;
    console.until("agent-joined").await;
    let (mut tab, _) = scene
        .open(CUSTOMER, &format!("token={customer}&sessionId={session}"))
        .await;
    tab.send(json!({"type": "typing", "state": true})).await;
    console.until("typing").await;
    console
        .send(json!({"type": "typing", "sessionId": session, "state": true}))
        .await;
    tab.until("typing").await;
}

/// The agent takes a conversation that moved up the line, and its `watch`
/// replays the move.
async fn agent_replays_a_wait(scene: &Scene<'_>, token: &str, session: &str) {
    let (mut console, _) = scene.open(AGENT, &format!("token={token}")).await;
    console
        .send(json!({"type": "claim", "sessionId": session}))
        .await;
    console.until("ack").await;
    console
        .send(json!({"type": "watch", "sessionId": session, "lastSeq": 0}))
        .await;
    console
        .until_fits(|m| m["type"] == "queue-position" && m["sessionId"] == session)
        .await;
    console
        .send(json!({"type": "resolve", "sessionId": session}))
        .await;
    console.until("ack").await;
}

async fn agent_talks_releases_and_resolves(scene: &Scene<'_>, token: &str, session: &str) {
    let (mut console, hello) = scene.open(AGENT, &format!("token={token}")).await;
    assert_eq!(hello["conversations"][0]["sessionId"], session);
    console
        .send(json!({"type": "agent-message", "sessionId": session, "content": "On its way.", "clientMessageId": "a-1"}))
        .await;
    console.until("ack").await;
    console
        .send(json!({"type": "release", "sessionId": session}))
        .await;
    console.until("ack").await;
    // Claimed and released through the REST mirror: this socket is told.
    let path = format!("/api/agent/conversations/{session}");
    assert_eq!(scene.post(token, &format!("{path}/claim")).await, 200);
    console.until("conversation-assigned").await;
    assert_eq!(scene.post(token, &format!("{path}/release")).await, 200);
    console.until("conversation-removed").await;
    console
        .send(json!({"type": "claim", "sessionId": session}))
        .await;
    console.until("ack").await;
    console
        .send(json!({"type": "resolve", "sessionId": session}))
        .await;
    console.until("ack").await;
}

/// The customer's tab replays the whole conversation; after the customer
/// asks again and the agent claims again, the agent's `watch` replays it
/// all too, each event with the `sessionId`.
async fn both_sides_replay(scene: &Scene<'_>, customer: &str, agent: &str, session: &str) {
    let resume = format!("token={customer}&sessionId={session}");
    // The agent who resolved it hears the customer's rating.
    let (mut rated, _) = scene.open(AGENT, &format!("token={agent}")).await;
    rated.until("queue").await;
    let (mut tab, _) = scene.open(CUSTOMER, &format!("{resume}&lastSeq=0")).await;
    tab.until("handoff-resolved").await;
    tab.until("csat-request").await;
    tab.send_invalid(json!({"type": "csat", "rating": 9})).await;
    assert_eq!(tab.until("error").await["code"], "invalid_csat");
    tab.send(json!({"type": "csat", "rating": 4, "comment": "quick"}))
        .await;
    tab.until_each(&["ack", "csat"]).await;
    rated.until("csat").await;
    tab.send(json!({"type": "human-escalation"})).await;
    tab.until("handoff-queued").await;
    let (mut ahead, _) = scene
        .open(CUSTOMER, &format!("{resume}&lastSeq=9999"))
        .await;
    assert_eq!(ahead.until("error").await["code"], "last_seq_ahead");

    let (mut console, _) = scene.open(AGENT, &format!("token={agent}")).await;
    console
        .send(json!({"type": "claim", "sessionId": session, "requestId": "r2"}))
        .await;
    console.until("ack").await;
    console
        .send(json!({"type": "watch", "sessionId": session, "lastSeq": 0}))
        .await;
    console
        .until_fits(|m| m["type"] == "handoff-resolved" && m["sessionId"] == session)
        .await;
    console.until("agent-joined").await;
}

/// An answer with reasoning (relayed), two tool calls and usage, then the
/// customer's `quota`; an agent who claims the conversation later is
/// replayed its parts.
async fn answer_parts(scene: &Scene<'_>) {
    let erin = scene.app.register("erin").await;
    let cal = scene.app.register_agent("agentcal").await;
    let (mut tab, hello) = scene.open(CUSTOMER, &format!("token={erin}")).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    tab.send(json!({"type": "chat", "content": "think-and-call"}))
        .await;
    tab.until_each(&["stream-status", "stream-reasoning", "tool-activity"])
        .await;
    assert!(tab.until("stream-end").await["usage"].is_object());
    tab.until("quota").await;
    tab.send(json!({"type": "human-escalation"})).await;
    tab.until("handoff-queued").await;
    let (mut console, _) = scene.open(AGENT, &format!("token={cal}")).await;
    console
        .send(json!({"type": "claim", "sessionId": session, "requestId": "r3"}))
        .await;
    console.until("ack").await;
    console
        .send(json!({"type": "watch", "sessionId": session, "lastSeq": 0}))
        .await;
    console
        .until_each(&["stream-status", "stream-reasoning", "tool-activity"])
        .await;
}

/// Nobody claims within `HANDOFF_QUEUE_TIMEOUT`: `handoff-timeout`, on both
/// sockets (the agent's by `watch` after a later claim); then the agent is
/// demoted.
async fn queue_timeout(scene: &Scene<'_>) {
    let dan = scene.app.register("dan").await;
    let bea = scene.app.register_agent("agentbea").await;
    let (mut tab, hello) = scene.open(CUSTOMER, &format!("token={dan}")).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    tab.send(json!({"type": "human-escalation"})).await;
    tab.until("handoff-timeout").await;
    let (mut console, _) = scene.open(AGENT, &format!("token={bea}")).await;
    tab.send(json!({"type": "human-escalation"})).await;
    console
        .until_fits(|m| {
            m["type"] == "queue"
                && m["items"]
                    .as_array()
                    .is_some_and(|items| items.iter().any(|i| i["sessionId"] == session.as_str()))
        })
        .await;
    console
        .send(json!({"type": "claim", "sessionId": session}))
        .await;
    console.until("ack").await;
    console
        .send(json!({"type": "watch", "sessionId": session, "lastSeq": 0}))
        .await;
    console.until("handoff-timeout").await;
    // Demoted, the agent's next action is refused on the open socket.
    scene.app.set_role("agentbea", "user").await;
    console
        .send(json!({"type": "resolve", "sessionId": session}))
        .await;
    assert_eq!(console.until("error").await["code"], "agent_only");
}

/// Agents exist but none is online (the defaults): `handoff-unavailable`;
/// once a console is open the request reaches the queue, and the agent's
/// `watch` replays the earlier answer too.
async fn nobody_online(scene: &Scene<'_>) {
    let fay = scene.app.register("fay").await;
    let dee = scene.app.register_agent("agentdee").await;
    let (mut tab, hello) = scene.open(CUSTOMER, &format!("token={fay}")).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    tab.send(json!({"type": "human-escalation"})).await;
    assert_eq!(
        tab.until("handoff-unavailable").await["reason"],
        "no_agent_online"
    );
    let (mut console, _) = scene.open(AGENT, &format!("token={dee}")).await;
    tab.send(json!({"type": "human-escalation"})).await;
    tab.until("handoff-queued").await;
    console
        .send(json!({"type": "claim", "sessionId": session}))
        .await;
    console.until("ack").await;
    console
        .send(json!({"type": "watch", "sessionId": session, "lastSeq": 0}))
        .await;
    console.until("handoff-unavailable").await;
}

/// Resuming further back than the log holds: `history-lost` on both sockets.
async fn trimmed_history(scene: &Scene<'_>) {
    let eve = scene.app.register("eve").await;
    let cal = scene.app.register_agent("agentcal").await;
    let (mut tab, hello) = scene.open(CUSTOMER, &format!("token={eve}")).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        tab.send(json!({"type": "chat", "content": "one two three four"}))
            .await;
        tab.until("stream-end").await;
    }
    tab.send(json!({"type": "human-escalation"})).await;
    tab.until("handoff-queued").await;
    let resume = format!("token={eve}&sessionId={session}&lastSeq=1");
    let (mut other_tab, _) = scene.open(CUSTOMER, &resume).await;
    other_tab.until("history-lost").await;
    let (mut console, _) = scene.open(AGENT, &format!("token={cal}")).await;
    console
        .send(json!({"type": "claim", "sessionId": session}))
        .await;
    console.until("ack").await;
    console
        .send(json!({"type": "watch", "sessionId": session, "lastSeq": 1}))
        .await;
    console.until("history-lost").await;
}
