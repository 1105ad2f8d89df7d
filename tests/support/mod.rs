//! Test support: a linger process on 127.0.0.1:0 and a small, strict HTTP/1.1
//! client that keeps leftover bytes between responses (for pipelining).
#![allow(dead_code)]

pub mod driven;
pub mod redis;
pub mod tls;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound on any single wait in the tests: generous, never slept.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// The HTTPS listener, when `--tls-listen` was given.
    pub tls_addr: Option<SocketAddr>,
    /// The tail of the server's log (stderr), shown when it exits badly.
    log: Arc<Mutex<Vec<u8>>>,
}

/// How much of the server's log to keep.
const LOG_TAIL: usize = 64 * 1024;

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Server::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_linger"));
        cmd.args(["--listen", "127.0.0.1:0"]).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn linger");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        // Drained all along, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut chunk) {
                let mut kept = sink.lock().unwrap();
                kept.extend_from_slice(&chunk[..n]);
                let excess = kept.len().saturating_sub(LOG_TAIL);
                kept.drain(..excess);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .parse()
            .expect("address");
        let mut tls_addr = None;
        if args.contains(&"--tls-listen") {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read the https line");
            let https = line.trim().strip_prefix("listening on https://");
            tls_addr = Some(https.unwrap_or_else(|| panic!("unexpected line: {line:?}")).parse().expect("address"));
        }
        Server { child, addr, tls_addr, log }
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One request on a fresh connection.
    pub fn request(&self, raw: &str) -> Response {
        let mut s = self.connect();
        s.write_all(raw.as_bytes()).unwrap();
        let mut reader = Reader::new();
        reader.response(&mut s, raw.starts_with("HEAD")).expect("response")
    }

    pub fn get(&self, path: &str) -> Response {
        self.request(&format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
    }

    /// `/_status` as a map of counters.
    pub fn status(&self) -> HashMap<String, u64> {
        self.status_at("/_status")
    }

    /// A status target (`/_status?workers=all`) as a map of counters.
    pub fn status_at(&self, target: &str) -> HashMap<String, u64> {
        let r = self.get(target);
        assert_eq!(r.status, 200, "status endpoint");
        parse_status(&r.body)
    }

    /// What the server has logged so far (the tail of its stderr).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// Poll `/_status` until `pred` holds (bounded by [`WAIT`]).
    pub fn wait_status(&self, what: &str, pred: impl Fn(&HashMap<String, u64>) -> bool) -> HashMap<String, u64> {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.status();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Send a signal without waiting.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Wait (bounded) for the server to exit; its exit code.
    pub fn wait_exit(mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if !status.success() {
                    // The test fails on the status; say why the server ended.
                    let log = self.log.lock().unwrap();
                    eprintln!("server exited with {status}; its log ends:\n{}", String::from_utf8_lossy(&log));
                }
                return status.code();
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Server CPU time (user + system) so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        // utime and stime are fields 14 and 15; after the ")" they are 12 and 13.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf with a valid name.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    /// Signal the server and wait for its exit code.
    pub fn signal_and_wait(self, signal: i32) -> Option<i32> {
        self.signal(signal);
        self.wait_exit()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads responses from a stream, keeping bytes that belong to the next one.
pub struct Reader {
    buf: Vec<u8>,
}

impl Default for Reader {
    fn default() -> Self {
        Reader::new()
    }
}

impl Reader {
    pub fn new() -> Reader {
        Reader { buf: Vec::new() }
    }

    fn fill(&mut self, s: &mut impl Read) -> io::Result<usize> {
        let mut chunk = [0u8; 65536];
        let n = read_retrying(s, &mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Read one complete response. `head_request`: the request was HEAD, so
    /// no body follows whatever the head says.
    pub fn response(&mut self, s: &mut impl Read, head_request: bool) -> io::Result<Response> {
        let mut resp = self.response_head(s)?;
        let status = resp.status;
        if head_request || status == 304 || status == 204 || (100..200).contains(&status) {
            return Ok(resp);
        }
        if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len {
                if self.fill(s)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in body"));
                }
            }
            resp.body = self.buf.drain(..len).collect();
        } else if resp.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            resp.body = self.chunked(s)?;
        } else {
            while self.fill(s)? > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    /// Read a response head only (a stream's body follows).
    pub fn response_head(&mut self, s: &mut impl Read) -> io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill(s)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF in head: {:?}", String::from_utf8_lossy(&self.buf)),
                ));
            }
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).expect("head is UTF-8");
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "status line {status_line:?}");
        let status: u16 = status_line[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once(':').expect("field line");
                (k.to_string(), v.trim().to_string())
            })
            .collect();
        Ok(Response { status, head, headers, body: Vec::new() })
    }

    /// Read one chunk of a chunked body; `None` at the last chunk.
    pub fn chunk(&mut self, s: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
        let line_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                break i;
            }
            if self.fill(s)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in chunk size"));
            }
        };
        let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).expect("chunk size");
        self.buf.drain(..line_end + 2);
        if size == 0 {
            while find(&self.buf, b"\r\n").is_none() {
                if self.fill(s)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in trailer"));
                }
            }
            let end = find(&self.buf, b"\r\n").unwrap();
            self.buf.drain(..end + 2);
            return Ok(None);
        }
        while self.buf.len() < size + 2 {
            if self.fill(s)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in chunk"));
            }
        }
        let data: Vec<u8> = self.buf.drain(..size).collect();
        assert_eq!(&self.buf[..2], b"\r\n");
        self.buf.drain(..2);
        Ok(Some(data))
    }

    fn chunked(&mut self, s: &mut impl Read) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        while let Some(data) = self.chunk(s)? {
            body.extend_from_slice(&data);
        }
        Ok(body)
    }

    /// Read until EOF: what arrived, and whether the end was clean (EOF) or
    /// an error such as ECONNRESET.
    pub fn until_eof(&mut self, s: &mut impl Read) -> (Vec<u8>, io::Result<()>) {
        loop {
            match self.fill(s) {
                Ok(0) => return (std::mem::take(&mut self.buf), Ok(())),
                Ok(_) => {}
                Err(e) => return (std::mem::take(&mut self.buf), Err(e)),
            }
        }
    }

    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }
}

/// The flat JSON of `/_status` as a map.
pub fn parse_status(body: &[u8]) -> HashMap<String, u64> {
    let text = std::str::from_utf8(body).unwrap();
    text.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .map(|kv| {
            let (k, v) = kv.split_once(':').unwrap();
            (k.trim_matches('"').to_string(), v.parse().unwrap())
        })
        .collect()
}

/// `read`, again after `Interrupted`. A blocking read with a timeout
/// (`SO_RCVTIMEO`) fails with EINTR rather than restarting when any signal
/// is queued, even one whose action is to be ignored: a SIGCHLD from a
/// server another test killed is queued while the thread that spawned it
/// has every signal blocked (spawning, exiting), and wakes this one.
pub fn read_retrying(s: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A scratch directory under the target dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("linger-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.0.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, data).unwrap();
        p
    }

    pub fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
