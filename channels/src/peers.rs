//! Peer address allow-lists: single addresses (`10.1.2.3`, `::1`) or CIDR ranges
//! (`10.1.0.0/16`, `fd00::/8`), as a listener's `allowed_peers` takes them.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One allowed address or range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerRange(IpNet);

impl PeerRange {
    /// True when `ip` is this address or inside this range. An IPv4 peer that arrives as an
    /// IPv4-mapped IPv6 address (a listener bound to `[::]`) matches IPv4 entries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

/// True when `peers` is empty (everyone allowed) or one entry contains `ip`.
pub fn allowed(peers: &[PeerRange], ip: IpAddr) -> bool {
    peers.is_empty() || peers.iter().any(|p| p.contains(ip))
}

impl FromStr for PeerRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(PeerRange(IpNet::from(ip)));
        }
        s.parse::<IpNet>()
            .map(|n| PeerRange(n.trunc()))
            .map_err(|_| format!("'{s}' is not an IP address or CIDR range such as 10.0.0.0/8"))
    }
}

impl fmt::Display for PeerRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl<'de> Deserialize<'de> for PeerRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PeerRange {
        s.parse().expect("valid")
    }

    #[test]
    fn single_addresses_and_ranges() {
        let list = [p("10.1.2.3"), p("192.168.0.0/16"), p("fd00::/8")];
        let ok = |ip: &str| allowed(&list, ip.parse().expect("ip"));
        assert!(ok("10.1.2.3"));
        assert!(!ok("10.1.2.4"));
        assert!(ok("192.168.44.1"));
        assert!(!ok("192.169.0.1"));
        assert!(ok("fd12::1"));
        assert!(!ok("fe80::1"));
        assert!(
            ok("::ffff:192.168.1.1"),
            "IPv4-mapped peers match IPv4 ranges"
        );
        assert!(allowed(&[], "8.8.8.8".parse().expect("ip")));
        assert_eq!(p("10.1.2.3").to_string(), "10.1.2.3");
        assert_eq!(p("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert!("10.1.2".parse::<PeerRange>().is_err());
        assert!("10.0.0.0/33".parse::<PeerRange>().is_err());
    }

    #[test]
    fn deserializes_from_strings() {
        #[derive(Deserialize)]
        struct T {
            allowed_peers: Vec<PeerRange>,
        }
        let t: T = toml::from_str("allowed_peers = [\"127.0.0.1\", \"10.0.0.0/8\"]").expect("ok");
        assert_eq!(t.allowed_peers.len(), 2);
        let e = toml::from_str::<T>("allowed_peers = [\"nope\"]")
            .err()
            .expect("invalid");
        assert!(e.to_string().contains("'nope' is not an IP address"), "{e}");
    }
}
