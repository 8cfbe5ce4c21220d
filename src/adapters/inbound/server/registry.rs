//! This process's client connections: how many are open, which have not
//! authenticated yet (capped per peer address), how many wait idle between
//! requests, and which one makes way when descriptors run short.
//!
//! These limits are on this process's sockets and descriptors, not on what a
//! user may do, so they live with the transport and hold per instance.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::ConnectionConfig;
use crate::domain::{ClientIp, TrustedProxies};

/// Every open client connection of this process, and the limits on them.
pub struct Registry {
    limits: ConnectionConfig,
    trusted: TrustedProxies,
    /// Open connections allowed before a new one sheds the oldest
    /// unauthenticated one; `None` when `FD_HEADROOM=0`.
    budget: Option<usize>,
    epoch: Instant,
    open: AtomicUsize,
    idle: AtomicUsize,
    next_id: AtomicU64,
    unauthenticated: Mutex<Unauthenticated>,
}

/// The connections that have not carried an authenticated request yet.
#[derive(Default)]
struct Unauthenticated {
    /// Per peer address (never for a trusted proxy, which carries everyone).
    per_ip: HashMap<IpAddr, u32>,
    /// By accept order, oldest first: who is shed first.
    by_age: BTreeMap<u64, Weak<Connection>>,
}

/// Why a new connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address already has `UNAUTH_CONNECTIONS_PER_IP` unauthenticated ones.
    PerIpCap,
    /// Descriptors are short and every open connection has authenticated.
    NoRoom,
}

impl Registry {
    /// `open_files` is the process's descriptor limit, if known.
    pub fn new(limits: ConnectionConfig, trusted: TrustedProxies, open_files: Option<u64>) -> Self {
        let budget = match (limits.fd_headroom, open_files) {
            (Some(headroom), Some(limit)) => {
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                // A limit below the headroom still leaves half for clients.
                Some(
                    limit
                        .saturating_sub(headroom as usize)
                        .max(limit / 2)
                        .max(1),
                )
            }
            _ => None,
        };
        Self {
            limits,
            trusted,
            budget,
            epoch: Instant::now(),
            open: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            unauthenticated: Mutex::new(Unauthenticated::default()),
        }
    }

    pub fn limits(&self) -> &ConnectionConfig {
        &self.limits
    }

    /// Client connections allowed before shedding begins.
    pub fn budget(&self) -> Option<usize> {
        self.budget
    }

    /// Open client connections (upgraded WebSockets included).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Takes a new connection from `peer`, or says why not. Near the
    /// descriptor budget the oldest unauthenticated connection is shed to
    /// make room: a fresh `/health` or login must get through a flood of
    /// sockets that never authenticate.
    ///
    /// The connection, and whether another was shed to make room for it.
    ///
    /// # Errors
    /// [`Refusal`] when the connection must be closed at once.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<(Arc<Connection>, bool), Refusal> {
        let ip = (!self.trusted.contains(peer)).then(|| ClientIp::from(peer).ip());
        let mut unauth = self.lock();
        if let (Some(cap), Some(ip)) = (self.limits.unauth_per_ip, ip) {
            if unauth.per_ip.get(&ip).copied().unwrap_or(0) >= cap {
                return Err(Refusal::PerIpCap);
            }
        }
        let mut shed = None;
        if self.budget.is_some_and(|b| self.open() >= b) {
            shed = Some(Self::oldest(&mut unauth).ok_or(Refusal::NoRoom)?);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Connection {
            id,
            ip,
            registry: self.clone(),
            phase: AtomicU8::new(Phase::HeadWaiting as u8),
            since_ms: AtomicU64::new(self.now_ms()),
            unauthenticated: AtomicBool::new(true),
            counted: AtomicBool::new(true),
            shed: Notify::new(),
        });
        unauth.by_age.insert(id, Arc::downgrade(&conn));
        if let Some(ip) = ip {
            *unauth.per_ip.entry(ip).or_default() += 1;
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        drop(unauth);
        // Outside the lock: dropping the last handle of a connection takes it.
        let shed_one = shed.is_some();
        if let Some(old) = shed {
            old.shed();
        }
        Ok((conn, shed_one))
    }

    /// Sheds the oldest unauthenticated connection (the accept loop ran out
    /// of descriptors); false when there is none.
    pub fn shed_oldest(&self) -> bool {
        let oldest = Self::oldest(&mut self.lock());
        match oldest {
            Some(conn) => {
                conn.shed();
                true
            }
            None => false,
        }
    }

    /// Removes the oldest live unauthenticated connection from the books;
    /// the caller tells it to go once the lock is released.
    fn oldest(unauth: &mut Unauthenticated) -> Option<Arc<Connection>> {
        while let Some((_, weak)) = unauth.by_age.pop_first() {
            let Some(conn) = weak.upgrade() else { continue };
            if conn.unauthenticated.swap(false, Ordering::Relaxed) {
                Self::uncount_ip(unauth, conn.ip);
                return Some(conn);
            }
        }
        None
    }

    fn uncount_ip(unauth: &mut Unauthenticated, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        if let Some(n) = unauth.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                unauth.per_ip.remove(&ip);
            }
        }
    }

    fn forget_unauthenticated(&self, id: u64, ip: Option<IpAddr>) {
        let mut unauth = self.lock();
        unauth.by_age.remove(&id);
        Self::uncount_ip(&mut unauth, ip);
    }

    fn lock(&self) -> MutexGuard<'_, Unauthenticated> {
        // The books stay consistent across a panic elsewhere: every update is
        // a few map operations with nothing to unwind.
        self.unauthenticated
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at_ms(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }
}

/// Where a connection is in its request cycle; each phase but `Request` and
/// `Upgraded` has a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Waiting for a request's first byte (of the first request: since accept).
    HeadWaiting,
    /// Part of a request head has arrived.
    HeadPartial,
    /// Headers complete: the body and the handler have their own bounds.
    Request,
    /// A response was given; waiting for the next request on a kept-alive
    /// connection (or for the client to read the response).
    Idle,
    /// A response was given and the connection closes once it is written.
    Closing,
    /// A WebSocket now: its pings and queues bound it.
    Upgraded,
}

impl Phase {
    fn from_u8(n: u8) -> Self {
        [
            Self::HeadWaiting,
            Self::HeadPartial,
            Self::Request,
            Self::Idle,
            Self::Closing,
        ]
        .into_iter()
        .find(|p| *p as u8 == n)
        .unwrap_or(Self::Upgraded)
    }
}

/// One client connection's place in the [`Registry`], shared by its socket,
/// its requests and the registry. Dropped when the socket closes.
pub struct Connection {
    id: u64,
    /// The per-address key it counts under, if it counts under one.
    ip: Option<IpAddr>,
    registry: Arc<Registry>,
    phase: AtomicU8,
    /// When the current phase began, in ms since the registry's epoch.
    since_ms: AtomicU64,
    unauthenticated: AtomicBool,
    /// Still counted among the open connections (a shed one stops counting
    /// at once, so one shortage does not shed many).
    counted: AtomicBool,
    shed: Notify,
}

impl Connection {
    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    fn enter(&self, phase: Phase) {
        self.since_ms
            .store(self.registry.now_ms(), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// A request on this connection proved who sent it (or it became an
    /// authenticated WebSocket): it no longer counts as unauthenticated.
    pub fn authenticated(&self) {
        if self.unauthenticated.swap(false, Ordering::Relaxed) {
            self.registry.forget_unauthenticated(self.id, self.ip);
        }
    }

    /// Resolves when the registry sheds this connection to free a descriptor.
    pub async fn shed_requested(&self) {
        self.shed.notified().await;
    }

    fn shed(&self) {
        if self.counted.swap(false, Ordering::Relaxed) {
            self.registry.open.fetch_sub(1, Ordering::Relaxed);
        }
        self.shed.notify_one();
    }

    /// Bytes arrived from the client: a kept-alive connection starts its next
    /// request, whose head must now be complete within the header timeout.
    pub fn bytes_received(&self) {
        match self.phase() {
            Phase::HeadWaiting => self
                .phase
                .store(Phase::HeadPartial as u8, Ordering::Relaxed),
            Phase::Idle => {
                self.registry.idle.fetch_sub(1, Ordering::Relaxed);
                self.enter(Phase::HeadPartial);
            }
            _ => {}
        }
    }

    /// A request's headers are complete.
    pub fn request_started(&self) {
        if self.phase() == Phase::Idle {
            self.registry.idle.fetch_sub(1, Ordering::Relaxed);
        }
        self.enter(Phase::Request);
    }

    /// A response is ready to be written: the connection becomes a
    /// WebSocket, closes after it, or waits for its next request. A 408, or a
    /// response past `HTTP_MAX_IDLE_CONNECTIONS`, is made to close it.
    pub fn response_ready<B>(&self, resp: &mut poem::http::Response<B>) {
        use poem::http::{header, HeaderValue, StatusCode};
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            self.enter(Phase::Upgraded);
            return;
        }
        let closes = resp.status() == StatusCode::REQUEST_TIMEOUT
            || resp
                .headers()
                .get(header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
            || !self.try_idle();
        if closes {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            self.enter(Phase::Closing);
        } else {
            self.enter(Phase::Idle);
        }
    }

    /// Takes one of the idle places, if `HTTP_MAX_IDLE_CONNECTIONS` leaves one.
    fn try_idle(&self) -> bool {
        let idle = &self.registry.idle;
        let before = idle.fetch_add(1, Ordering::Relaxed);
        match self.registry.limits.max_idle {
            Some(max) if before >= max as usize => {
                idle.fetch_sub(1, Ordering::Relaxed);
                false
            }
            _ => true,
        }
    }

    /// When the socket must have made progress by, in its current phase.
    pub fn deadline(&self) -> Option<Instant> {
        let limits = &self.registry.limits;
        let timeout = match self.phase() {
            Phase::HeadWaiting | Phase::HeadPartial => limits.header_timeout,
            Phase::Idle | Phase::Closing => limits.keepalive_timeout,
            Phase::Request | Phase::Upgraded => None,
        }?;
        Some(self.registry.at_ms(self.since_ms.load(Ordering::Relaxed)) + timeout)
    }

    /// Whether a timed-out client is owed a 408: it began a request.
    pub fn owes_timeout_response(&self) -> bool {
        self.phase() == Phase::HeadPartial
    }

    /// Whether the connection waits between requests (for logs).
    pub fn is_idle(&self) -> bool {
        matches!(self.phase(), Phase::HeadWaiting | Phase::Idle)
    }

    pub fn is_upgraded(&self) -> bool {
        self.phase() == Phase::Upgraded
    }

    /// For an upgraded socket: keeps it counted among the open connections
    /// without keeping this connection's state alive for as long as the
    /// WebSocket lives (`None` if it no longer counts).
    pub fn into_open_slot(&self) -> Option<OpenSlot> {
        self.counted
            .swap(false, Ordering::Relaxed)
            .then(|| OpenSlot(self.registry.clone()))
    }
}

/// An upgraded socket's place among the open connections, given back when
/// the socket closes.
pub struct OpenSlot(Arc<Registry>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.phase() == Phase::Idle {
            self.registry.idle.fetch_sub(1, Ordering::Relaxed);
        }
        self.authenticated();
        if self.counted.swap(false, Ordering::Relaxed) {
            self.registry.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(unauth_per_ip: Option<u32>, fd_headroom: Option<u32>) -> ConnectionConfig {
        ConnectionConfig {
            header_timeout: Some(Duration::from_secs(10)),
            body_timeout: Some(Duration::from_secs(30)),
            keepalive_timeout: Some(Duration::from_secs(75)),
            max_idle: Some(2),
            unauth_per_ip,
            fd_headroom,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn unauthenticated_connections_are_capped_per_address_until_they_authenticate() {
        let reg = Arc::new(Registry::new(
            limits(Some(2), None),
            TrustedProxies::default(),
            None,
        ));
        let a = reg.admit(ip(1)).unwrap().0;
        let b = reg.admit(ip(1)).unwrap().0;
        assert_eq!(reg.admit(ip(1)).err(), Some(Refusal::PerIpCap));
        // Another address has its own count.
        let _c = reg.admit(ip(2)).unwrap().0;
        a.authenticated();
        let d = reg.admit(ip(1)).unwrap().0;
        assert_eq!(reg.admit(ip(1)).err(), Some(Refusal::PerIpCap));
        drop(b);
        let _e = reg.admit(ip(1)).unwrap().0;
        drop(d);
        assert_eq!(reg.open(), 3, "a, c and e");
    }

    #[test]
    fn trusted_proxies_are_not_capped_by_their_own_address() {
        let proxies = TrustedProxies::parse("10.0.0.9").unwrap();
        let reg = Arc::new(Registry::new(limits(Some(1), None), proxies, None));
        let _held: Vec<_> = (0..5).map(|_| reg.admit(ip(9)).unwrap().0).collect();
        let _one = reg.admit(ip(1)).unwrap().0;
        assert_eq!(reg.admit(ip(1)).err(), Some(Refusal::PerIpCap));
    }

    #[tokio::test]
    async fn near_the_descriptor_limit_the_oldest_unauthenticated_connection_makes_way() {
        // 300 descriptors with 290 kept free: 10 clients.
        let reg = Arc::new(Registry::new(
            limits(None, Some(290)),
            TrustedProxies::default(),
            Some(300),
        ));
        assert_eq!(
            reg.budget(),
            Some(150),
            "a limit below the headroom keeps half"
        );
        let reg = Arc::new(Registry::new(
            limits(None, Some(290)),
            TrustedProxies::default(),
            Some(600),
        ));
        assert_eq!(reg.budget(), Some(310));
        let reg = Arc::new(Registry::new(
            limits(None, Some(10)),
            TrustedProxies::default(),
            Some(13),
        ));
        assert_eq!(reg.budget(), Some(6));
        let held: Vec<_> = (0..6).map(|i| reg.admit(ip(i)).unwrap().0).collect();
        held[0].authenticated();
        let (newest, shed) = reg.admit(ip(50)).unwrap();
        assert!(shed);
        // The oldest unauthenticated one (the second) was told to go, and no
        // longer counts; the authenticated first one stays.
        tokio::time::timeout(Duration::from_millis(100), held[1].shed_requested())
            .await
            .expect("the oldest unauthenticated connection is shed");
        assert_eq!(reg.open(), 6);
        for c in &held[2..] {
            c.authenticated();
        }
        newest.authenticated();
        assert_eq!(reg.admit(ip(60)).err(), Some(Refusal::NoRoom));
    }

    #[test]
    fn idle_connections_are_bounded_and_have_deadlines() {
        let reg = Arc::new(Registry::new(
            limits(None, None),
            TrustedProxies::default(),
            None,
        ));
        let conns: Vec<_> = (0..3).map(|i| reg.admit(ip(i)).unwrap().0).collect();
        let mut kept = 0;
        for c in &conns {
            assert!(c.deadline().is_some(), "waiting for headers has a deadline");
            c.bytes_received();
            assert!(c.owes_timeout_response());
            c.request_started();
            assert_eq!(c.deadline(), None, "the body has its own bound");
            let mut resp = poem::http::Response::new(());
            c.response_ready(&mut resp);
            if resp.headers().get("connection").is_none() {
                kept += 1;
            }
            assert!(c.deadline().is_some());
        }
        assert_eq!(kept, 2, "HTTP_MAX_IDLE_CONNECTIONS=2");
        // The next request frees an idle place.
        conns[0].bytes_received();
        assert!(conns[0].owes_timeout_response());
        let mut resp = poem::http::Response::new(());
        conns[2].request_started();
        conns[2].response_ready(&mut resp);
        assert!(resp.headers().get("connection").is_none());
        let mut upgrade = poem::http::Response::new(());
        *upgrade.status_mut() = poem::http::StatusCode::SWITCHING_PROTOCOLS;
        conns[1].request_started();
        conns[1].response_ready(&mut upgrade);
        assert!(conns[1].is_upgraded());
        assert_eq!(conns[1].deadline(), None);
        // An upgraded socket keeps counting after its HTTP state is gone.
        let mut conns = conns;
        let slot = conns.remove(1).into_open_slot();
        assert_eq!(reg.open(), 3);
        drop(conns);
        assert_eq!(reg.open(), 1);
        drop(slot);
        assert_eq!(reg.open(), 0);
    }
}
