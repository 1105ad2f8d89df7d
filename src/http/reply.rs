//! Response heads: status line, the fields every response carries, the cached
//! `Date`, and the persistence fields (`Connection`, `Keep-Alive`), written
//! straight into the connection's output with no intermediate allocation.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const SERVER: &str = concat!("linger/", env!("CARGO_PKG_VERSION"));

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(u16);

impl Status {
    pub const CONTINUE: Status = Status(100);
    pub const OK: Status = Status(200);
    pub const ACCEPTED: Status = Status(202);
    pub const NO_CONTENT: Status = Status(204);
    pub const PARTIAL_CONTENT: Status = Status(206);
    pub const MOVED_PERMANENTLY: Status = Status(301);
    pub const NOT_MODIFIED: Status = Status(304);
    pub const BAD_REQUEST: Status = Status(400);
    pub const FORBIDDEN: Status = Status(403);
    pub const NOT_FOUND: Status = Status(404);
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    pub const REQUEST_TIMEOUT: Status = Status(408);
    pub const LENGTH_REQUIRED: Status = Status(411);
    pub const PRECONDITION_FAILED: Status = Status(412);
    pub const CONTENT_TOO_LARGE: Status = Status(413);
    pub const URI_TOO_LONG: Status = Status(414);
    pub const UNSUPPORTED_MEDIA_TYPE: Status = Status(415);
    pub const RANGE_NOT_SATISFIABLE: Status = Status(416);
    pub const EXPECTATION_FAILED: Status = Status(417);
    pub const HEADERS_TOO_LARGE: Status = Status(431);
    pub const INTERNAL_ERROR: Status = Status(500);
    pub const NOT_IMPLEMENTED: Status = Status(501);
    pub const SERVICE_UNAVAILABLE: Status = Status(503);
    pub const VERSION_NOT_SUPPORTED: Status = Status(505);

    pub fn code(self) -> u16 {
        self.0
    }

    /// The status line, pre-rendered so writing it is one copy.
    pub fn line(self) -> &'static str {
        match self.0 {
            100 => "HTTP/1.1 100 Continue\r\n",
            200 => "HTTP/1.1 200 OK\r\n",
            202 => "HTTP/1.1 202 Accepted\r\n",
            204 => "HTTP/1.1 204 No Content\r\n",
            206 => "HTTP/1.1 206 Partial Content\r\n",
            301 => "HTTP/1.1 301 Moved Permanently\r\n",
            304 => "HTTP/1.1 304 Not Modified\r\n",
            400 => "HTTP/1.1 400 Bad Request\r\n",
            403 => "HTTP/1.1 403 Forbidden\r\n",
            404 => "HTTP/1.1 404 Not Found\r\n",
            405 => "HTTP/1.1 405 Method Not Allowed\r\n",
            408 => "HTTP/1.1 408 Request Timeout\r\n",
            411 => "HTTP/1.1 411 Length Required\r\n",
            412 => "HTTP/1.1 412 Precondition Failed\r\n",
            413 => "HTTP/1.1 413 Content Too Large\r\n",
            414 => "HTTP/1.1 414 URI Too Long\r\n",
            415 => "HTTP/1.1 415 Unsupported Media Type\r\n",
            416 => "HTTP/1.1 416 Range Not Satisfiable\r\n",
            417 => "HTTP/1.1 417 Expectation Failed\r\n",
            431 => "HTTP/1.1 431 Request Header Fields Too Large\r\n",
            501 => "HTTP/1.1 501 Not Implemented\r\n",
            503 => "HTTP/1.1 503 Service Unavailable\r\n",
            505 => "HTTP/1.1 505 HTTP Version Not Supported\r\n",
            _ => "HTTP/1.1 500 Internal Server Error\r\n",
        }
    }

    /// The reason phrase alone, for short error bodies.
    pub fn reason(self) -> &'static str {
        let line = self.line();
        &line[13..line.len() - 2]
    }

    /// Statuses whose responses never carry content (RFC 9110 §6.4.1).
    pub fn has_no_body(self) -> bool {
        matches!(self.0, 100..=199 | 204 | 304)
    }
}

/// `Date` rendered once a second, not once a response (RFC 9110 §6.6.1
/// allows second resolution).
pub struct DateCache {
    secs: u64,
    text: [u8; 29],
}

impl DateCache {
    pub fn new(now: SystemTime) -> DateCache {
        let mut cache = DateCache { secs: u64::MAX, text: [b' '; 29] };
        cache.update(now);
        cache
    }

    /// Re-render if the second changed. The caller passes the time in.
    pub fn update(&mut self, now: SystemTime) {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.secs {
            self.secs = secs;
            self.text = http_date(UNIX_EPOCH + Duration::from_secs(secs));
        }
    }

    pub fn unix_secs(&self) -> u64 {
        self.secs
    }

    pub fn text(&self) -> &[u8; 29] {
        &self.text
    }
}

/// IMF-fixdate, always 29 bytes.
pub fn http_date(t: SystemTime) -> [u8; 29] {
    let mut out = [b' '; 29];
    let s = httpdate::fmt_http_date(t);
    let n = s.len().min(29);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

/// What the response says about the connection after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persist {
    /// `Connection: close`: this is the last response.
    Close,
    /// Kept open. Gettys & Freier §7/§11: tell the client the idle timeout
    /// in force and how many requests remain, so that it can close first.
    KeepAlive { timeout_secs: u64, max: u32, http10: bool },
}

impl Persist {
    /// The persistence of the `served`-th response on a connection: kept
    /// open if `keep`, announcing the idle timeout in force and how many
    /// requests are left of `max_requests`.
    pub fn after(keep: bool, timeout_secs: u64, max_requests: u32, served: u32, http10: bool) -> Persist {
        if keep {
            Persist::KeepAlive { timeout_secs, max: max_requests.saturating_sub(served), http10 }
        } else {
            Persist::Close
        }
    }
}

/// Write the status line and the fields every response carries.
pub fn start(out: &mut Vec<u8>, status: Status, date: &[u8; 29]) {
    out.extend_from_slice(status.line().as_bytes());
    out.extend_from_slice(b"Server: ");
    out.extend_from_slice(SERVER.as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
}

pub fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub fn content_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

pub fn persist(out: &mut Vec<u8>, p: Persist) {
    match p {
        Persist::Close => out.extend_from_slice(b"Connection: close\r\n"),
        Persist::KeepAlive { timeout_secs, max, http10 } => {
            // Assembled on the stack and appended with one copy: this runs
            // once per response, and in a pipeline it showed at 4% of the
            // profile when built from slices of variable length (one
            // `memcpy` call each). Constants are copied at fixed lengths and
            // digits written in place.
            const CONN: &[u8] = b"Connection: keep-alive\r\n";
            const TIMEOUT: &[u8] = b"Keep-Alive: timeout=";
            const MAX: &[u8] = b", max=";
            let mut line = [0u8; CONN.len() + TIMEOUT.len() + 20 + MAX.len() + 10 + 2];
            let mut n = 0;
            if http10 {
                line[..CONN.len()].copy_from_slice(CONN);
                n = CONN.len();
            }
            line[n..n + TIMEOUT.len()].copy_from_slice(TIMEOUT);
            n = write_decimal(&mut line, n + TIMEOUT.len(), timeout_secs);
            line[n..n + MAX.len()].copy_from_slice(MAX);
            n = write_decimal(&mut line, n + MAX.len(), u64::from(max));
            line[n..n + 2].copy_from_slice(b"\r\n");
            out.extend_from_slice(&line[..n + 2]);
        }
    }
}

/// Write `n` in decimal into `buf` at `at`; returns the end. `buf` must
/// have room for the digits (at most 20). The length comes from `ilog10`
/// (a few instructions, where a compare loop cost one pass per digit) and
/// the digits two at a time from a table: a division chain per digit was
/// most of `persist`'s time.
#[inline]
fn write_decimal(buf: &mut [u8], at: usize, mut n: u64) -> usize {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    if n < 10 {
        buf[at] = b'0' + n as u8;
        return at + 1;
    }
    if n < 100 {
        // A `Keep-Alive` timeout, most often.
        let pair = n as usize * 2;
        buf[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        return at + 2;
    }
    let digits = n.ilog10() as usize + 1;
    let mut end = at + digits;
    let result = end;
    while n > u64::from(u32::MAX) {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        buf[end - 2..end].copy_from_slice(&PAIRS[pair..pair + 2]);
        end -= 2;
    }
    // The usual values fit 32 bits, whose division is cheaper.
    let mut n = n as u32;
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        buf[end - 2..end].copy_from_slice(&PAIRS[pair..pair + 2]);
        end -= 2;
    }
    if n >= 10 {
        let pair = n as usize * 2;
        buf[end - 2..end].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        buf[end - 1] = b'0' + n as u8;
    }
    result
}

/// End the head.
pub fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

/// A complete response with a short plain-text body (errors, redirects).
/// `extra` is already formatted field lines.
pub fn simple(out: &mut Vec<u8>, status: Status, date: &[u8; 29], persist_as: Persist, extra: &[u8], send_body: bool) {
    start(out, status, date);
    out.extend_from_slice(extra);
    if status.has_no_body() {
        self::persist(out, persist_as);
        end(out);
        return;
    }
    let reason = status.reason();
    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    // body: "404 Not Found\n"
    content_length(out, (reason.len() + 5) as u64);
    self::persist(out, persist_as);
    end(out);
    if send_body {
        push_decimal(out, u64::from(status.code()));
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
        out.push(b'\n');
    }
}

/// Append `n` in decimal without allocating.
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let len = write_decimal(&mut digits, 0, n);
    out.extend_from_slice(&digits[..len]);
}

pub fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_is_cut_from_the_line() {
        assert_eq!(Status::NOT_FOUND.reason(), "Not Found");
        assert_eq!(Status::HEADERS_TOO_LARGE.reason(), "Request Header Fields Too Large");
    }

    #[test]
    fn simple_response_is_well_framed() {
        let mut out = Vec::new();
        let date = http_date(UNIX_EPOCH);
        simple(&mut out, Status::NOT_FOUND, &date, Persist::Close, b"", true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\nServer: linger/"));
        assert!(text.contains("Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"));
        assert!(text.contains("Content-Length: 14\r\nConnection: close\r\n\r\n404 Not Found\n"));
    }

    #[test]
    fn keep_alive_hint() {
        let mut out = Vec::new();
        persist(&mut out, Persist::KeepAlive { timeout_secs: 7, max: 99, http10: true });
        assert_eq!(out, b"Connection: keep-alive\r\nKeep-Alive: timeout=7, max=99\r\n");
        out.clear();
        persist(&mut out, Persist::KeepAlive { timeout_secs: 0, max: 0, http10: false });
        assert_eq!(out, b"Keep-Alive: timeout=0, max=0\r\n");
        out.clear();
        persist(&mut out, Persist::KeepAlive { timeout_secs: u64::MAX, max: u32::MAX, http10: true });
        assert_eq!(out, b"Connection: keep-alive\r\nKeep-Alive: timeout=18446744073709551615, max=4294967295\r\n");
        for n in [
            0u64,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            65535,
            999_999,
            1_000_000,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            10u64.pow(19) - 1,
            10u64.pow(19),
            u64::MAX,
        ]
        .into_iter()
        .chain(0..=100_000)
        {
            let mut buf = [b'#'; 24];
            let end = write_decimal(&mut buf, 2, n);
            assert_eq!(&buf[2..end], n.to_string().as_bytes());
            assert!(buf[..2].iter().chain(&buf[end..]).all(|&b| b == b'#'), "nothing written outside");
        }
    }

    #[test]
    fn decimal_and_hex() {
        let mut out = Vec::new();
        push_decimal(&mut out, 0);
        push_decimal(&mut out, 18446744073709551615);
        push_hex(&mut out, 255);
        assert_eq!(out, b"018446744073709551615ff");
    }

    #[test]
    fn date_cache_changes_once_a_second() {
        let t = UNIX_EPOCH + Duration::from_millis(1_000_500);
        let mut d = DateCache::new(t);
        let before = *d.text();
        d.update(t + Duration::from_millis(400));
        assert_eq!(*d.text(), before);
        d.update(t + Duration::from_millis(600));
        assert_ne!(*d.text(), before);
    }
}
