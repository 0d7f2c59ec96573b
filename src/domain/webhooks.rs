//! What a webhook may be sent to, and how a delivery is signed: the rules
//! the gateway checks when a subscription is created and the deliverer
//! checks again before every connection (DNS may have changed since).

use hmac::{Hmac, Mac};
use ipnet::IpNet;
use sha2::Sha256;
use std::net::IpAddr;

/// The header that carries a delivery's signature: `t=<unix seconds>,
/// v1=<hex HMAC-SHA256 of "<t>.<body>" under the subscription's secret>`.
pub const SIGNATURE_HEADER: &str = "X-StreamStock-Signature";
pub const EVENT_ID_HEADER: &str = "X-StreamStock-Event-Id";
pub const SEQ_HEADER: &str = "X-StreamStock-Seq";
pub const ATTEMPT_HEADER: &str = "X-StreamStock-Attempt";
pub const SUBSCRIPTION_HEADER: &str = "X-StreamStock-Subscription";

/// The MAC of `<timestamp>.<body>` under `secret`.
fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature header's value for `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

/// Whether `header` is a valid signature of `body` under `secret` (what a
/// receiver checks; the tests' receiver uses it). Compared in constant time.
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signature = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return false;
    };
    mac(secret, timestamp, body)
        .verify_slice(&signature)
        .is_ok()
}

/// The networks webhooks may reach beyond the public internet
/// (`--webhook-allow`). Loopback, link-local (which holds the cloud
/// metadata address 169.254.169.254), unspecified, multicast and broadcast
/// addresses are refused unless a listed network holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    networks: Vec<IpNet>,
}

impl AllowList {
    pub fn new(networks: Vec<IpNet>) -> AllowList {
        AllowList { networks }
    }

    /// Parses `--webhook-allow` values (`127.0.0.0/8`, `::1/128`, or an
    /// address alone for itself).
    pub fn parse(values: &[String]) -> Result<AllowList, String> {
        let mut networks = Vec::new();
        for value in values.iter().flat_map(|v| v.split(',')) {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            let network = value
                .parse::<IpNet>()
                .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("{value:?} is not a network (CIDR such as 10.0.0.0/8) nor an address")
                })?;
            networks.push(network);
        }
        Ok(AllowList { networks })
    }

    /// Why `address` may not be sent to, or None if it may.
    pub fn refusal(&self, address: IpAddr) -> Option<&'static str> {
        if self.networks.iter().any(|n| n.contains(&address)) {
            return None;
        }
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(address),
            v4 => v4,
        };
        let refused = match address {
            IpAddr::V4(v4) if v4.is_loopback() => "a loopback address",
            IpAddr::V4(v4) if v4.is_link_local() => {
                "a link-local address (cloud metadata lives there)"
            }
            IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() => {
                "not a unicast address"
            }
            IpAddr::V6(v6) if v6.is_loopback() => "a loopback address",
            IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => "a link-local address",
            IpAddr::V6(v6) if v6.is_unspecified() || v6.is_multicast() => "not a unicast address",
            // fd00:ec2::254, the IPv6 metadata address of one cloud.
            IpAddr::V6(v6) if v6.segments()[..2] == [0xfd00, 0x0ec2] => "a cloud metadata address",
            _ => return None,
        };
        // A listed network may hold the mapped form's IPv4 address.
        (!self.networks.iter().any(|n| n.contains(&address))).then_some(refused)
    }

    pub fn networks(&self) -> &[IpNet] {
        &self.networks
    }
}

/// A webhook URL, checked for shape: http or https, a host, no
/// credentials, at most 2,000 characters. Where its host leads is checked
/// against the allow-list separately (it needs DNS).
pub fn check_url(raw: &str) -> Result<url::Url, String> {
    if raw.len() > 2000 {
        return Err("at most 2000 characters".into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if url.host().is_none() {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (the signature authenticates deliveries)".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_a_changed_body_does_not() {
        let header = sign("whsec_test", 1_765_000_000, b"{\"seq\":1}");
        assert!(header.starts_with("t=1765000000,v1="), "{header}");
        assert!(verify("whsec_test", &header, b"{\"seq\":1}"));
        assert!(!verify("whsec_test", &header, b"{\"seq\":2}"));
        assert!(!verify("another", &header, b"{\"seq\":1}"));
        assert!(!verify("whsec_test", "t=1,v1=zz", b"{}"));
    }

    #[test]
    fn loopback_link_local_and_metadata_are_refused_unless_listed() {
        let none = AllowList::default();
        for refused in [
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
            "fd00:ec2::254",
        ] {
            assert!(
                none.refusal(refused.parse().unwrap()).is_some(),
                "{refused}"
            );
        }
        for allowed in ["93.184.216.34", "10.1.2.3", "2606:2800:220:1::1"] {
            assert_eq!(none.refusal(allowed.parse().unwrap()), None, "{allowed}");
        }
        let loopback = AllowList::parse(&["127.0.0.0/8".into(), "::1".into()]).unwrap();
        assert_eq!(loopback.refusal("127.0.0.1".parse().unwrap()), None);
        assert_eq!(loopback.refusal("::1".parse().unwrap()), None);
        assert_eq!(loopback.refusal("::ffff:127.0.0.1".parse().unwrap()), None);
        assert!(loopback
            .refusal("169.254.169.254".parse().unwrap())
            .is_some());
        assert!(AllowList::parse(&["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn a_url_must_be_http_with_a_host_and_no_credentials() {
        assert!(check_url("https://hooks.example.com/streamstock").is_ok());
        assert!(check_url("ftp://example.com/").is_err());
        assert!(check_url("http://user:pw@example.com/").is_err());
        assert!(check_url("not a url").is_err());
        assert!(check_url(&format!("https://example.com/{}", "a".repeat(2000))).is_err());
    }
}
