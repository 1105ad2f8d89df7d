//! Worker processes (`--workers N`): a supervisor binds the listening
//! socket, forks N workers that all accept on it, forwards signals to them,
//! and starts another when one dies. Every wait is bounded; the only pauses
//! are between polls of `/_status`.

mod support;

use std::collections::HashSet;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Reader, Server, WAIT, parse_status};

/// `/_status` on a fresh connection: the pid of the worker that answered.
fn answering_pid(addr: SocketAddr) -> io::Result<u64> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(WAIT))?;
    s.write_all(b"GET /_status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
    let r = Reader::new().response(&mut s, false)?;
    if r.status != 200 {
        return Err(io::Error::other(format!("status {}", r.status)));
    }
    Ok(parse_status(&r.body)["pid"])
}

/// Clients on fresh connections, from a few threads at once, until `n`
/// different workers have answered.
fn worker_pids(server: &Server, n: usize) -> HashSet<u64> {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let deadline = Instant::now() + WAIT;
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let seen = seen.clone();
            scope.spawn(move || {
                while seen.lock().unwrap().len() < n && Instant::now() < deadline {
                    let pid = answering_pid(server.addr).expect("a fresh connection is served");
                    seen.lock().unwrap().insert(pid);
                }
            });
        }
    });
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), n, "workers seen: {seen:?}");
    seen
}

fn parent_of(pid: u64) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The process state letter (`R`, `S`, `T` for stopped...).
fn state_of(pid: u64) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')').next().and_then(|s| s.trim_start().chars().next()).unwrap_or('?')
}

fn exists(pid: u64) -> bool {
    // SAFETY: kill with signal 0 only checks the pid.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

fn signal(pid: u64, sig: i32) {
    // SAFETY: kill(2) on a worker this test started (through its supervisor).
    unsafe { libc::kill(pid as i32, sig) };
}

/// Poll `target` until `pred` holds (bounded by `WAIT`); also returns how
/// many times it was asked.
fn wait_for(server: &Server, target: &str, pred: impl Fn(&std::collections::HashMap<String, u64>, u64) -> bool) -> u64 {
    let deadline = Instant::now() + WAIT;
    let mut asked = 0;
    loop {
        asked += 1;
        let s = server.status_at(target);
        if pred(&s, asked) {
            return asked;
        }
        assert!(Instant::now() < deadline, "timed out on {target}: {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fresh_connections_are_served_by_both_workers_and_neither_is_the_supervisor() {
    let server = Server::start(&["--workers", "2"]);
    let supervisor = u64::from(server.pid());
    let pids = worker_pids(&server, 2);
    assert!(!pids.contains(&supervisor));
    for &pid in &pids {
        assert_eq!(parent_of(pid), supervisor, "worker {pid} is the supervisor's child");
    }
    // SIGHUP and SIGUSR1 are forwarded, and handled: nobody dies of them.
    server.signal(libc::SIGHUP);
    server.signal(libc::SIGUSR1);
    assert_eq!(worker_pids(&server, 2), pids);
    assert!(!server.log().contains("died") && !server.log().contains("killed by"), "{}", server.log());
}

/// Issue 15: SIGKILL one worker under load; fresh connections see no
/// error and a new worker takes its place. The victim is stopped first and
/// the clients seen to go on without it: then it holds none of their
/// connections when it dies (one it had accepted would die with it, as in
/// any server), and that the clients go on shows that the connections
/// waiting in the queue are not its own.
#[test]
fn a_worker_killed_under_load_loses_nothing_and_is_replaced() {
    let server = Server::start(&["--workers", "2"]);
    let first = worker_pids(&server, 2);
    let victim = *first.iter().min().unwrap();
    let stop = AtomicBool::new(false);
    let done: Vec<AtomicUsize> = (0..2).map(|_| AtomicUsize::new(0)).collect();
    let answers = Mutex::new(Vec::new());
    let progress = |at_least: usize, within: Duration| {
        let start: Vec<usize> = done.iter().map(|d| d.load(Ordering::SeqCst)).collect();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if done.iter().zip(&start).all(|(d, s)| d.load(Ordering::SeqCst) >= s + at_least) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    };
    std::thread::scope(|scope| {
        for count in &done {
            let (stop, answers, addr) = (&stop, &answers, server.addr);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let answer = answering_pid(addr).map_err(|e| e.to_string());
                    answers.lock().unwrap().push(answer);
                    count.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        assert!(progress(20, WAIT), "the load runs");
        let mut stopped = false;
        for _ in 0..5 {
            signal(victim, libc::SIGSTOP);
            let deadline = Instant::now() + WAIT;
            while state_of(victim) != 'T' {
                assert!(Instant::now() < deadline, "the victim did not stop");
                std::thread::sleep(Duration::from_millis(1));
            }
            if progress(10, Duration::from_secs(2)) {
                stopped = true;
                break;
            }
            // A client waits on the stopped worker: let it finish, try again.
            signal(victim, libc::SIGCONT);
            assert!(progress(5, WAIT));
        }
        assert!(stopped, "the clients never went on without the stopped worker");
        signal(victim, libc::SIGKILL);
        let killed_at = Instant::now();
        // About a second of load, and until the replacement has answered.
        let deadline = killed_at + WAIT;
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let fresh = answers.lock().unwrap().iter().any(|a| a.as_ref().is_ok_and(|p| !first.contains(p)));
            if fresh && killed_at.elapsed() >= Duration::from_secs(1) {
                break;
            }
            assert!(Instant::now() < deadline, "no new worker answered");
        }
        stop.store(true, Ordering::SeqCst);
    });
    let answers = answers.into_inner().unwrap();
    let failed: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), answers.len());
    let log = server.log();
    assert!(log.contains(&format!("(pid {victim}) was killed by SIGKILL")), "{log}");
    assert!(!exists(victim) || state_of(victim) == 'Z');
    wait_for(&server, "/_status?workers=all", |s, _| s["workers"] == 2);
}

/// SIGTERM reaches every worker: the listeners close, a request under way
/// is answered (with `Connection: close`), and the supervisor exits 0 once
/// every worker has.
#[test]
fn sigterm_stops_every_worker_gracefully_and_exits_zero() {
    let server = Server::start(&["--workers", "2"]);
    let pids = worker_pids(&server, 2);
    let mut s = server.connect();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n").unwrap();
    // Its worker holds it as reading (the status request is the other).
    wait_for(&server, "/_status?workers=all", |s, _| s["reading"] >= 2);
    server.signal(libc::SIGTERM);
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(server.addr).is_ok() {
        assert!(Instant::now() < deadline, "the listeners stay open");
        std::thread::sleep(Duration::from_millis(10));
    }
    s.write_all(b"\r\n").unwrap();
    let r = Reader::new().response(&mut s, false).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, World!"[..]));
    assert!(r.closes(), "in-flight responses close during shutdown");
    drop(s);
    let log_before_exit = server.log();
    assert_eq!(server.wait_exit(), Some(0), "{log_before_exit}");
    for pid in pids {
        assert!(!exists(pid), "worker {pid} outlived its supervisor");
    }
}

/// `/_status?workers=all` sums the live workers: every request the test
/// made is counted once, whichever worker served it (the other workers'
/// figures are at most a second old, so it is asked until they settle).
#[test]
fn status_for_all_workers_sums_them() {
    let server = Server::start(&["--workers", "2", "--max-conns", "500"]);
    const SENT: u64 = 40;
    for _ in 0..SENT {
        assert_eq!(server.get("/hello.txt").status, 200);
    }
    // Each status request is a request on a fresh connection too, counted
    // before its own answer is written.
    let asked = wait_for(&server, "/_status?workers=all", |s, asked| {
        s["workers"] == 2 && s["requests"] == SENT + asked && s["accepted"] == SENT + asked
    });
    assert!(asked >= 1);
    let all = server.status_at("/_status?workers=all");
    assert_eq!(all["max_conns"], 1000, "--max-conns is per worker");
    assert_eq!(all["max_buffer_bytes"], 2 * (256 << 20), "so is --max-buffer-memory");
    assert_eq!(all["idle_timeout_ms"], 60_000);
    let one = server.status();
    assert_eq!((one["workers"], one["max_conns"]), (1, 500), "/_status is the answering worker's");
    assert_ne!(one["pid"], u64::from(server.pid()));
}

/// With one worker there is no supervisor, and `?workers=all` answers as
/// `/_status` does.
#[test]
fn one_worker_is_the_single_process() {
    let server = Server::start(&["--workers", "1"]);
    let one = server.status();
    let all = server.status_at("/_status?workers=all");
    assert_eq!(one.keys().collect::<HashSet<_>>(), all.keys().collect::<HashSet<_>>());
    assert_eq!((one["pid"], all["pid"]), (u64::from(server.pid()), u64::from(server.pid())));
    assert_eq!((one["workers"], all["workers"]), (1, 1));
    assert_eq!(all["requests"], one["requests"] + 1);
}

/// `auto` is the CPUs the process may run on (its affinity mask).
#[test]
fn auto_starts_one_worker_per_cpu() {
    // SAFETY: cpu_set_t is plain data filled by sched_getaffinity.
    let cpus = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set), 0);
        libc::CPU_COUNT(&set) as u64
    };
    let server = Server::start(&["--workers", "auto"]);
    wait_for(&server, "/_status?workers=all", |s, _| s["workers"] == cpus);
    assert_eq!(server.get("/hello.txt").status, 200);
}

#[test]
fn a_bad_worker_count_is_one_line_and_exit_2() {
    for bad in ["0", "many", "-1", "", "1.5"] {
        let out = Command::new(env!("CARGO_BIN_EXE_linger"))
            .args(["--listen", "127.0.0.1:0", "--workers", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--workers {bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--workers"), "{err}");
        assert!(out.stdout.is_empty());
    }
}

/// Without a broker, a channel cannot span workers: `/pub/` and `/sub/`
/// are refused with a reason rather than split silently.
#[test]
fn channels_are_refused_with_a_reason_when_workers_share_no_broker() {
    let server = Server::start(&["--workers", "2"]);
    let publish = "POST /pub/news HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    for raw in [publish, "GET /sub/news HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"] {
        let r = server.request(raw);
        assert_eq!(r.status, 503, "{raw}");
        assert!(r.text().contains("--broker"), "{}", r.text());
        assert!(r.header("retry-after").is_none(), "asking again will not help");
    }
    assert_eq!(server.get("/hello.txt").status, 200, "everything else is served");
}

/// The samples of a Prometheus text page, by name with labels.
fn samples(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?))))
        .collect()
}

/// With workers, each worker logs through a writer of its own into the one
/// file; SIGUSR1 reaches them all through the supervisor, so after a
/// rotation every line is in exactly one of the two files; and
/// `/_metrics?workers=all` counts every worker's requests and response
/// times.
#[test]
fn workers_share_the_access_log_rotate_it_together_and_sum_their_metrics() {
    let dir = support::TempDir::new("workers-log");
    let log = dir.path().join("access.log");
    let server = Server::start(&["--workers", "2", "--access-log", log.to_str().unwrap()]);
    worker_pids(&server, 2);
    let ask = |k: usize| assert_eq!(server.get(&format!("/hello.txt?n={k}")).status, 200);
    for k in 0..40 {
        ask(k);
    }
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    server.signal(libc::SIGUSR1);
    // Until both workers' writers have reopened, a line may still go to the
    // old file; every line must be in exactly one of them either way.
    let mut k = 40;
    let deadline = Instant::now() + WAIT;
    while !log.exists() || k < 80 {
        assert!(Instant::now() < deadline, "no new log file after SIGUSR1");
        ask(k);
        k += 1;
    }
    let lines = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    let deadline = Instant::now() + WAIT;
    loop {
        let all = lines(&rotated) + &lines(&log);
        let missing: Vec<usize> =
            (0..k).filter(|i| all.matches(&format!("GET /hello.txt?n={i} HTTP/1.1")).count() != 1).collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "lines not exactly once across both files: {missing:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!lines(&log).is_empty() && !lines(&rotated).is_empty());
    // Each worker publishes its figures at least once a second.
    let deadline = Instant::now() + WAIT;
    loop {
        let page = server.get("/_metrics?workers=all");
        assert_eq!(page.status, 200);
        let m = samples(&page.text());
        let requests = m.get("linger_requests_total").copied().unwrap_or(0.0);
        let timed = m.get("linger_response_seconds_count").copied().unwrap_or(0.0);
        if m.get("linger_workers") == Some(&2.0) && requests >= k as f64 && timed >= k as f64 {
            break;
        }
        assert!(Instant::now() < deadline, "metrics never covered both workers: {requests} requests, {timed} timed");
        std::thread::sleep(Duration::from_millis(50));
    }
}
