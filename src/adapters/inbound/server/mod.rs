//! The TCP side of the HTTP server: the accept loop, one HTTP/1.1 connection
//! per socket (upgrades to WebSocket included), the limits on slow, silent
//! and unauthenticated clients, and graceful shutdown.
//!
//! poem's own `Server` gives hyper no timer, so a client that never finishes
//! its headers holds its socket forever. Here hyper serves the poem endpoint
//! over a socket ([`io::ClientIo`]) that fails once its connection's deadline
//! passes; the [`registry::Registry`] knows each connection's phase, caps the
//! unauthenticated ones per address and sheds the oldest of them when
//! descriptors run short.

mod io;
pub mod listen;
pub mod registry;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::Endpoint;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::errors::{AnyCode, ErrorBody, ErrorCode};
use super::openapi::JSON_MEDIA_TYPE;
use super::AppContext;
use registry::{Connection, Refusal, Registry};

/// A request's connection, in its extensions, so a handler that
/// authenticated the request can say so ([`super::connection_authenticated`]).
#[derive(Clone)]
pub struct ConnectionHandle(pub(crate) Arc<Connection>);

/// A complete HTTP/1.1 error response with the JSON error body, for the
/// moments no handler runs: a refused connection, a header timeout.
pub fn raw_error_response(code: ErrorCode, extra_headers: &[(&str, &str)]) -> Vec<u8> {
    use poem_openapi::types::ToJSON as _;
    let status = code
        .status()
        .unwrap_or(poem::http::StatusCode::INTERNAL_SERVER_ERROR);
    let body = ErrorBody::<AnyCode>::new(code).0.to_json_string();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {JSON_MEDIA_TYPE}\r\n\
         content-length: {}\r\nconnection: close\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    head.into_bytes()
}

/// Serves `endpoint` until `ctx.shutdown` is cancelled, then stops
/// accepting, lets requests in flight finish, waits for upgraded WebSocket
/// connections to send their last events and close, and returns.
///
/// # Errors
/// Only if the listener's address cannot be read; accept errors are survived.
pub async fn serve<E>(
    listener: TcpListener,
    ctx: Arc<AppContext>,
    endpoint: E,
) -> std::io::Result<()>
where
    E: Endpoint<Output = poem::Response> + 'static,
{
    let local = LocalAddr(listener.local_addr()?.into());
    let registry = Arc::new(Registry::new(
        ctx.http_limits.clone(),
        ctx.trusted_proxies.clone(),
        open_file_limit(),
    ));
    tracing::info!(
        budget = registry.budget(),
        "client connections before the oldest unauthenticated one is shed"
    );
    let server = Server {
        endpoint: Arc::new(endpoint),
        local,
        registry,
        http: http1_builder(),
        tasks: TaskTracker::new(),
        shutdown: ctx.shutdown.clone(),
        abort: CancellationToken::new(),
        refusals: LogThrottle::default(),
    };
    server.accept_until_shutdown(&listener).await;
    drop(listener);
    let grace = ctx.shutdown_timeout + Duration::from_secs(2);
    server.finish(grace).await;
    // Upgraded WebSocket connections are no HTTP connection's any more; their
    // tracker waits for each to send its last stream-end and close frame.
    ctx.connections.close();
    if tokio::time::timeout(grace, ctx.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = ctx.connections.len(),
            "some connections did not close in time"
        );
    }
    Ok(())
}

fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    // Deadlines are the socket's (`ClientIo`): hyper's own header timer would
    // also close kept-alive connections after the header timeout.
    builder.header_read_timeout(None);
    builder
}

/// The descriptor limit of this process (after `main` raised it), if known.
#[cfg(unix)]
fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<u64> {
    None
}

struct Server<E> {
    endpoint: Arc<E>,
    local: LocalAddr,
    registry: Arc<Registry>,
    http: http1::Builder,
    /// Every HTTP connection task, until it ends or is upgraded.
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Cancelled when the grace period is over: connections still open are dropped.
    abort: CancellationToken,
    refusals: LogThrottle,
}

impl<E> Server<E>
where
    E: Endpoint<Output = poem::Response> + 'static,
{
    async fn accept_until_shutdown(&self, listener: &TcpListener) {
        loop {
            let accepted = tokio::select! {
                () = self.shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) => self.accept_failed(&e).await,
            }
        }
    }

    fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        let conn = match self.registry.admit(peer.ip()) {
            Ok((conn, shed)) => {
                if shed {
                    self.refusals.warn(
                        "descriptors are short (FD_HEADROOM): shed the oldest \
                         unauthenticated connection for a new one",
                    );
                }
                conn
            }
            Err(refusal) => return self.refuse(&stream, refusal),
        };
        // Each streamed token leaves at once instead of waiting for Nagle's
        // algorithm to batch it.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let serving = serve_connection(
            io::ClientIo::new(stream, conn.clone()),
            conn,
            self.endpoint.clone(),
            (self.local.clone(), RemoteAddr(peer.into())),
            self.http.clone(),
            (self.shutdown.clone(), self.abort.clone()),
        );
        self.tasks.spawn(serving);
    }

    /// Closes a connection that may not stay, with an answer when one helps.
    fn refuse(&self, stream: &TcpStream, refusal: Refusal) {
        let (what, response): (&str, &[u8]) = match refusal {
            Refusal::PerIpCap => (
                "refused a connection: its address has UNAUTH_CONNECTIONS_PER_IP \
                 unauthenticated connections open",
                &PER_IP_REFUSAL,
            ),
            Refusal::NoRoom => (
                "refused a connection: descriptors are short (FD_HEADROOM) and every \
                 open connection has authenticated",
                &[],
            ),
        };
        // A request already received is read first, so closing sends FIN
        // (and the answer arrives) rather than a reset.
        let _ = stream.try_read(&mut [0u8; 2048]);
        let _ = stream.try_write(response);
        self.refusals.warn(what);
    }

    /// Out of descriptors: shed the oldest unauthenticated connection, so the
    /// next accept finds one, instead of leaving new clients (a health
    /// check, a login) queued behind sockets that never authenticate.
    async fn accept_failed(&self, e: &std::io::Error) {
        let scarce = matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        if !scarce {
            // A connection reset before it was accepted: only that one is lost.
            tracing::debug!(error = %e, "accept failed");
            return;
        }
        let pause = if self.registry.shed_oldest() {
            self.refusals
                .warn("out of descriptors: shed the oldest unauthenticated connection");
            // Long enough for its task to close the socket.
            Duration::from_millis(5)
        } else {
            tracing::warn!(error = %e, open = self.registry.open(), "accept failed; retrying");
            Duration::from_millis(100)
        };
        tokio::time::sleep(pause).await;
    }

    /// Lets every HTTP connection finish its request in flight (each was
    /// told to by the shutdown token), dropping those still open after `grace`.
    async fn finish(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            self.abort.cancel();
            self.tasks.wait().await;
        }
    }
}

/// The answer to a connection over `UNAUTH_CONNECTIONS_PER_IP`.
static PER_IP_REFUSAL: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    raw_error_response(ErrorCode::RateLimited, &[("retry-after", "1")])
});

/// Serves one socket until it closes, upgrades, is shed, or the server stops.
async fn serve_connection<E>(
    io: io::ClientIo,
    conn: Arc<Connection>,
    endpoint: Arc<E>,
    (local, remote): (LocalAddr, RemoteAddr),
    http: http1::Builder,
    (shutdown, abort): (CancellationToken, CancellationToken),
) where
    E: Endpoint<Output = poem::Response> + 'static,
{
    let requests_conn = conn.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let conn = requests_conn.clone();
        let endpoint = endpoint.clone();
        conn.request_started();
        req.extensions_mut().insert(ConnectionHandle(conn.clone()));
        let req = poem::Request::from((req, local.clone(), remote.clone(), Scheme::HTTP));
        async move {
            let mut resp = hyper::Response::<BoxBody<bytes::Bytes, std::io::Error>>::from(
                endpoint.get_response(req).await,
            );
            conn.response_ready(&mut resp);
            // hyper reads the socket for a next request only when its task is
            // woken, and no wake-up is due until the client sends something:
            // wake it once more so the socket arms the idle deadline.
            std::future::poll_fn(|cx| {
                cx.waker().wake_by_ref();
                std::task::Poll::Ready(())
            })
            .await;
            Ok::<_, Infallible>(resp)
        }
    });
    let serving = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(serving);
    tokio::select! {
        _ = serving.as_mut() => return,
        () = conn.shed_requested() => {
            tracing::debug!("shed an unauthenticated connection to free a descriptor");
            return;
        }
        () = shutdown.cancelled() => {}
    }
    serving.as_mut().graceful_shutdown();
    tokio::select! {
        _ = serving => {}
        () = abort.cancelled() => {}
    }
}

/// At most one of these warnings every few seconds, with how many were left
/// out: a flood of connections must not become a flood of log lines.
#[derive(Default)]
struct LogThrottle {
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    const EVERY: Duration = Duration::from_secs(5);

    fn warn(&self, what: &str) {
        static EPOCH: std::sync::LazyLock<std::time::Instant> =
            std::sync::LazyLock::new(std::time::Instant::now);
        let now = u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= Self::EVERY.as_millis() as u64;
        if due
            && self
                .last_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let also = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(similar_since_last = also, "{what}");
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
