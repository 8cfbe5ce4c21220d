//! Start-up probes of MongoDB and Redis: does the store answer within
//! `STORE_CONNECT_TIMEOUT`, and if not, is it unreachable or did it refuse us?
//!
//! The adapters' own connects have their own timeouts (MongoDB's server
//! selection waits 30 s) and report everything that goes wrong as the step
//! they were on, so an unreachable MongoDB used to read as "existing
//! duplicates must be fixed" half a minute later. One ping per store, before
//! the adapters connect, says what is wrong within the configured time.

use std::time::Duration;

use thiserror::Error;

/// The driver's own error, kept as the source.
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store did not pass its start-up probe.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// Nothing answered in time: a listener that never accepts, a dropped
    /// SYN, a server that never replies.
    #[error("unreachable: no answer within {} (STORE_CONNECT_TIMEOUT)", humanize(.0))]
    Silent(Duration),
    /// The connection failed: refused, reset, no route, name not resolved.
    #[error("unreachable")]
    Unreachable(#[source] Cause),
    /// The store answered but would not serve us (credentials, TLS, protocol).
    #[error("answered but refused the connection")]
    Refused(#[source] Cause),
}

fn humanize(d: &Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Pings Redis at `url` on a connection of its own.
///
/// # Errors
/// [`ProbeError::Silent`] when no answer comes within `timeout`,
/// [`ProbeError::Unreachable`] when the connection fails, [`ProbeError::Refused`]
/// when Redis answers with an error (a wrong password).
pub async fn redis(url: &str, timeout: Duration) -> Result<(), ProbeError> {
    let client = redis::Client::open(url).map_err(|e| ProbeError::Refused(e.into()))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let ping = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await
    };
    match tokio::time::timeout(timeout, ping).await {
        Err(_) => Err(ProbeError::Silent(timeout)),
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.is_timeout() => Err(ProbeError::Silent(timeout)),
        Ok(Err(e)) if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() => {
            Err(ProbeError::Unreachable(e.into()))
        }
        Ok(Err(e)) => Err(ProbeError::Refused(e.into())),
    }
}

/// Pings MongoDB at `uri`, with server selection bounded by `timeout`.
///
/// # Errors
/// As [`redis`]; a wrong password is [`ProbeError::Refused`].
pub async fn mongodb(uri: &str, timeout: Duration) -> Result<(), ProbeError> {
    use mongodb::error::ErrorKind;
    let ping = async {
        let mut options = mongodb::options::ClientOptions::parse(uri).await?;
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        let client = mongodb::Client::with_options(options)?;
        client
            .database("admin")
            .run_command(mongodb::bson::doc! { "ping": 1 })
            .await
            .map(drop)
    };
    // A little over the driver's own bound, so its more precise error wins.
    match tokio::time::timeout(timeout + Duration::from_millis(500), ping).await {
        Err(_) => Err(ProbeError::Silent(timeout)),
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => match e.kind.as_ref() {
            ErrorKind::ServerSelection { .. } | ErrorKind::Io(_) | ErrorKind::DnsResolve { .. } => {
                Err(ProbeError::Unreachable(e.into()))
            }
            _ => Err(ProbeError::Refused(e.into())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_port() -> std::net::SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_at_once() {
        let addr = closed_port();
        let started = std::time::Instant::now();
        let err = redis(&format!("redis://{addr}"), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::Unreachable(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_listener_that_never_answers_is_silent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let timeout = Duration::from_millis(300);
        for err in [
            redis(&format!("redis://{addr}"), timeout)
                .await
                .unwrap_err(),
            mongodb(&format!("mongodb://{addr}/?directConnection=true"), timeout)
                .await
                .unwrap_err(),
        ] {
            assert!(
                matches!(err, ProbeError::Silent(_) | ProbeError::Unreachable(_)),
                "{err:?}"
            );
            assert!(err.to_string().starts_with("unreachable"), "{err}");
        }
        drop(listener);
    }

    #[test]
    fn durations_read_as_an_operator_wrote_them() {
        assert_eq!(humanize(&Duration::from_secs(5)), "5 s");
        assert_eq!(humanize(&Duration::from_millis(1500)), "1500 ms");
    }
}
