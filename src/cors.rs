//! Cross-origin access to channels (`--cors-origin`), so that a page
//! served from another origin can subscribe with `EventSource` or long
//! polling and publish with `fetch` (the Fetch standard's CORS protocol,
//! fetch.spec.whatwg.org, "CORS protocol").
//!
//! Only the channel routes (`/sub/`, `/pub/`) carry these fields; static
//! files and the server's own pages never do. Per configured origin the
//! field lines are rendered once, at start-up, and shared (`Rc`): a grant
//! costs a reference count, not an allocation. The origin a request names
//! is looked up in its head only on channel routes, and only when CORS is
//! configured (`parse::field`), so the head every request is parsed into
//! stays as it was.
//!
//! - `*`: `Access-Control-Allow-Origin: *` for every request, without
//!   credentials (the standard forbids `*` with them).
//! - Listed origins: a request whose `Origin` is listed (exactly, as the
//!   browser serializes it, RFC 6454 §6.1) gets that origin back,
//!   `Access-Control-Allow-Credentials: true` (cookies and HTTP
//!   authentication may be sent) and `Vary: Origin`; any other gets only
//!   `Vary: Origin` (the answer depends on the Origin, so a cache must
//!   key on it) and no CORS field: the browser then refuses the page the
//!   response.
//! - `OPTIONS` (the preflight a `fetch` with `Authorization` or a JSON
//!   `Content-Type` sends first) also gets the methods, the request fields
//!   allowed (`Authorization` for `--publish-token`, `Content-Type`, and
//!   `Last-Event-ID` for resuming) and how long the answer may be cached.

use std::rc::Rc;

/// The request fields a page may send.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";
/// How long a preflight answer may be cached, in seconds: two hours, the
/// most Chromium honours (Firefox allows a day).
const MAX_AGE: u32 = 7200;

/// What a response is for, as far as CORS goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A subscription or a publish.
    Plain,
    /// `OPTIONS /pub/NAME`: a preflight for a publish.
    PreflightPublish,
    /// `OPTIONS /sub/NAME`: a preflight for a subscription (a long poll
    /// with `Last-Event-ID` set by the page).
    PreflightSubscribe,
}

/// The field lines for one answer, per kind.
#[derive(Debug)]
struct Fields {
    plain: Rc<[u8]>,
    publish: Rc<[u8]>,
    subscribe: Rc<[u8]>,
}

impl Fields {
    fn render(allow_origin: &str, credentials: bool) -> Fields {
        let mut plain = format!("Access-Control-Allow-Origin: {allow_origin}\r\n");
        if credentials {
            plain.push_str("Access-Control-Allow-Credentials: true\r\nVary: Origin\r\n");
        }
        let preflight = |methods: &str| -> Rc<[u8]> {
            let text = format!(
                "{plain}Access-Control-Allow-Methods: {methods}\r\nAccess-Control-Allow-Headers: {ALLOW_HEADERS}\r\n\
                 Access-Control-Max-Age: {MAX_AGE}\r\n"
            );
            text.into_bytes().into()
        };
        Fields {
            publish: preflight("POST, OPTIONS"),
            subscribe: preflight("GET, OPTIONS"),
            plain: plain.into_bytes().into(),
        }
    }

    fn get(&self, kind: Kind) -> Rc<[u8]> {
        match kind {
            Kind::Plain => self.plain.clone(),
            Kind::PreflightPublish => self.publish.clone(),
            Kind::PreflightSubscribe => self.subscribe.clone(),
        }
    }
}

#[derive(Debug, Default)]
enum Policy {
    #[default]
    Off,
    Any(Fields),
    Listed {
        origins: Vec<(Box<str>, Fields)>,
        other: Rc<[u8]>,
    },
}

/// The `--cors-origin` policy, with its answers rendered.
#[derive(Debug, Default)]
pub struct Cors {
    policy: Policy,
}

impl Cors {
    /// From the `--cors-origin` values (already checked by `check`).
    pub fn new(origins: &[String]) -> Cors {
        let policy = match origins {
            [] => Policy::Off,
            [any] if any == "*" => Policy::Any(Fields::render("*", false)),
            list => Policy::Listed {
                origins: list.iter().map(|o| (o.as_str().into(), Fields::render(o, true))).collect(),
                other: b"Vary: Origin\r\n".as_slice().into(),
            },
        };
        Cors { policy }
    }

    /// Whether any cross-origin access is configured (else the request's
    /// Origin need not even be looked up).
    pub fn is_on(&self) -> bool {
        !matches!(self.policy, Policy::Off)
    }

    /// The field lines for a channel response to a request with this
    /// `Origin` (`None`: it sent none); `None` means no fields at all.
    pub fn grant(&self, origin: Option<&[u8]>, kind: Kind) -> Option<Rc<[u8]>> {
        match &self.policy {
            Policy::Off => None,
            Policy::Any(fields) => Some(fields.get(kind)),
            Policy::Listed { origins, other } => {
                let listed = origin.and_then(|o| origins.iter().find(|(allowed, _)| allowed.as_bytes() == o));
                Some(listed.map_or_else(|| other.clone(), |(_, fields)| fields.get(kind)))
            }
        }
    }
}

/// Check the `--cors-origin` values: `*` alone, or origins as browsers
/// send them (`scheme://host[:port]`, no path, no trailing slash). Errors
/// are one line.
pub fn check(values: &[String]) -> Result<(), String> {
    if values.iter().any(|v| v == "*") {
        return if values.len() == 1 {
            Ok(())
        } else {
            Err("--cors-origin '*' cannot be combined with origins".into())
        };
    }
    for v in values {
        let bad = |why: &str| format!("invalid value '{v}' for --cors-origin: {why}");
        let Some((scheme, rest)) = v.split_once("://") else {
            return Err(bad("expected '*' or an origin like https://example.com"));
        };
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        if rest.is_empty() || rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(bad("an origin is scheme://host[:port], without a path or a trailing slash"));
        }
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b)) {
            return Err(bad("unexpected characters (an origin is written in ASCII, as the browser sends it)"));
        }
        if rest.bytes().any(|b| b.is_ascii_uppercase()) || scheme.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("browsers send origins in lower case"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: Option<Rc<[u8]>>) -> String {
        f.map(|f| String::from_utf8(f.to_vec()).unwrap()).unwrap_or_default()
    }

    #[test]
    fn off_grants_nothing() {
        let c = Cors::new(&[]);
        assert!(!c.is_on());
        assert_eq!(c.grant(Some(b"https://a.example"), Kind::Plain), None);
    }

    #[test]
    fn any_origin_without_credentials() {
        let c = Cors::new(&["*".into()]);
        assert!(c.is_on());
        for origin in [Some(&b"https://a.example"[..]), None] {
            assert_eq!(text(c.grant(origin, Kind::Plain)), "Access-Control-Allow-Origin: *\r\n");
        }
        let pre = text(c.grant(Some(b"https://a.example"), Kind::PreflightPublish));
        assert!(pre.contains("Access-Control-Allow-Methods: POST, OPTIONS\r\n"), "{pre}");
        assert!(!pre.contains("Credentials") && !pre.contains("Vary"), "{pre}");
    }

    #[test]
    fn listed_origins_are_echoed_with_credentials_and_vary() {
        let c = Cors::new(&["https://a.example".into(), "http://127.0.0.1:8081".into()]);
        assert_eq!(
            text(c.grant(Some(b"http://127.0.0.1:8081"), Kind::Plain)),
            "Access-Control-Allow-Origin: http://127.0.0.1:8081\r\nAccess-Control-Allow-Credentials: true\r\n\
             Vary: Origin\r\n"
        );
        let publish = text(c.grant(Some(b"https://a.example"), Kind::PreflightPublish));
        assert!(publish.starts_with("Access-Control-Allow-Origin: https://a.example\r\n"), "{publish}");
        assert!(publish.contains("Access-Control-Allow-Methods: POST, OPTIONS\r\n"));
        assert!(publish.contains("Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID\r\n"));
        assert!(publish.ends_with("Access-Control-Max-Age: 7200\r\n"));
        let subscribe = text(c.grant(Some(b"https://a.example"), Kind::PreflightSubscribe));
        assert!(subscribe.contains("Access-Control-Allow-Methods: GET, OPTIONS\r\n"));
        // Not listed (or no Origin, or a near miss): no CORS field, but
        // the answer still varies with the Origin.
        for other in [Some(&b"https://b.example"[..]), Some(b"https://a.example/"), Some(b"null"), None] {
            assert_eq!(text(c.grant(other, Kind::PreflightPublish)), "Vary: Origin\r\n", "{other:?}");
        }
    }

    #[test]
    fn values_are_checked() {
        for ok in [&["*"][..], &["https://a.example"], &["http://127.0.0.1:8081", "https://[::1]:8443"]] {
            let v: Vec<String> = ok.iter().map(|s| s.to_string()).collect();
            assert_eq!(check(&v), Ok(()), "{ok:?}");
        }
        for bad in [
            &["*", "https://a.example"][..],
            &["a.example"],
            &["ftp://a.example"],
            &["https://a.example/"],
            &["https://a.example/path"],
            &["https://"],
            &["https://A.example"],
            &["https://a example"],
        ] {
            let v: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            let e = check(&v).unwrap_err();
            assert!(e.starts_with("invalid value") || e.contains("cannot be combined"), "{e}");
            assert!(!e.contains('\n'));
        }
    }

    // The service with CORS on: byte strings in, responses out.

    use crate::replay::{World, loopback};

    fn world(origins: &[&str]) -> World {
        let mut w = World::small();
        w.service.set_cors(Cors::new(&origins.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
        w
    }

    fn answer(w: &mut World, request: &str) -> String {
        String::from_utf8(crate::replay::replay(w, &[request.as_bytes()])).unwrap()
    }

    fn heads(text: &str) -> Vec<&str> {
        text.split("\r\n\r\n").filter(|h| h.starts_with("HTTP/1.1 ")).collect()
    }

    #[test]
    fn channel_routes_carry_the_fields_and_nothing_else_does() {
        let mut w = world(&["http://127.0.0.1:8081"]);
        let from = "Origin: http://127.0.0.1:8081\r\n";
        let publish = answer(&mut w, &format!("POST /pub/a HTTP/1.1\r\nHost: t\r\n{from}Content-Length: 2\r\n\r\nhi"));
        assert!(publish.contains("\r\nAccess-Control-Allow-Origin: http://127.0.0.1:8081\r\n"), "{publish}");
        assert!(publish.contains("\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"));
        assert!(publish.ends_with("{\"id\":1,\"subscribers\":0}\n"), "the body follows: {publish}");
        let poll = answer(&mut w, &format!("GET /sub/a?since=0 HTTP/1.1\r\nHost: t\r\n{from}\r\n"));
        assert!(poll.contains("Access-Control-Allow-Origin: http://127.0.0.1:8081\r\n"), "{poll}");
        // A refusal carries them too, so that the page can read it.
        let bad = answer(&mut w, &format!("GET /sub/no%20spaces HTTP/1.1\r\nHost: t\r\n{from}\r\n"));
        assert!(bad.starts_with("HTTP/1.1 400 ") && bad.contains("Access-Control-Allow-Origin: "), "{bad}");
        for other in ["GET /hello.txt", "GET /_status", "OPTIONS /hello.txt"] {
            let text = answer(&mut w, &format!("{other} HTTP/1.1\r\nHost: t\r\n{from}\r\n"));
            assert!(!text.contains("Access-Control") && !text.contains("Vary"), "{other}: {text}");
        }
    }

    #[test]
    fn a_preflight_for_publishing() {
        let mut w = world(&["https://a.example"]);
        let text = answer(
            &mut w,
            "OPTIONS /pub/a HTTP/1.1\r\nHost: t\r\nOrigin: https://a.example\r\n\
             Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n",
        );
        let head = heads(&text)[0];
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        for line in [
            "Access-Control-Allow-Origin: https://a.example",
            "Access-Control-Allow-Credentials: true",
            "Vary: Origin",
            "Access-Control-Allow-Methods: POST, OPTIONS",
            "Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID",
            "Access-Control-Max-Age: 7200",
            "Allow: POST, OPTIONS",
        ] {
            assert!(head.contains(&format!("\r\n{line}\r\n")), "{line} in {head}");
        }
        // From an origin not listed: no CORS field, so the browser stops.
        let text = answer(&mut w, "OPTIONS /pub/a HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n\r\n");
        assert!(!text.contains("Access-Control") && text.contains("\r\nVary: Origin\r\n"), "{text}");
    }

    #[test]
    fn any_origin_and_a_stream() {
        let mut w = world(&["*"]);
        let text = answer(
            &mut w,
            "GET /sub/a HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nOrigin: https://x.example\r\n\r\n",
        );
        let head = heads(&text)[0];
        assert!(head.contains("\r\nAccess-Control-Allow-Origin: *\r\n") && !head.contains("Credentials"), "{head}");
        // The subscription handed to the server keeps the fields for the
        // responses that end it (a long poll's 204, its message).
        let mut proto = crate::http::Proto::new();
        let mut out = crate::http::Output::default();
        let (_, step) = w.serve(&mut proto, b"GET /sub/b HTTP/1.1\r\nHost: t\r\n\r\n", &mut out, loopback());
        let crate::service::Step::Subscribe(start) = step else { panic!("{step:?}") };
        assert_eq!(start.cors.as_deref(), Some(&b"Access-Control-Allow-Origin: *\r\n"[..]));
    }
}
