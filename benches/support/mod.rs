//! What the benchmarks share: the release server on a free port, with its
//! log drained, and its resident memory.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The server a benchmark runs against; killed when dropped.
pub struct Server {
    pub child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    pub pid: u32,
    /// Holds the SQLite file until the server is gone.
    _dir: tempfile::TempDir,
}

/// Starts the release binary on `host` and a free port with a fresh SQLite
/// file and the echo model, plus `envs`, and waits until it listens.
pub async fn start_server(host: &str, envs: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatbot-server"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOST", host)
        .env("PORT", "0")
        .env("JWT_SECRET", "benchmark-secret-benchmark-secret-0123")
        .env("SQLITE_PATH", dir.path().join("users.db"))
        // "server listening" is an info line: a quieter filter would hide it.
        .env("RUST_LOG", "warn,chatbot_server=info")
        .envs(envs.iter().copied())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("server starts");
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines.next_line().await.unwrap().expect("server log");
        if let Some(a) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .filter(|_| line.contains("server listening"))
        {
            // `[::]:3001` when listening on every interface.
            break a.rsplit(':').next().unwrap().to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server {
        child,
        addr: format!("127.0.0.1:{port}"),
        pid,
        _dir: dir,
    }
}

/// The server's resident memory in KiB, from `/proc`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
