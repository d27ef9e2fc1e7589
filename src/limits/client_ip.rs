//! The client address of a request: the TCP peer, or, when the peer is a trusted proxy,
//! the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy.

use std::net::IpAddr;

use crate::config::IpRange;

/// Walks `X-Forwarded-For` from the right (the entry the nearest proxy appended) while the
/// hop is trusted; the first untrusted hop is the client. A spoofed entry a client puts on
/// the left is never reached past a real one, and an untrusted peer's header is ignored.
pub fn resolve(peer: IpAddr, headers: &http::HeaderMap, trusted: &[IpRange]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|r| r.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        // An unreadable hop ends the walk: nothing left of it can be believed.
        let Some(ip) = parse_hop(hop) else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter()
            .map(|s| IpRange::try_from(s.to_string()).unwrap())
            .collect()
    }

    fn headers(xff: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn untrusted_peer_header_is_ignored() {
        let peer: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(resolve(peer, &headers("203.0.113.5"), &[]), peer);
    }

    #[test]
    fn rightmost_untrusted_hop_is_the_client() {
        let trusted = ranges(&["10.0.0.0/8", "127.0.0.1"]);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let h = headers("6.6.6.6, 203.0.113.5, 10.1.2.3");
        assert_eq!(
            resolve(peer, &h, &trusted),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(resolve(peer, &http::HeaderMap::new(), &trusted), peer);
        let h = headers("garbage, [2001:db8::1]:443");
        assert_eq!(
            resolve(peer, &h, &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }
}
