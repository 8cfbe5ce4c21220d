//! The migration path from the Node.js server, end to end on a MongoDB-wire
//! server (`MONGODB_URI`; CI starts SecantusDB): users written the way the
//! Node.js server (Mongoose + bcryptjs) writes them log in to the real
//! binary, their hashes are upgraded in place, new users register beside
//! them, conversations reach the transcript, `users set-role` makes an agent,
//! and all of it survives a restart. Without `MONGODB_URI` it says SKIPPED,
//! and fails under `CI`.

use crate::common;

use std::time::Duration;

use common::{spawn_process, TestProcess, TEST_SECRET};
use mongodb::bson::{doc, oid::ObjectId, DateTime as BsonDate, Document};
use serde_json::{json, Value};

/// `MONGODB_URI` pointed at a database of this test's own.
fn database_uri(database: &str) -> Option<String> {
    let uri = std::env::var("MONGODB_URI")
        .ok()
        .filter(|u| !u.trim().is_empty());
    let Some(uri) = uri else {
        assert!(
            std::env::var_os("CI").is_none(),
            "MONGODB_URI must be set in CI (.ci/run starts SecantusDB)"
        );
        eprintln!("SKIPPED the Node.js migration test: MONGODB_URI is not set");
        return None;
    };
    let (scheme, rest) = uri.trim().split_once("://").expect("a mongodb:// URI");
    let hosts = rest.split(['/', '?']).next().unwrap_or(rest);
    Some(format!(
        "{scheme}://{hosts}/{database}?serverSelectionTimeoutMS=5000"
    ))
}

/// A user as the Node.js server stored it: bcryptjs hash, Mongoose's `__v`,
/// `isActive`, no `role`, no `usernameLower`.
fn node_user(username: &str, password: &str, prefix: &str) -> Document {
    let hash = bcrypt::hash(password, 4).unwrap();
    // bcryptjs wrote `$2a$`; the algorithm is the same for these passwords.
    let hash = format!("{prefix}{}", &hash[4..]);
    doc! {
        "_id": ObjectId::new(),
        "username": username,
        "password": hash,
        "email": format!("{username}@example.com"),
        "createdAt": BsonDate::from_millis(1_700_000_000_000),
        "lastLogin": null,
        "isActive": true,
        "__v": 0,
    }
}

async fn login(app: &TestProcess, name: &str, password: &str) -> (u16, Value) {
    app.post(
        "/api/auth/login",
        json!({"username": name, "password": password}),
    )
    .await
}

async fn set_role(uri: &str, name: &str, role: &str) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatbot-server"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("JWT_SECRET", TEST_SECRET)
        .env("MONGODB_URI", uri)
        .current_dir(std::env::temp_dir())
        .args(["users", "set-role", name, role])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "set-role: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_users_log_in_chat_and_become_agents_across_a_restart() {
    let database = format!("chatbot_migration_{}", uuid::Uuid::new_v4().simple());
    let Some(uri) = database_uri(&database) else {
        return;
    };
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let users = client.database(&database).collection::<Document>("users");
    users
        .insert_many([
            node_user("alice", "alice-password-1", "$2a$"),
            node_user("Bruno", "bruno-password-1", "$2b$"),
        ])
        .await
        .unwrap();

    let env = [("MONGODB_URI", uri.as_str())];
    let app = spawn_process(&env).await;
    let (status, body) = login(&app, "alice", "alice-password-1").await;
    assert_eq!(status, 200, "a $2a$ (bcryptjs) user logs in: {body}");
    let (status, body) = login(&app, "Bruno", "bruno-password-1").await;
    assert_eq!(status, 200, "a $2b$ user logs in: {body}");
    let (status, _) = login(&app, "alice", "wrong-password-1").await;
    assert_eq!(status, 401);
    let stored = users
        .find_one(doc! {"username": "alice"})
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored
            .get_str("password")
            .unwrap()
            .starts_with("$argon2id$"),
        "upgraded in place: {stored}"
    );
    assert_eq!(
        stored.get_i32("__v").unwrap(),
        0,
        "Mongoose's field is kept"
    );

    // New users beside the old ones; names stay unique whatever the case.
    let (status, body) = app
        .post(
            "/api/auth/register",
            json!({"username": "ALICE", "email": "other@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("username_taken"))
    );
    let carol = app.register("carol").await;

    // A conversation reaches the transcript in the same database.
    let (mut tab, hello) = app.connect(&carol).await;
    let session = hello["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(tab.chat("my parcel is late").await.status, "completed");
    drop(tab);
    let messages = format!("/api/sessions/{session}/messages");
    let (status, page) = app.call(&carol, "GET", &messages, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(2), "{page}");

    // The operator makes a Node-era user an agent; it holds after a restart.
    set_role(&uri, "alice", "agent").await;
    drop(app);
    let app = spawn_process(&env).await;
    let (status, body) = login(&app, "alice", "alice-password-1").await;
    assert_eq!(status, 200, "the upgraded hash still logs in: {body}");
    let alice = body["token"].as_str().unwrap().to_owned();
    let (status, queue) = app.call(&alice, "GET", "/api/agent/queue", None).await;
    assert_eq!(status, 200, "alice is an agent: {queue}");
    let (status, page) = app.call(&carol, "GET", &messages, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(2), "{page}");
    let raw = users
        .find_one(doc! {"username": "alice"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.get_str("role").unwrap(), "agent", "{raw}");

    let _ = tokio::time::timeout(Duration::from_secs(10), client.database(&database).drop()).await;
}
