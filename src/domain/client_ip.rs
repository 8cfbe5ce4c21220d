//! Who a request comes from, for per-address limits: the socket's peer, or,
//! behind proxies the operator trusts, the last hop of `X-Forwarded-For` that
//! none of them added.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

/// Why a `TRUSTED_PROXIES` entry was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{entry:?} is neither an IP address nor a CIDR block")]
pub struct TrustedProxyError {
    entry: String,
}

/// The addresses (single IPs or CIDR blocks) whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses a comma-separated list such as `10.0.0.0/8, 192.168.1.7, ::1`;
    /// blank entries are ignored, so an empty list trusts nobody.
    ///
    /// # Errors
    /// The first entry that is neither an address nor a CIDR block.
    pub fn parse(list: &str) -> Result<Self, TrustedProxyError> {
        let mut nets = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => {
                    entry
                        .parse::<IpAddr>()
                        .map(IpNet::from)
                        .map_err(|_| TrustedProxyError {
                            entry: entry.chars().take(64).collect(),
                        })?
                }
            };
            nets.push(net);
        }
        Ok(Self { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is one of the trusted proxies. An IPv4 address and its
    /// IPv4-mapped IPv6 spelling (`::ffff:10.0.0.1`, as a dual-stack listener
    /// sees it) are one address: an entry written either way matches both.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        let mapped = match ip {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => None,
        };
        self.nets
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
    }
}

/// The client's address as every limit keys it. Built only by
/// [`ClientIp::resolve`] (or [`ClientIp::from`] for a direct peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(IpAddr);

impl ClientIp {
    /// The peer's address, unless the peer is a trusted proxy: then the last
    /// `X-Forwarded-For` hop (read right to left) that is not a trusted proxy.
    /// A hop that is not an address ends the walk at the hop after it, the
    /// one that reported it; when every hop is trusted, the first one is used.
    pub fn resolve(peer: IpAddr, forwarded_for: Option<&str>, trusted: &TrustedProxies) -> Self {
        let peer = canonical(peer);
        let Some(header) = forwarded_for.filter(|_| trusted.contains(peer)) else {
            return Self(peer);
        };
        let mut client = peer;
        for hop in header.rsplit(',').map(str::trim) {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !trusted.contains(ip) {
                break;
            }
        }
        Self(client)
    }

    pub fn ip(self) -> IpAddr {
        self.0
    }
}

impl From<IpAddr> for ClientIp {
    fn from(ip: IpAddr) -> Self {
        Self(canonical(ip))
    }
}

impl fmt::Display for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An `X-Forwarded-For` hop: an address, possibly with a port (`1.2.3.4:5`,
/// `[::1]:5`), as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| canonical(s.ip()))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn trusted_lists_take_addresses_and_blocks_and_refuse_junk() {
        let t = TrustedProxies::parse(" 10.0.0.0/8, 192.168.1.7 ,::1,").unwrap();
        assert!(t.contains(ip("10.1.2.3")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("::ffff:10.0.0.1")), "IPv4-mapped matches");
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        for bad in ["proxy.local", "10.0.0.0/33", "1.2.3"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_entry_written_as_ipv4_mapped_ipv6_trusts_that_ipv4_address() {
        // Found by the property test below: `::ffff:10.0.0.1` never matched,
        // because peers are compared in their IPv4 spelling.
        let t = TrustedProxies::parse("::ffff:10.0.0.1, ::ffff:192.168.0.0/112").unwrap();
        assert!(t.contains(ip("10.0.0.1")));
        assert!(t.contains(ip("::ffff:10.0.0.1")));
        assert!(t.contains(ip("192.168.3.4")));
        assert!(!t.contains(ip("10.0.0.2")));
        assert!(!t.contains(ip("192.169.0.1")));
        let got = ClientIp::resolve(ip("10.0.0.1"), Some("203.0.113.7"), &t);
        assert_eq!(got.ip(), ip("203.0.113.7"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let t = TrustedProxies::parse("10.0.0.1").unwrap();
        let got = ClientIp::resolve(ip("203.0.113.9"), Some("1.1.1.1"), &t);
        assert_eq!(got.ip(), ip("203.0.113.9"));
        let none = TrustedProxies::default();
        let got = ClientIp::resolve(ip("10.0.0.1"), Some("1.1.1.1"), &none);
        assert_eq!(got.ip(), ip("10.0.0.1"));
    }

    #[test]
    fn behind_trusted_proxies_the_last_untrusted_hop_is_the_client() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        // The client forged the first hop; the proxies appended the rest.
        let header = "6.6.6.6, 198.51.100.4, 10.0.0.2";
        let got = ClientIp::resolve(ip("10.0.0.1"), Some(header), &t);
        assert_eq!(got.ip(), ip("198.51.100.4"));
        let got = ClientIp::resolve(ip("10.0.0.1"), Some("10.0.0.3, 10.0.0.2"), &t);
        assert_eq!(got.ip(), ip("10.0.0.3"), "all trusted: the first hop");
        let got = ClientIp::resolve(ip("10.0.0.1"), None, &t);
        assert_eq!(got.ip(), ip("10.0.0.1"));
        let got = ClientIp::resolve(ip("10.0.0.1"), Some("[2001:db8::1]:443"), &t);
        assert_eq!(got.ip(), ip("2001:db8::1"));
    }

    #[test]
    fn a_garbage_hop_stops_at_the_hop_that_reported_it() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let got = ClientIp::resolve(ip("10.0.0.1"), Some("1.1.1.1, junk, 10.0.0.2"), &t);
        assert_eq!(got.ip(), ip("10.0.0.2"));
        let got = ClientIp::resolve(ip("10.0.0.1"), Some(""), &t);
        assert_eq!(got.ip(), ip("10.0.0.1"));
    }
}

/// `TRUSTED_PROXIES` and `X-Forwarded-For` as anyone may write them.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<std::net::Ipv4Addr>(), 0u8..=32).prop_map(|(ip, len)| IpNet::new(
                ip.into(),
                len
            )
            .unwrap()),
            (any::<std::net::Ipv6Addr>(), 0u8..=128).prop_map(|(ip, len)| IpNet::new(
                ip.into(),
                len
            )
            .unwrap()),
        ]
    }

    /// A forwarded hop: an address (perhaps with a port), or junk.
    fn hop() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<IpAddr>().prop_map(|ip| ip.to_string()),
            any::<std::net::SocketAddr>().prop_map(|s| s.to_string()),
            "[0-9a-f:.\\[\\] ]{0,12}",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_proxy_list_parses_or_names_a_short_bad_entry(list in prop_oneof![
            "[0-9a-f:./, ]{0,40}",
            any::<String>(),
        ]) {
            match TrustedProxies::parse(&list) {
                Ok(_) => {}
                Err(e) => {
                    prop_assert!(e.entry.chars().count() <= 64);
                    prop_assert!(!e.entry.is_empty() && !e.entry.contains(','));
                    prop_assert!(list.contains(e.entry.as_str()));
                }
            }
        }

        #[test]
        fn written_blocks_and_addresses_read_back(
            nets in prop::collection::vec(net(), 1..5),
            probe in any::<IpAddr>(),
        ) {
            let list = nets.iter().map(ToString::to_string).collect::<Vec<_>>().join(" , ");
            let trusted = TrustedProxies::parse(&list).unwrap();
            for n in &nets {
                prop_assert!(trusted.contains(n.network()));
                prop_assert!(trusted.contains(n.addr()));
            }
            // Both spellings of an IPv4 address are the same address.
            let spellings = match probe {
                IpAddr::V4(v4) => vec![probe, IpAddr::V6(v4.to_ipv6_mapped())],
                IpAddr::V6(v6) => std::iter::once(probe)
                    .chain(v6.to_ipv4_mapped().map(IpAddr::V4))
                    .collect(),
            };
            let expected = nets.iter().any(|n| spellings.iter().any(|s| n.contains(s)));
            prop_assert_eq!(trusted.contains(probe), expected, "{} in {}", probe, list);
        }

        #[test]
        fn the_client_is_the_peer_or_a_forwarded_hop(
            peer in any::<IpAddr>(),
            hops in prop::collection::vec(hop(), 0..6),
            trust_peer in any::<bool>(),
            extra in prop::collection::vec(net(), 0..3),
        ) {
            let header = hops.join(",");
            let mut list: Vec<String> = extra.iter().map(ToString::to_string).collect();
            if trust_peer {
                list.push(peer.to_string());
            }
            let trusted = TrustedProxies::parse(&list.join(",")).unwrap();
            let got = ClientIp::resolve(peer, Some(&header), &trusted).ip();
            let named: Vec<IpAddr> = header.split(',').filter_map(|h| parse_hop(h.trim())).collect();
            prop_assert!(got == canonical(peer) || named.contains(&got), "{got} from {header:?}");
            if !trusted.contains(peer) {
                prop_assert_eq!(got, canonical(peer), "an untrusted peer forwards nothing");
            }
            prop_assert_eq!(ClientIp::resolve(peer, None, &trusted).ip(), canonical(peer));
            // Whatever it is, it reads back as itself.
            prop_assert_eq!(got.to_string().parse::<IpAddr>().unwrap(), got);
        }
    }
}
