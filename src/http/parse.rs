//! Request heads. Read RFC 9112 §2-§3 and §6.3 first: httparse tokenizes the
//! request line and fields; this module applies the framing rules on top and
//! extracts the handful of fields linger acts on, borrowing from the input so
//! that parsing allocates nothing.

use super::reply::Status;

/// Field lines per head. More gets 431: no legitimate client needs them, and
/// httparse wants a fixed array on the stack.
pub const MAX_HEADERS: usize = 64;

/// The HTTP/2 connection preface (RFC 9113 §3.4), what `h2load` sends
/// without `--h1`.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Options,
    Post,
    Put,
    Delete,
    Trace,
    Patch,
    Connect,
    /// A method linger does not know at all: 501 (RFC 9110 §9.1).
    Other,
}

impl Method {
    fn from_token(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            "CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// Methods whose requests carry content by definition, so a missing
    /// length is the client's error (411) rather than "no body".
    pub fn expects_content(self) -> bool {
        matches!(self, Method::Post | Method::Put | Method::Patch)
    }
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLength {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head. Every slice borrows from the connection's input.
#[derive(Debug)]
pub struct Head<'a> {
    pub method: Method,
    pub method_str: &'a str,
    /// The request target exactly as sent (for the access log).
    pub target: &'a str,
    /// The path: origin-form, or absolute-form with scheme and authority
    /// removed; never empty, query and fragment removed.
    pub path: &'a str,
    pub query: &'a str,
    pub version: Version,
    /// A `Host` field was sent (well-formed, once). Only its presence
    /// matters here (RFC 9112 §3.2: required in HTTP/1.1); linger serves
    /// one site. Not kept as a slice: the head is moved once per request,
    /// and at 256 bytes or less that move is much cheaper.
    pub has_host: bool,
    /// Whether the client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// The client said `Connection: close` (as opposed to HTTP/1.0 default).
    pub client_close: bool,
    pub body: BodyLength,
    pub expect_continue: bool,
    pub if_match: Option<&'a [u8]>,
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub if_unmodified_since: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
    pub range: Option<&'a [u8]>,
    pub accept_event_stream: bool,
    pub last_event_id: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
    /// For the combined access log format.
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// Bytes of input the head occupied.
    pub len: usize,
}

/// Why a head was refused, with the status it earns. Every reject closes the
/// connection: after a framing error the next request cannot be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject {
    pub status: Status,
    pub why: &'static str,
}

impl Reject {
    pub const fn new(status: Status, why: &'static str) -> Reject {
        Reject { status, why }
    }
}

/// The outcome of looking for a request head at the start of `input`.
/// Returned by value once per request and consumed at once: boxing the
/// head would cost an allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed<'a> {
    /// The head is not complete yet.
    Partial,
    Head(Head<'a>),
    /// The peer speaks HTTP/2 (prior knowledge): refuse clearly.
    Http2Preface,
}

/// Parse one request head from the start of `input`.
///
/// `max_head` bounds the whole head: an incomplete head already longer gets
/// 414 if the request line alone is too long, else 431.
///
/// Inlined into its caller (the server's hot path): the result is some 270
/// bytes, and returning it through a call cost about ten instructions per
/// request more (`bench/instructions.sh`).
#[inline(always)]
pub fn parse_head(input: &[u8], max_head: usize) -> Result<Parsed<'_>, Reject> {
    if input.starts_with(H2_PREFACE)
        || (input.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(input) && !input.is_empty())
    {
        return if input.len() >= H2_PREFACE.len() { Ok(Parsed::Http2Preface) } else { Ok(Parsed::Partial) };
    }
    // Uninitialised: zeroing 64 fields (2 KiB) per request showed up in
    // profiles; httparse initialises only the fields it fills.
    let mut fields = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(input, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if input.len() > max_head { Err(too_large(input, max_head)) } else { Ok(Parsed::Partial) };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reject::new(Status::HEADERS_TOO_LARGE, "too many header fields"));
        }
        Err(httparse::Error::Version) => return Err(version_error(input)),
        Err(_) => return Err(Reject::new(Status::BAD_REQUEST, "malformed request head")),
    };
    if len > max_head {
        return Err(too_large(input, max_head));
    }
    let (Some(method_str), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(Reject::new(Status::BAD_REQUEST, "incomplete request line"));
    };
    if !target.is_ascii() {
        return Err(Reject::new(Status::BAD_REQUEST, "request target not ASCII"));
    }
    let version = if minor == 0 { Version::Http10 } else { Version::Http11 };
    let method = Method::from_token(method_str);
    let (path, query) = split_target(method, target)?;
    let mut head = Head {
        method,
        method_str,
        target,
        path,
        query,
        version,
        has_host: false,
        keep_alive: false,
        client_close: false,
        body: BodyLength::None,
        expect_continue: false,
        if_match: None,
        if_none_match: None,
        if_modified_since: None,
        if_unmodified_since: None,
        if_range: None,
        range: None,
        accept_event_stream: false,
        last_event_id: None,
        authorization: None,
        referer: None,
        user_agent: None,
        len,
    };
    read_fields(&mut head, req.headers)?;
    if version == Version::Http11 && !head.has_host {
        // RFC 9112 §3.2: a 1.1 request without Host is a 400.
        return Err(Reject::new(Status::BAD_REQUEST, "HTTP/1.1 request without Host"));
    }
    Ok(Parsed::Head(head))
}

/// The value of field `name` in a head that `parse_head` accepted, looked
/// up again: for the few fields only some routes need (`Origin`, on
/// channel routes with CORS), which would otherwise cost every request a
/// slot in `Head`. `None` if absent, or sent more than once.
pub fn field<'a>(head: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    req.parse(head).ok()?;
    let mut found = req.headers.iter().filter(|f| f.name.eq_ignore_ascii_case(name)).map(|f| trim(f.value));
    let value = found.next()?;
    found.next().is_none().then_some(value)
}

fn too_large(input: &[u8], max_head: usize) -> Reject {
    let line_end = input.iter().position(|&b| b == b'\n');
    match line_end {
        Some(end) if end <= max_head => Reject::new(Status::HEADERS_TOO_LARGE, "request head too large"),
        _ => Reject::new(Status::URI_TOO_LONG, "request line too long"),
    }
}

/// httparse reports any version it cannot parse the same way; answer 505
/// only when the client really named another HTTP version.
fn version_error(input: &[u8]) -> Reject {
    let line = input.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // request-line = method SP request-target SP HTTP-version: exactly
    // three tokens, or the line is malformed whatever its last word says.
    let mut tokens = line.split(|&b| b == b' ');
    let three = tokens.by_ref().take(3).count() == 3 && tokens.next().is_none();
    let token = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    let well_formed = three
        && token.len() == 8
        && token.starts_with(b"HTTP/")
        && token[5].is_ascii_digit()
        && token[6] == b'.'
        && token[7].is_ascii_digit();
    if well_formed {
        Reject::new(Status::VERSION_NOT_SUPPORTED, "HTTP version not supported")
    } else {
        Reject::new(Status::BAD_REQUEST, "malformed request line")
    }
}

/// Split the request target into path and query (RFC 9112 §3.2).
fn split_target(method: Method, target: &str) -> Result<(&str, &str), Reject> {
    let rest = if target.starts_with('/') {
        target
    } else if target == "*" {
        if method != Method::Options {
            return Err(Reject::new(Status::BAD_REQUEST, "asterisk-form only for OPTIONS"));
        }
        return Ok(("*", ""));
    } else if let Some(after_scheme) = strip_scheme(target) {
        // absolute-form: drop the authority, keep the path (RFC 9112 §3.2.2).
        match after_scheme.bytes().position(|b| b == b'/' || b == b'?') {
            Some(i) if after_scheme.as_bytes()[i] == b'/' => &after_scheme[i..],
            _ => "/",
        }
    } else if method == Method::Connect {
        // authority-form: CONNECT is refused later with 405.
        return Ok(("*", ""));
    } else {
        return Err(Reject::new(Status::BAD_REQUEST, "malformed request target"));
    };
    // Byte searches (`char` patterns cost more than the parse itself), one
    // pass for whichever comes first: a fragment ends the target, a query
    // ends the path.
    Ok(match rest.bytes().position(|b| b == b'?' || b == b'#') {
        None => (rest, ""),
        Some(i) if rest.as_bytes()[i] == b'#' => (&rest[..i], ""),
        Some(i) => {
            let query = &rest[i + 1..];
            match query.bytes().position(|b| b == b'#') {
                Some(j) => (&rest[..i], &query[..j]),
                None => (&rest[..i], query),
            }
        }
    })
}

fn strip_scheme(target: &str) -> Option<&str> {
    for scheme in ["http://", "https://"] {
        if target.len() > scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(&target[scheme.len()..]);
        }
    }
    None
}

fn read_fields<'a>(head: &mut Head<'a>, fields: &[httparse::Header<'a>]) -> Result<(), Reject> {
    let mut keep_alive_token = false;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    for field in fields {
        let name = field.name;
        let value = trim(field.value);
        // Dispatch on length first: most fields are rejected by one compare.
        match name.len() {
            4 if name.eq_ignore_ascii_case("host") => {
                if head.has_host {
                    return Err(Reject::new(Status::BAD_REQUEST, "more than one Host"));
                }
                if !valid_host(value) {
                    return Err(Reject::new(Status::BAD_REQUEST, "malformed Host"));
                }
                head.has_host = true;
            }
            10 if name.eq_ignore_ascii_case("connection") => {
                for token in value.split(|&b| b == b',') {
                    let token = trim(token);
                    if token.eq_ignore_ascii_case(b"close") {
                        head.client_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive_token = true;
                    }
                }
            }
            14 if name.eq_ignore_ascii_case("content-length") => {
                // RFC 9112 §6.3 (5): repeated identical values may be
                // accepted; anything else is a smuggling attempt.
                for part in value.split(|&b| b == b',') {
                    let n = parse_decimal(trim(part))
                        .ok_or(Reject::new(Status::BAD_REQUEST, "malformed Content-Length"))?;
                    if content_length.is_some_and(|prev| prev != n) {
                        return Err(Reject::new(Status::BAD_REQUEST, "conflicting Content-Length"));
                    }
                    content_length = Some(n);
                }
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                check_transfer_encoding(value, transfer_encoding)?;
                transfer_encoding = true;
            }
            6 if name.eq_ignore_ascii_case("expect") => {
                if value.eq_ignore_ascii_case(b"100-continue") {
                    head.expect_continue = true;
                } else {
                    return Err(Reject::new(Status::EXPECTATION_FAILED, "unsupported expectation"));
                }
            }
            8 if name.eq_ignore_ascii_case("if-match") => head.if_match = Some(value),
            13 if name.eq_ignore_ascii_case("if-none-match") => head.if_none_match = Some(value),
            17 if name.eq_ignore_ascii_case("if-modified-since") => head.if_modified_since = Some(value),
            19 if name.eq_ignore_ascii_case("if-unmodified-since") => head.if_unmodified_since = Some(value),
            8 if name.eq_ignore_ascii_case("if-range") => head.if_range = Some(value),
            5 if name.eq_ignore_ascii_case("range") => head.range = Some(value),
            6 if name.eq_ignore_ascii_case("accept") => {
                head.accept_event_stream |= contains(value, b"text/event-stream");
            }
            13 if name.eq_ignore_ascii_case("last-event-id") => head.last_event_id = Some(value),
            13 if name.eq_ignore_ascii_case("authorization") => head.authorization = Some(value),
            7 if name.eq_ignore_ascii_case("referer") => head.referer = Some(value),
            10 if name.eq_ignore_ascii_case("user-agent") => head.user_agent = Some(value),
            _ => {}
        }
    }
    head.body = match (content_length, transfer_encoding) {
        // RFC 9112 §6.3 (3): both present is a smuggling signature; refuse.
        (Some(_), true) => {
            return Err(Reject::new(Status::BAD_REQUEST, "both Content-Length and Transfer-Encoding"));
        }
        (_, true) => BodyLength::Chunked,
        (None, false) => BodyLength::None,
        // Length(0) is kept apart from None: it is a framed, empty body
        // (a POST with it needs no 411).
        (Some(n), false) => BodyLength::Length(n),
    };
    head.keep_alive = !head.client_close
        && match head.version {
            Version::Http11 => true,
            Version::Http10 => keep_alive_token,
        };
    if transfer_encoding && head.version == Version::Http10 {
        // RFC 9112 §6.1: a 1.0 message with Transfer-Encoding is suspect;
        // answer it, then close.
        head.keep_alive = false;
    }
    Ok(())
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2):
/// an IP-literal in brackets or a reg-name, then digits only for the port.
fn valid_host(value: &[u8]) -> bool {
    let port = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else { return false };
        let literal = &rest[..close];
        if literal.is_empty() || !literal.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return false;
        }
        match &rest[close + 1..] {
            [] => return true,
            [b':', port @ ..] => port,
            _ => return false,
        }
    } else {
        // reg-name [ ":" port ] in one pass: a reg-name holds no colon, so
        // the first one starts the port and a second one is an error.
        let mut colon = None;
        for (i, &b) in value.iter().enumerate() {
            if !REG_NAME[usize::from(b)] {
                if b != b':' || colon.is_some() {
                    return false;
                }
                colon = Some(i);
            }
        }
        match colon {
            Some(i) => &value[i + 1..],
            None => return true,
        }
    };
    port.iter().all(u8::is_ascii_digit)
}

/// The bytes a reg-name may hold (RFC 3986 §3.2.2: unreserved, sub-delims
/// and `%` for pct-encoded), as a table: one load per byte instead of a
/// chain of compares, on a field every request carries.
const REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~' | b'%' | b'!' | b'$' | b'&' | b'\'')
            || matches!(c, b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=');
        b += 1;
    }
    t
};

/// Accept only `chunked`, once, as the final coding (RFC 9112 §6.1, §6.3).
fn check_transfer_encoding(value: &[u8], seen_before: bool) -> Result<(), Reject> {
    let mut codings = value.split(|&b| b == b',').map(trim).filter(|c| !c.is_empty());
    let Some(last) = codings.next_back() else {
        return Err(Reject::new(Status::BAD_REQUEST, "empty Transfer-Encoding"));
    };
    if seen_before || !last.eq_ignore_ascii_case(b"chunked") {
        return Err(Reject::new(Status::BAD_REQUEST, "chunked is not the final transfer coding"));
    }
    if codings.next().is_some() {
        return Err(Reject::new(Status::NOT_IMPLEMENTED, "unsupported transfer coding"));
    }
    Ok(())
}

/// 1*DIGIT with overflow checked; no sign, no spaces inside.
pub fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
