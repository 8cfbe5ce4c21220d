//! The process as an operator meets it: the command line (help, version,
//! check-config, flags over the environment, healthcheck), where the server
//! listens (IPv4 and IPv6 by default), and start-up errors that say a store
//! is unreachable within STORE_CONNECT_TIMEOUT.

use crate::common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{spawn_app, TEST_SECRET};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_chatbot-server");

/// The binary with exactly `env` as its environment, in `dir` (so no
/// developer's .env is read), to completion.
async fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::time::timeout(Duration::from_secs(60), command(dir, args, env).output())
        .await
        .expect("the binary exits")
        .unwrap()
}

fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Values an operator might have set, each recognisable if printed.
const MARKERS: &[(&str, &str)] = &[
    ("JWT_SECRET", "marker-jwt-secret-0123456789abcdef0123"),
    ("REDIS_URL", "redis://:marker-redis-pw@127.0.0.1:1"),
    ("MONGODB_URI", "mongodb://u:marker-mongo-pw@127.0.0.1:1/db"),
    ("OPENAI_API_KEY", "sk-marker-api-key"),
    ("PORT", "4917"),
    ("HOST", "192.0.2.77"),
    ("SQLITE_PATH", "marker-dir/marker.db"),
    ("TRUSTED_PROXIES", "198.51.100.99"),
];

#[tokio::test]
async fn help_prints_every_flag_but_no_environment_value_and_touches_no_store() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &["-h"], &["check-config", "--help"]] {
        let out = run(dir.path(), args, MARKERS).await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        for needle in [
            "--port <VALUE>",
            "[env: PORT]",
            "--trusted-proxies",
            "JWT_SECRET",
        ] {
            assert!(
                stdout.contains(needle),
                "{args:?} lacks {needle}:\n{stdout}"
            );
        }
        for (name, value) in MARKERS {
            assert!(
                !stdout.contains(value) && !stderr.contains(value),
                "{args:?} printed the value of {name}:\n{stdout}{stderr}"
            );
        }
    }
    let out = run(dir.path(), &["--help"], &[]).await;
    let (stdout, _) = text(&out);
    for sub in ["check-config", "healthcheck", "serve"] {
        assert!(stdout.contains(sub), "{stdout}");
    }
    assert!(
        !dir.path().join("marker-dir").exists(),
        "--help opened the SQLite store"
    );
}

#[tokio::test]
async fn version_prints_the_package_version() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["--version"], MARKERS).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("chatbot-server {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(!dir.path().join("marker-dir").exists());
}

#[tokio::test]
async fn check_config_validates_without_serving_or_connecting() {
    let dir = tempfile::tempdir().unwrap();
    // Stores that would fail start-up: check-config does not connect to them.
    let good = [
        ("APP_ENV", "production"),
        ("JWT_SECRET", TEST_SECRET),
        ("REDIS_URL", "redis://:marker-redis-pw@127.0.0.1:1"),
        ("SQLITE_PATH", "marker-dir/users.db"),
        ("PORT", "4917"),
    ];
    let started = Instant::now();
    let out = run(dir.path(), &["check-config"], &good).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(
        stdout.contains("production") && stdout.contains("4917"),
        "{stdout}"
    );
    assert!(!stdout.contains("marker-redis-pw"), "{stdout}");
    assert!(!dir.path().join("marker-dir").exists(), "opened SQLite");
    assert!(started.elapsed() < Duration::from_secs(30));

    for (env, needle) in [
        (vec![("PORT", "not-a-port")], "PORT"),
        (vec![("APP_ENV", "production")], "JWT_SECRET"),
        (
            vec![("STORE_CONNECT_TIMEOUT", "soon")],
            "STORE_CONNECT_TIMEOUT",
        ),
    ] {
        let out = run(dir.path(), &["check-config"], &env).await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }
}

#[tokio::test]
async fn a_flag_overrides_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    // A bad value in the environment is replaced by a good flag...
    let out = run(
        dir.path(),
        &["check-config", "--port", "4918"],
        &[("PORT", "not-a-port")],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("4918"), "{stdout}");
    // ...and a bad flag is refused by the same parser, naming the variable.
    let out = run(
        dir.path(),
        &["--port", "nope", "check-config"],
        &[("PORT", "4918")],
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("PORT=\"nope\""), "{stderr}");
    // An unknown flag, and a secret as a flag, are usage errors (code 2).
    for args in [&["--no-such-flag"][..], &["--jwt-secret", "x"]] {
        let out = run(dir.path(), args, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// The server started with a flag serves on the flag's port, and
/// `healthcheck` (what the Dockerfile's HEALTHCHECK runs) says so; once it is
/// gone, `healthcheck` fails.
#[tokio::test]
async fn the_server_serves_on_the_flags_port_and_healthcheck_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let env = [
        ("PORT", "not-a-port"),
        ("HOST", "127.0.0.1"),
        ("JWT_SECRET", TEST_SECRET),
        ("SQLITE_PATH", "users.db"),
    ];
    let mut server = command(dir.path(), &["--port", &port], &env)
        .spawn()
        .unwrap();
    let healthy = async {
        loop {
            let out = run(dir.path(), &["healthcheck", "--port", &port], &env).await;
            if out.status.code() == Some(0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), healthy)
        .await
        .expect("healthcheck passes once the server is up");
    server.kill().await.unwrap();
    server.wait().await.unwrap();
    let out = run(dir.path(), &["healthcheck", "--port", &port], &env).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unhealthy"), "{stderr}");
}

// --- Listening ------------------------------------------------------------

fn ipv6_loopback() -> bool {
    match TcpListener::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED the IPv6 half: this machine has no IPv6 loopback ({e})");
            false
        }
    }
}

async fn health_at(addr: SocketAddr) -> Result<u16, reqwest::Error> {
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/health"))
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

#[tokio::test]
async fn every_interface_means_ipv4_and_ipv6() {
    let v6 = ipv6_loopback();
    // Unset (blank counts as unset), the Node.js .env's 0.0.0.0, and ::.
    for host in ["", "0.0.0.0", "::"] {
        let app = spawn_app(&[("HOST", host)]).await;
        let port = app.addr.port();
        let v4 = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(health_at(v4).await.unwrap(), 200, "HOST={host:?} on {v4}");
        if v6 {
            let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
            assert_eq!(health_at(v6).await.unwrap(), 200, "HOST={host:?} on {v6}");
        }
    }
}

#[tokio::test]
async fn a_specific_address_listens_on_just_that() {
    let app = spawn_app(&[("HOST", "127.0.0.1")]).await;
    let port = app.addr.port();
    assert_eq!(health_at(app.addr).await.unwrap(), 200);
    if ipv6_loopback() {
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        assert!(health_at(v6).await.is_err(), "{v6} answered");
        let app = spawn_app(&[("HOST", "::1")]).await;
        let v4 = SocketAddr::from(([127, 0, 0, 1], app.addr.port()));
        assert_eq!(health_at(app.addr).await.unwrap(), 200);
        assert!(health_at(v4).await.is_err(), "{v4} answered");
    }
}

// --- Start-up errors --------------------------------------------------------

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Runs the server against `store` and expects it to exit 1 within the
/// timeout and a margin, with a line saying `name` is unreachable.
async fn expect_unreachable(var: &str, url: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("JWT_SECRET", TEST_SECRET),
        ("SQLITE_PATH", "users.db"),
        ("STORE_CONNECT_TIMEOUT", "1s"),
        (var, url),
    ];
    let started = Instant::now();
    let out = run(dir.path(), &[], &env).await;
    let elapsed = started.elapsed();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{var}={url}: {stdout}{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("unreachable"))
        .unwrap_or_else(|| panic!("{var}={url}: no line says unreachable:\n{stderr}"));
    assert!(line.contains(name) && line.contains(var), "{line}");
    assert!(!stderr.contains("duplicates"), "{stderr}");
    assert!(!stderr.contains("pw@"), "the password is masked: {stderr}");
    // Generous for a loaded machine, yet far below MongoDB's own 30 s.
    assert!(
        elapsed < Duration::from_secs(12),
        "{var}={url}: took {elapsed:?}"
    );
}

#[tokio::test]
async fn an_unreachable_store_is_reported_as_unreachable_within_the_timeout() {
    let closed = closed_port();
    // The kernel completes the handshake into the backlog, but nobody ever
    // accepts or answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    for addr in [closed, silent_addr] {
        expect_unreachable("REDIS_URL", &format!("redis://:pw@{addr}"), "Redis").await;
        expect_unreachable(
            "MONGODB_URI",
            &format!("mongodb://u:pw@{addr}/chatbot"),
            "MongoDB",
        )
        .await;
    }
    drop(silent);
}

/// `users set-role` acts on the store the server would open (SQLITE_PATH
/// here), says what it did in one line, and keeps its exit codes apart:
/// 1 for an unknown user, 2 for a bad command line or configuration.
#[tokio::test]
async fn users_set_role_promotes_and_demotes_in_the_configured_store() {
    use chatbot_server::adapters::outbound::sqlite_users::SqliteUserRepository;
    use chatbot_server::application::ports::UserRepository;
    use chatbot_server::domain::{EmailAddress, NewUser, PasswordHash, Username};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    let repo = SqliteUserRepository::open(&db).await.unwrap();
    let name = Username::parse("carol_agent").unwrap();
    repo.create(NewUser {
        username: name.clone(),
        email: EmailAddress::parse("carol@example.com").unwrap(),
        password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$x$y"),
        created_at: chrono::Utc::now(),
    })
    .await
    .unwrap();
    let db_path = db.to_str().unwrap().to_owned();
    let env = [
        ("JWT_SECRET", TEST_SECRET),
        ("SQLITE_PATH", db_path.as_str()),
    ];
    let role_of = |repo: SqliteUserRepository| {
        let name = name.clone();
        async move { repo.find_by_username(&name).await.unwrap().unwrap().role }
    };

    let out = run(
        dir.path(),
        &["users", "set-role", "carol_agent", "agent"],
        &env,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "chatbot-server: carol_agent is now agent");
    assert_eq!(role_of(repo.clone()).await.as_str(), "agent");

    let out = run(
        dir.path(),
        &["users", "set-role", "carol_agent", "user"],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert_eq!(role_of(repo.clone()).await.as_str(), "user");

    for ghost in ["nobody_here", "not a name"] {
        let out = run(dir.path(), &["users", "set-role", ghost, "agent"], &env).await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("no user named"), "{stderr}");
    }

    let out = run(
        dir.path(),
        &["users", "set-role", "carol_agent", "admin"],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    let out = run(
        dir.path(),
        &["users", "set-role", "carol_agent", "agent"],
        &[("SQLITE_PATH", db_path.as_str()), ("PORT", "nope")],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "bad configuration: {:?}",
        text(&out)
    );
    assert_eq!(
        role_of(repo).await.as_str(),
        "user",
        "nothing changed on failures"
    );
}
