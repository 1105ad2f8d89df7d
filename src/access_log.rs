//! The access log in Common Log Format. Lines are buffered in memory and
//! written once per loop turn through a non-blocking descriptor: a slow disk
//! or a full pipe never blocks the loop. If the sink stays full, lines are
//! dropped (and counted) rather than letting memory grow.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::http::reply::push_decimal;

/// Past this many buffered bytes, new lines are dropped.
const MAX_BUFFERED: usize = 1 << 20;

pub struct AccessLog {
    sink: File,
    buf: Vec<u8>,
    pub dropped: u64,
    stamp_secs: u64,
    stamp: [u8; 28],
}

impl AccessLog {
    /// `-` is standard output (a duplicate of it, made non-blocking).
    pub fn open(target: &str) -> io::Result<AccessLog> {
        let sink = if target == "-" {
            // SAFETY: dup returns a new descriptor we own, or -1 (checked).
            let fd = unsafe { libc::dup(io::stdout().as_raw_fd()) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh descriptor owned by nobody else.
            unsafe { File::from_raw_fd(fd) }
        } else {
            OpenOptions::new().create(true).append(true).custom_flags(libc::O_CLOEXEC).open(target)?
        };
        set_nonblocking(&sink)?;
        Ok(AccessLog { sink, buf: Vec::with_capacity(64 * 1024), dropped: 0, stamp_secs: u64::MAX, stamp: [b' '; 28] })
    }

    /// `127.0.0.1 - - [22/Nov/2026:02:30:52 +0000] "GET / HTTP/1.1" 200 13`
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
        b.extend_from_slice(method.as_bytes());
        b.push(b' ');
        // The target is client input: escape quotes and controls so a line
        // can't be forged.
        for &c in target.as_bytes() {
            if c == b'"' || c == b'\\' || !(0x20..0x7f).contains(&c) {
                let _ = write!(b, "\\x{c:02x}");
            } else {
                b.push(c);
            }
        }
        b.push(b' ');
        b.extend_from_slice(version.as_bytes());
        b.extend_from_slice(b"\" ");
        push_decimal(b, u64::from(status));
        b.push(b' ');
        if bytes == 0 {
            b.push(b'-');
        } else {
            push_decimal(b, bytes);
        }
        b.push(b'\n');
    }

    /// Write what is buffered; never blocks, keeps what the sink refused.
    pub fn flush(&mut self) {
        while !self.buf.is_empty() {
            match self.sink.write(&self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.buf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }
}

fn set_nonblocking(f: &File) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with plain integer arguments.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
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

    #[test]
    fn clf_time_matches_calendar() {
        assert_eq!(&clf_time(0), b"[01/Jan/1970:00:00:00 +0000]");
        assert_eq!(&clf_time(1_795_314_652), b"[22/Nov/2026:02:30:52 +0000]");
        assert_eq!(&clf_time(951_782_400), b"[29/Feb/2000:00:00:00 +0000]");
    }
}
