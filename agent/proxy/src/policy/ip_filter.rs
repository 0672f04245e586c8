//! `ip_filter`: CIDR allow and deny lists (deny wins), and which address is the client's.

use std::net::IpAddr;

use http::{HeaderMap, StatusCode};
use ipnet::IpNet;
use portico_api::pb;

use super::Rejection;

/// A compiled `ip_filter`.
#[derive(Debug)]
pub struct IpFilter {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    trusted: Vec<IpNet>,
}

/// CIDRs or single addresses, as validation accepts them; anything else is left out (it
/// cannot be there after validation).
fn nets(list: &[String]) -> Vec<IpNet> {
    list.iter()
        .filter_map(|s| {
            s.parse::<IpNet>()
                .ok()
                .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

impl IpFilter {
    /// Compiles the filter.
    pub fn compile(spec: &pb::IpFilter) -> IpFilter {
        IpFilter {
            allow: nets(&spec.allow),
            deny: nets(&spec.deny),
            trusted: nets(&spec.trusted_proxies),
        }
    }

    /// The client's address: `peer`, or, when `peer` is a trusted proxy, the rightmost address
    /// of X-Forwarded-For that is not one (the leftmost when all are).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.trusted.is_empty() || !contains(&self.trusted, peer) {
            return peer;
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                // A hop that is no address cannot be trusted to have told the truth before it.
                return client;
            };
            client = ip.to_canonical();
            if !contains(&self.trusted, client) {
                return client;
            }
        }
        client
    }

    /// Whether `client` may pass.
    pub fn check(&self, client: IpAddr) -> Result<(), Rejection> {
        let denied = contains(&self.deny, client)
            || (!self.allow.is_empty() && !contains(&self.allow, client));
        if denied {
            Err(Rejection::new(StatusCode::FORBIDDEN, "ip_denied"))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn filter(allow: &[&str], deny: &[&str], trusted: &[&str]) -> IpFilter {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        IpFilter::compile(&pb::IpFilter {
            allow: list(allow),
            deny: list(deny),
            trusted_proxies: list(trusted),
        })
    }

    #[test]
    fn deny_wins_and_an_allow_list_denies_the_rest() {
        let f = filter(&["10.0.0.0/8", "2001:db8::/32"], &["10.6.0.0/16"], &[]);
        let ok = |ip: &str| f.check(ip.parse().unwrap()).is_ok();
        assert!(ok("10.1.2.3"));
        assert!(!ok("10.6.0.1"));
        assert!(!ok("192.168.1.1"));
        assert!(ok("2001:db8::1"));
        assert!(!ok("2001:db9::1"));
        let deny_only = filter(&[], &["127.0.0.0/8", "::1"], &[]);
        assert!(deny_only.check("127.0.0.1".parse().unwrap()).is_err());
        assert!(deny_only.check("::1".parse().unwrap()).is_err());
        assert!(deny_only.check("192.0.2.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let f = filter(&[], &[], &["10.0.0.0/8"]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "1.1.1.1, 2.2.2.2, 10.0.0.9".parse().unwrap(),
        );
        let peer = |ip: &str| ip.parse::<IpAddr>().unwrap();
        assert_eq!(f.client(peer("10.0.0.1"), &headers), peer("2.2.2.2"));
        assert_eq!(f.client(peer("192.0.2.1"), &headers), peer("192.0.2.1"));
        assert_eq!(
            f.client(peer("::ffff:10.0.0.1"), &HeaderMap::new()),
            peer("10.0.0.1")
        );
        let mut all_trusted = HeaderMap::new();
        all_trusted.insert("x-forwarded-for", "10.0.0.3, 10.0.0.2".parse().unwrap());
        assert_eq!(f.client(peer("10.0.0.1"), &all_trusted), peer("10.0.0.3"));
    }
}
