//! Where a node finds its first peers: static multiaddrs, `host:port`, or a DNS name that resolves
//! to many addresses (a Kubernetes headless Service: one A record per ready pod), resolved again
//! every rediscovery interval so pods that come later are found.

use std::net::{IpAddr, SocketAddr};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// One `--p2p-bootstrap` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// A fixed address, `/ip4|ip6/…/tcp/…` (optionally ending in `/p2p/<id>`) or `ip:port`.
    Addr(Multiaddr),
    /// A name to resolve each round, `/dns|dns4|dns6/<name>/tcp/<port>` or `name:port`.
    Name { host: String, port: u16 },
}

impl std::str::FromStr for Bootstrap {
    type Err = String;

    fn from_str(s: &str) -> Result<Bootstrap, String> {
        let s = s.trim();
        let hint = "expected /ip4/ADDR/tcp/PORT, /dns4/NAME/tcp/PORT, HOST:PORT or IP:PORT";
        if s.starts_with('/') {
            let addr: Multiaddr = s
                .parse()
                .map_err(|e| format!("{s:?} is not a multiaddr ({e}); {hint}"))?;
            let mut parts = addr.iter();
            let host = parts.next();
            let port = match parts.next() {
                Some(Protocol::Tcp(port)) if port != 0 => port,
                _ => return Err(format!("{s:?} names no TCP port; {hint}")),
            };
            match parts.next() {
                None | Some(Protocol::P2p(_)) if parts.next().is_none() => {}
                _ => {
                    return Err(format!(
                        "{s:?} has parts after the TCP port other than /p2p/<id>; {hint}"
                    ));
                }
            }
            return match host {
                Some(Protocol::Ip4(_) | Protocol::Ip6(_)) => Ok(Bootstrap::Addr(addr)),
                Some(Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h)) => {
                    Ok(Bootstrap::Name {
                        host: h.into_owned(),
                        port,
                    })
                }
                _ => Err(format!(
                    "{s:?} starts with neither an IP nor a DNS name; {hint}"
                )),
            };
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(format!("{s:?} has port 0; {hint}"));
            }
            return Ok(Bootstrap::Addr(tcp_addr(addr)));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} has no port; {hint}"))?;
        let port: u16 =
            port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                format!("{s:?}: the port must be a number from 1 to 65535; {hint}")
            })?;
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(format!("{s:?}: {host:?} is not a host name; {hint}"));
        }
        Ok(Bootstrap::Name {
            host: host.to_owned(),
            port,
        })
    }
}

impl Bootstrap {
    /// The addresses to dial now: a fixed address as it is, a name as it resolves this round
    /// (an unresolvable name is no address this round, logged, and tried again the next).
    pub async fn resolve(&self) -> Vec<Multiaddr> {
        match self {
            Bootstrap::Addr(a) => vec![a.clone()],
            Bootstrap::Name { host, port } => {
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(addrs) => {
                        let mut out: Vec<Multiaddr> = addrs.map(tcp_addr).collect();
                        out.sort();
                        out.dedup();
                        out
                    }
                    Err(e) => {
                        tracing::warn!(%host, port, error = %e, "a bootstrap name does not resolve this round; it is tried again at the next");
                        Vec::new()
                    }
                }
            }
        }
    }
}

/// `/ip4|ip6/<ip>/tcp/<port>`.
pub fn tcp_addr(addr: SocketAddr) -> Multiaddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    Multiaddr::empty().with(ip).with(Protocol::Tcp(addr.port()))
}

/// The socket address of `/ip4|ip6/<ip>/tcp/<port>/…`, if it is one.
pub(crate) fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = addr.iter();
    let ip: IpAddr = match parts.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    match parts.next()? {
        Protocol::Tcp(port) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_documented_form_parses() {
        let cases = [
            (
                "/ip4/127.0.0.1/tcp/4001",
                Bootstrap::Addr("/ip4/127.0.0.1/tcp/4001".parse().unwrap()),
            ),
            (
                "127.0.0.1:4001",
                Bootstrap::Addr("/ip4/127.0.0.1/tcp/4001".parse().unwrap()),
            ),
            (
                "[::1]:4001",
                Bootstrap::Addr("/ip6/::1/tcp/4001".parse().unwrap()),
            ),
            (
                "ferry-peers.ferry.svc.cluster.local:5001",
                Bootstrap::Name {
                    host: "ferry-peers.ferry.svc.cluster.local".into(),
                    port: 5001,
                },
            ),
            (
                "/dns4/ferry-peers/tcp/5001",
                Bootstrap::Name {
                    host: "ferry-peers".into(),
                    port: 5001,
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Bootstrap>().as_ref(), Ok(&want), "{text}");
        }
        let with_id =
            "/ip4/198.18.0.1/tcp/5001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        assert!(matches!(
            with_id.parse::<Bootstrap>(),
            Ok(Bootstrap::Addr(_))
        ));
    }

    #[test]
    fn bad_entries_say_which_forms_are_accepted() {
        for bad in [
            "",
            "host",
            "host:0",
            "host:99999",
            "/ip4/1.2.3.4",
            "/ip4/1.2.3.4/udp/5",
            "/ip4/1.2.3.4/tcp/5/ws",
            "bad_host:80",
            "a..b:80",
        ] {
            let e = bad.parse::<Bootstrap>().unwrap_err();
            assert!(e.contains("expected"), "{bad:?}: {e}");
        }
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_addresses() {
        let b: Bootstrap = "localhost:4001".parse().unwrap();
        let addrs = b.resolve().await;
        assert!(!addrs.is_empty());
        for a in addrs {
            assert!(socket_addr(&a).unwrap().ip().is_loopback(), "{a}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_with_the_accepted_forms(text in "\\PC{0,80}") {
            if let Err(e) = text.parse::<Bootstrap>() {
                prop_assert!(e.contains("expected"));
            }
        }

        #[test]
        fn socket_addresses_round_trip(ip in any::<std::net::Ipv4Addr>(), port in 1u16..) {
            let addr = SocketAddr::new(ip.into(), port);
            let parsed: Bootstrap = addr.to_string().parse().unwrap();
            prop_assert_eq!(parsed, Bootstrap::Addr(tcp_addr(addr)));
            prop_assert_eq!(socket_addr(&tcp_addr(addr)), Some(addr));
        }
    }
}
