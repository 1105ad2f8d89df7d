//! The `--broker` value: `redis://HOST[:PORT][/DB]`.
//!
//! HOST is an IPv4 literal, a bracketed IPv6 literal (`[::1]`) or a host
//! name. PORT defaults to 6379, Redis's own port, as `redis-cli -u` and
//! every Redis client library do. DB is 0–15 (Redis's default `databases
//! 16`) and defaults to 0. Credentials, TLS (`rediss://`) and query
//! parameters are refused with a message saying so, rather than ignored.
//!
//! Nothing here resolves a name: `ToSocketAddrs` calls `getaddrinfo`,
//! which blocks, and the event loop must never block. A literal IP gives
//! its `SocketAddr` at once ([`BrokerUrl::addr`]); for a name the caller
//! resolves `(name, port)` once at start-up, before the loop runs, and
//! keeps the addresses (so a Redis that moves to a new address is followed
//! only by restarting linger).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Redis's well-known port.
pub const DEFAULT_PORT: u16 = 6379;
/// Highest database index accepted (Redis's default `databases 16`).
pub const MAX_DB: u8 = 15;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// A DNS name, syntactically valid, not yet resolved.
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrl {
    pub host: Host,
    pub port: u16,
    pub db: u8,
}

impl BrokerUrl {
    /// The address to connect to when HOST is an IP literal; `None` for a
    /// name, which the caller resolves once at start-up.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Name(_) => None,
        }
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "redis://[{ip}]:{}/{}", self.port, self.db),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "redis://{ip}:{}/{}", self.port, self.db),
            Host::Name(name) => write!(f, "redis://{name}:{}/{}", self.port, self.db),
        }
    }
}

impl FromStr for BrokerUrl {
    /// One line saying what is wrong, for
    /// `linger: invalid value '...' for --broker: <this>`.
    type Err = String;

    fn from_str(s: &str) -> Result<BrokerUrl, String> {
        let Some(rest) = s.strip_prefix("redis://") else {
            if s.starts_with("rediss://") {
                return Err("TLS (rediss://) is not supported".into());
            }
            return Err("expected redis://HOST[:PORT][/DB]".into());
        };
        if rest.contains(['?', '#']) {
            return Err("query parameters are not supported".into());
        }
        let (authority, db) = match rest.split_once('/') {
            Some((a, d)) => (a, Some(d)),
            None => (rest, None),
        };
        if authority.contains('@') {
            return Err("credentials (USER:PASSWORD@) are not supported".into());
        }
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            None => DEFAULT_PORT,
            Some("") => return Err("missing port after ':'".into()),
            Some(p) => parse_port(p)?,
        };
        let db = match db {
            None | Some("") => 0,
            Some(d) => parse_db(d)?,
        };
        Ok(BrokerUrl { host, port, db })
    }
}

/// `HOST[:PORT]`, HOST possibly `[IPv6]`.
fn split_host_port(authority: &str) -> Result<(Host, Option<&str>), String> {
    if authority.is_empty() {
        return Err("missing host".into());
    }
    if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Err("unterminated '[' in the host".into());
        };
        let ip = Ipv6Addr::from_str(inside).map_err(|_| format!("'{inside}' is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(format!("unexpected '{after}' after the IPv6 address")),
            },
        };
        return Ok((Host::Ip(IpAddr::V6(ip)), port));
    }
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if port.is_some_and(|p| p.contains(':')) {
        return Err("an IPv6 host must be in brackets, e.g. redis://[::1]:6379".into());
    }
    Ok((parse_host(host)?, port))
}

fn parse_host(host: &str) -> Result<Host, String> {
    if host.is_empty() {
        return Err("missing host".into());
    }
    // A host made only of digits and dots is meant as an IPv4 address;
    // `getaddrinfo` would take forms like `127.1` as one, which is a
    // surprise worth refusing.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Ipv4Addr::from_str(host)
            .map(|ip| Host::Ip(IpAddr::V4(ip)))
            .map_err(|_| format!("'{host}' is not an IPv4 address"));
    }
    // RFC 1123 §2.1: labels of letters, digits and hyphens, 1-63 bytes, not
    // starting or ending with a hyphen; 253 bytes in all.
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("'{host}' is not a valid host name"));
    }
    Ok(Host::Name(host.to_owned()))
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(port) if port > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(format!("port must be 1-65535, got '{p}'")),
    }
}

fn parse_db(d: &str) -> Result<u8, String> {
    match d.parse::<u8>() {
        Ok(db) if db <= MAX_DB && d.bytes().all(|b| b.is_ascii_digit()) => Ok(db),
        _ => Err(format!("database must be 0-{MAX_DB}, got '{d}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> BrokerUrl {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        s.parse::<BrokerUrl>().expect_err(s)
    }

    #[test]
    fn accepted_forms() {
        let u = ok("redis://127.0.0.1:6380/2");
        assert_eq!(u, BrokerUrl { host: Host::Ip("127.0.0.1".parse().unwrap()), port: 6380, db: 2 });
        assert_eq!(u.addr(), Some("127.0.0.1:6380".parse().unwrap()));
        let u = ok("redis://[::1]:7000");
        assert_eq!(u.addr(), Some("[::1]:7000".parse().unwrap()));
        assert_eq!(u.db, 0);
        assert_eq!(ok("redis://[::1]").port, DEFAULT_PORT);
        let u = ok("redis://cache.example-1.internal/15");
        assert_eq!(u.host, Host::Name("cache.example-1.internal".into()));
        assert_eq!((u.port, u.db, u.addr()), (DEFAULT_PORT, 15, None));
        assert_eq!(ok("redis://localhost:1/").db, 0);
        assert_eq!(ok("redis://redis.").host, Host::Name("redis.".into()));
        assert_eq!(ok("redis://[::1]:7000/3").to_string(), "redis://[::1]:7000/3");
    }

    #[test]
    fn refused_with_one_line_each() {
        let cases = [
            ("localhost:6379", "expected redis://HOST[:PORT][/DB]"),
            ("http://x", "expected redis://HOST[:PORT][/DB]"),
            ("rediss://x", "TLS (rediss://) is not supported"),
            ("redis://", "missing host"),
            ("redis://:6379", "missing host"),
            ("redis://h:", "missing port after ':'"),
            ("redis://h:0", "port must be 1-65535, got '0'"),
            ("redis://h:65536", "port must be 1-65535, got '65536'"),
            ("redis://h:+80", "port must be 1-65535, got '+80'"),
            ("redis://h:x", "port must be 1-65535, got 'x'"),
            ("redis://h/16", "database must be 0-15, got '16'"),
            ("redis://h/a", "database must be 0-15, got 'a'"),
            ("redis://h/1/2", "database must be 0-15, got '1/2'"),
            ("redis://::1", "an IPv6 host must be in brackets, e.g. redis://[::1]:6379"),
            ("redis://[::1", "unterminated '[' in the host"),
            ("redis://[zz]:1", "'zz' is not an IPv6 address"),
            ("redis://[::1]x", "unexpected 'x' after the IPv6 address"),
            ("redis://256.0.0.1", "'256.0.0.1' is not an IPv4 address"),
            ("redis://127.1", "'127.1' is not an IPv4 address"),
            ("redis://a_b", "'a_b' is not a valid host name"),
            ("redis://-a.b", "'-a.b' is not a valid host name"),
            ("redis://a..b", "'a..b' is not a valid host name"),
            ("redis://u:p@h", "credentials (USER:PASSWORD@) are not supported"),
            ("redis://h?db=1", "query parameters are not supported"),
        ];
        for (input, want) in cases {
            let got = err(input);
            assert_eq!(got, want, "{input}");
            assert!(!got.contains('\n'));
        }
        assert!(err(&format!("redis://{}", "a".repeat(64))).contains("not a valid host name"));
    }
}
