//! The access log as operators use it: rotated under load with SIGUSR1
//! (logrotate's convention) without losing a line, the combined format,
//! standard output left as it was, and a stalled disk that costs counted
//! lines, never a stalled loop.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::{Reader, Server, TempDir, WAIT};

const HELLO: &[u8] = b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n";

fn lines_in(dir: &Path) -> (usize, Vec<usize>) {
    let mut per_file = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "whole lines only");
        per_file.push(text.lines().count());
    }
    (per_file.iter().sum(), per_file)
}

/// `n` requests pipelined in batches on one connection, every response
/// read.
fn pipelined(server: &Server, n: usize, batch: usize) {
    let mut s = server.connect();
    let mut rd = Reader::new();
    let mut left = n;
    while left > 0 {
        let k = left.min(batch);
        s.write_all(&HELLO.repeat(k)).unwrap();
        for _ in 0..k {
            assert_eq!(rd.response(&mut s, false).unwrap().status, 200);
        }
        left -= k;
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn rotation_under_load_loses_no_line() {
    let dir = TempDir::new("rotate");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("access.log");
    let server = Arc::new(Server::start(&["--access-log", log.to_str().unwrap(), "--max-requests", "1000000"]));
    let stop = Arc::new(AtomicBool::new(false));
    // Four clients pipelining batches of 20 until the rotations are done.
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (server, stop) = (server.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut made = 0;
                while !stop.load(Ordering::Relaxed) {
                    pipelined(&server, 20, 20);
                    made += 20;
                }
                made
            })
        })
        .collect();
    // logrotate, five times while the load runs: rename, then SIGUSR1;
    // the next rotation once linger has made the file anew.
    for rotation in 0..5 {
        std::thread::sleep(Duration::from_millis(30));
        wait_for("the log file", || log.exists());
        std::fs::rename(&log, logs.join(format!("access.log.{rotation}"))).unwrap();
        server.signal(libc::SIGUSR1);
    }
    std::thread::sleep(Duration::from_millis(30));
    stop.store(true, Ordering::Relaxed);
    let made: usize = load.into_iter().map(|t| t.join().unwrap()).sum();
    let status = server.status();
    assert_eq!(status["access_log_dropped"], 0);
    let server = Arc::into_inner(server).unwrap();
    assert_eq!(server.signal_and_wait(libc::SIGTERM), Some(0));
    // Every request made, the status one included, is a line in one of
    // the files: none lost, none written twice.
    let (total, per_file) = lines_in(&logs);
    assert_eq!(total, made + 1, "lines per file {per_file:?}");
    assert_eq!(per_file.len(), 6);
    assert!(per_file.iter().filter(|&&n| n > 0).count() >= 5, "lines in every rotated file: {per_file:?}");
}

#[test]
fn combined_format_escapes_referer_and_user_agent_like_the_target() {
    let dir = TempDir::new("combined");
    let log = dir.path().join("access.log");
    let server = Server::start(&["--access-log", log.to_str().unwrap(), "--access-log-format", "combined"]);
    let mut s = server.connect();
    s.write_all(
        b"GET /hello.txt?q=%22 HTTP/1.1\r\nHost: t\r\nReferer: http://a.example/\"x\"\\y\r\n\
          User-Agent: probe/1.0 \"quoted\" \x80\xff\r\n\r\n",
    )
    .unwrap();
    let mut rd = Reader::new();
    assert_eq!(rd.response(&mut s, false).unwrap().status, 200);
    s.write_all(b"GET /missing HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(rd.response(&mut s, false).unwrap().status, 404);
    // A publish: its line is written once its body is in.
    let r = server
        .request("POST /pub/news HTTP/1.1\r\nHost: t\r\nReferer: http://b.example/\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(r.status, 200);
    wait_for("three lines", || std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 3));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].ends_with(
            "\"GET /hello.txt?q=%22 HTTP/1.1\" 200 13 \"http://a.example/\\x22x\\x22\\x5cy\" \
             \"probe/1.0 \\x22quoted\\x22 \\x80\\xff\""
        ),
        "{}",
        lines[0]
    );
    assert!(lines[1].ends_with("\"GET /missing HTTP/1.0\" 404 14 \"-\" \"-\""), "{}", lines[1]);
    assert!(
        lines[2].contains("\"POST /pub/news HTTP/1.1\" 200 ") && lines[2].ends_with(" \"http://b.example/\" \"-\"")
    );
}

/// `--access-log -` writes to standard output through the writer, and
/// leaves the server's own descriptor 1 blocking (it is shared with
/// whatever else writes there: a non-blocking stdout would make the
/// `listening on` line, or a shell's next write, fail with EAGAIN).
#[test]
fn stdout_log_leaves_stdout_blocking() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_linger"))
        .args(["--listen", "127.0.0.1:0", "--access-log", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on http://").unwrap().to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let r = Reader::new().response(&mut s, false).unwrap();
    assert_eq!(r.status, 200);
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(line.ends_with("\"GET /hello.txt HTTP/1.1\" 200 13\n"), "{line:?}");
    let fdinfo = std::fs::read_to_string(format!("/proc/{}/fdinfo/1", child.id())).unwrap();
    let flags = fdinfo.lines().find_map(|l| l.strip_prefix("flags:")).unwrap().trim();
    let flags = u32::from_str_radix(flags, 8).unwrap();
    assert_eq!(flags & libc::O_NONBLOCK as u32, 0, "stdout flags {flags:o}");
    drop(s);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

/// The processes whose parent is `pid` (from /proc/*/stat).
fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let ppid = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)).and_then(|p| p.parse().ok());
        if ppid == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// A disk that stops (the writer stopped with SIGSTOP): the pipe fills,
/// then lines are dropped and counted while every request is still
/// answered at once. Once it moves again, every request is either a line
/// or counted as dropped.
#[test]
fn a_stalled_disk_costs_counted_lines_not_a_stalled_loop() {
    let dir = TempDir::new("stall");
    let log = dir.path().join("access.log");
    let server = Server::start(&["--access-log", log.to_str().unwrap(), "--max-requests", "100000"]);
    let writers = children_of(server.pid());
    assert_eq!(writers.len(), 1, "one writer process: {writers:?}");
    let writer = writers[0] as i32;
    // SAFETY: kill(2) on the server's child, which this test started.
    unsafe { libc::kill(writer, libc::SIGSTOP) };
    // Well past the pipe (1 MiB) and the server's buffer (1 MiB), at some
    // 90 bytes a line.
    const REQUESTS: usize = 40_000;
    let started = Instant::now();
    pipelined(&server, REQUESTS, 200);
    let status = server.status();
    let dropped = status["access_log_dropped"];
    assert!(dropped > 0, "lines were dropped: {status:?}");
    assert!(started.elapsed() < WAIT, "the loop kept serving");
    // SAFETY: as above.
    unsafe { libc::kill(writer, libc::SIGCONT) };
    assert_eq!(server.signal_and_wait(libc::SIGTERM), Some(0));
    let written = std::fs::read_to_string(&log).unwrap().lines().count() as u64;
    // The status request's own line may or may not have fitted.
    let total = written + dropped;
    assert!(total == REQUESTS as u64 + 1 || total == REQUESTS as u64, "{written} written + {dropped} dropped");
}
