//! The listening socket: for "every interface", one dual-stack IPv6 socket
//! that also takes IPv4 (IPv4 alone where the machine has no IPv6).
//!
//! Binding `0.0.0.0`, as the Node.js `.env` files say, refuses clients that
//! resolve `localhost` to `::1`; binding `::` with the system default may be
//! IPv6 only (`net.ipv6.bindv6only=1`). So `IPV6_V6ONLY` is turned off
//! explicitly, before `bind`, which tokio's `TcpSocket` cannot do.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Pending connections the kernel queues before we accept them (tokio's own
/// default, clamped by `net.core.somaxconn`).
const BACKLOG: i32 = 1024;

/// Listens on `addr`, or on every interface of both families when
/// `all_interfaces` (then `addr`'s IP is ignored and only its port counts).
/// Must be called inside a Tokio runtime.
///
/// # Errors
/// The system's error when the socket cannot be bound (port taken, address
/// not local, permission).
pub fn bind(addr: SocketAddr, all_interfaces: bool) -> io::Result<TcpListener> {
    if !all_interfaces {
        return bind_socket(addr, false);
    }
    let dual = SocketAddr::from((Ipv6Addr::UNSPECIFIED, addr.port()));
    match bind_socket(dual, true) {
        Err(e) if ipv6_missing(&e) => {
            tracing::warn!(error = %e, "no IPv6 on this machine: listening on IPv4 only");
            bind_socket(
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port())),
                false,
            )
        }
        bound => bound,
    }
}

fn bind_socket(addr: SocketAddr, dual_stack: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    // As tokio's `TcpListener::bind` does, so a restart does not wait for
    // the last run's connections in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// IPv6 compiled out, disabled by sysctl, or with no address to bind.
fn ipv6_missing(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_specific_address_binds_just_that() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        assert_eq!(
            listener.local_addr().unwrap().ip(),
            std::net::IpAddr::from([127, 0, 0, 1])
        );
    }

    #[tokio::test]
    async fn every_interface_is_one_socket_for_both_families() {
        let listener = bind("0.0.0.0:0".parse().unwrap(), true).unwrap();
        let local = listener.local_addr().unwrap();
        assert!(local.ip().is_unspecified());
        // Whichever family it got, IPv4 clients are served.
        let v4 = tokio::net::TcpStream::connect(("127.0.0.1", local.port()));
        let (connected, accepted) = tokio::join!(v4, listener.accept());
        connected.unwrap();
        accepted.unwrap();
    }
}
