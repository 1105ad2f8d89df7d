//! The access log, in Common or Combined Log Format (Apache's `common`
//! and `combined`, what log analysers read). Lines are buffered in memory
//! and handed once per loop turn to the writer process (`log_writer.rs`)
//! through a non-blocking pipe: a slow or full disk never blocks the loop.
//! When the pipe stays full, the buffer grows to a bound and further lines
//! are dropped and counted (`access_log_dropped` in `/_status`), with the
//! lines the writer itself could not write.

use std::io::{self, Write};
use std::net::SocketAddr;

use log::warn;

use crate::http::reply::push_decimal;
use crate::log_writer::Writer;

/// Past this many buffered bytes (the pipe is full), new lines are
/// dropped: about ten thousand lines, a few turns' worth at full load.
const MAX_BUFFERED: usize = 1 << 20;

/// `--access-log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `%h %l %u %t "%r" %>s %b`
    #[default]
    Common,
    /// Common, then `"%{Referer}i" "%{User-Agent}i"`.
    Combined,
}

impl LogFormat {
    pub fn parse(name: &str) -> Option<LogFormat> {
        match name {
            "common" => Some(LogFormat::Common),
            "combined" => Some(LogFormat::Combined),
            _ => None,
        }
    }
}

/// What a line says about the request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub version: &'a str,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
}

pub struct AccessLog {
    writer: Writer,
    format: LogFormat,
    buf: Vec<u8>,
    /// Lines dropped here (the pipe stayed full, or the writer is gone).
    dropped: u64,
    /// The writer went away: said once.
    broken: bool,
    stamp_secs: u64,
    stamp: [u8; 28],
}

impl AccessLog {
    /// Open `target` (`-` is standard output) and start its writer.
    pub fn open(target: &str, format: LogFormat) -> io::Result<AccessLog> {
        let writer = Writer::spawn(target)?;
        Ok(AccessLog {
            writer,
            format,
            buf: Vec::with_capacity(64 * 1024),
            dropped: 0,
            broken: false,
            stamp_secs: u64::MAX,
            stamp: [b' '; 28],
        })
    }

    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// Lines lost: dropped here, or not written by the writer.
    pub fn dropped(&self) -> u64 {
        self.dropped + self.writer.lost()
    }

    /// `127.0.0.1 - - [22/Nov/2026:02:30:52 +0000] "GET / HTTP/1.1" 200 13`
    /// (in the combined format, Referer and User-Agent unknown: `"-"`).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        now_secs: u64,
        peer: SocketAddr,
        method: &str,
        target: &str,
        version: &str,
        status: u16,
        bytes: u64,
    ) {
        let req = Request { method, target, version, referer: None, user_agent: None };
        self.record_request(now_secs, peer, &req, status, bytes);
    }

    /// One line for `req`, in the configured format.
    pub fn record_request(&mut self, now_secs: u64, peer: SocketAddr, req: &Request<'_>, status: u16, bytes: u64) {
        if self.buf.len() > MAX_BUFFERED {
            self.dropped += 1;
            return;
        }
        if now_secs != self.stamp_secs {
            self.stamp_secs = now_secs;
            self.stamp = clf_time(now_secs);
        }
        let b = &mut self.buf;
        let _ = write!(b, "{} - - ", peer.ip());
        b.extend_from_slice(&self.stamp);
        b.extend_from_slice(b" \"");
        b.extend_from_slice(req.method.as_bytes());
        b.push(b' ');
        escape(b, req.target.as_bytes());
        b.push(b' ');
        b.extend_from_slice(req.version.as_bytes());
        b.extend_from_slice(b"\" ");
        push_decimal(b, u64::from(status));
        b.push(b' ');
        if bytes == 0 {
            b.push(b'-');
        } else {
            push_decimal(b, bytes);
        }
        if self.format == LogFormat::Combined {
            for field in [req.referer, req.user_agent] {
                b.extend_from_slice(b" \"");
                match field {
                    Some(value) => escape(b, value),
                    None => b.push(b'-'),
                }
                b.push(b'"');
            }
        }
        b.push(b'\n');
    }

    /// Hand what is buffered to the writer; never blocks, keeps what the
    /// pipe refused.
    pub fn flush(&mut self) {
        while !self.buf.is_empty() {
            match self.writer.write(&self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // The writer is gone (EPIPE): nothing will take these.
                    if !self.broken {
                        self.broken = true;
                        warn!("access log writer gone ({e}); lines are dropped and counted");
                    }
                    self.dropped += self.buf.iter().filter(|&&c| c == b'\n').count() as u64;
                    self.buf.clear();
                }
            }
        }
    }

    /// SIGUSR1 (logrotate): the writer finishes the lines it has in the
    /// old file and opens the path anew; no line is lost in between.
    pub fn reopen(&mut self) {
        self.flush();
        self.writer.reopen();
    }
}

impl Drop for AccessLog {
    /// The server is exiting: hand over what is left (waiting a little for
    /// room in the pipe: nothing else runs any more), then let the writer
    /// finish.
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        self.flush();
        while !self.buf.is_empty() && !self.broken && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
            self.flush();
        }
        self.writer.finish();
    }
}

/// Client input (the target, Referer, User-Agent) in a line: quotes,
/// backslashes, controls and non-ASCII bytes become `\xHH`, so a line
/// cannot be forged or broken.
fn escape(out: &mut Vec<u8>, value: &[u8]) {
    for &c in value {
        if c == b'"' || c == b'\\' || !(0x20..0x7f).contains(&c) {
            let _ = write!(out, "\\x{c:02x}");
        } else {
            out.push(c);
        }
    }
}

/// `[22/Nov/2026:02:30:52 +0000]`: UTC, so no time zone database is needed.
fn clf_time(secs: u64) -> [u8; 28] {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let text = format!(
        "[{:02}/{}/{:04}:{:02}:{:02}:{:02} +0000]",
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let mut out = [b' '; 28];
    let n = text.len().min(28);
    out[..n].copy_from_slice(&text.as_bytes()[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("linger-access-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn lines_of(format: LogFormat, reqs: &[Request<'_>]) -> Vec<String> {
        let dir = temp(&format!("{format:?}"));
        let path = dir.join("access.log");
        {
            let mut log = AccessLog::open(path.to_str().unwrap(), format).unwrap();
            let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
            for r in reqs {
                log.record_request(1_795_314_652, peer, r, 200, 13);
            }
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_dir_all(dir);
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn common_and_combined_lines() {
        let get = Request { method: "GET", target: "/a?b=\"c\"", version: "HTTP/1.1", ..Request::default() };
        let with = Request { referer: Some(b"http://x/\"q\"\\"), user_agent: Some(b"curl/8 \x80\x01"), ..get };
        let common = lines_of(LogFormat::Common, &[get, with]);
        let head = "127.0.0.1 - - [22/Nov/2026:02:30:52 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" 200 13";
        assert_eq!(common, [head, head]);
        let combined = lines_of(LogFormat::Combined, &[get, with]);
        assert_eq!(combined[0], format!("{head} \"-\" \"-\""));
        assert_eq!(combined[1], format!("{head} \"http://x/\\x22q\\x22\\x5c\" \"curl/8 \\x80\\x01\""));
        assert_eq!(LogFormat::parse("combined"), Some(LogFormat::Combined));
        assert_eq!(LogFormat::parse("json"), None);
    }

    #[test]
    fn clf_time_matches_calendar() {
        assert_eq!(&clf_time(0), b"[01/Jan/1970:00:00:00 +0000]");
        assert_eq!(&clf_time(1_795_314_652), b"[22/Nov/2026:02:30:52 +0000]");
        assert_eq!(&clf_time(951_782_400), b"[29/Feb/2000:00:00:00 +0000]");
    }
}
