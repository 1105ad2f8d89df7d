//! `GET /_metrics`: Prometheus' text format, checked by `promtool` and by
//! parsing it against `/_status`; the response-time histogram on a driven
//! clock.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use support::driven::Driven;
use support::{Reader, Server, TempDir};

/// Samples by name with labels (`name{a="b"}`), and the families typed.
fn parse(text: &str) -> (HashMap<String, f64>, HashMap<String, String>) {
    let mut samples = HashMap::new();
    let mut types = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_string(), kind.to_string());
        } else if line.starts_with("# HELP ") {
            continue;
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample line {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line:?}"));
            assert!(samples.insert(series.to_string(), value).is_none(), "duplicate {series}");
        }
    }
    (samples, types)
}

#[test]
fn metrics_are_valid_text_format_and_agree_with_status() {
    let server = Server::start(&[]);
    for _ in 0..5 {
        assert_eq!(server.get("/hello.txt").status, 200);
    }
    assert_eq!(server.get("/missing").status, 404);
    let mut s = server.connect();
    s.write_all(&b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n".repeat(10)).unwrap();
    let mut rd = Reader::new();
    for _ in 0..10 {
        assert_eq!(rd.response(&mut s, false).unwrap().status, 200);
    }
    let status = server.status();
    let r = server.get("/_metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = r.text();
    let (samples, types) = parse(&text);
    // Each family is typed, counters end in _total.
    for (name, kind) in &types {
        assert!(name.starts_with("linger_"), "{name}");
        assert_eq!(kind == "counter", name.ends_with("_total"), "{name} is a {kind}");
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has HELP");
    }
    // The same numbers as /_status (one request later: this one).
    assert_eq!(samples["linger_requests_total"], (status["requests"] + 1) as f64);
    assert_eq!(samples["linger_accepted_total"], (status["accepted"] + 1) as f64);
    assert_eq!(samples["linger_connections_max"], status["max_conns"] as f64);
    assert_eq!(samples["linger_idle_timeout_seconds"], status["idle_timeout_ms"] as f64 / 1000.0);
    assert_eq!(samples["linger_idle_timeout_max_seconds"], 60.0);
    assert_eq!(samples["linger_connections{state=\"idle\"}"], status["idle"] as f64);
    assert!(samples.contains_key(&format!("linger_info{{version=\"{}\",pid=\"{}\"}}", "0.1.0", server.pid())));
    // Every response so far was written, each within its turn or so: the
    // histogram counts them all (the /_status request included).
    let count = samples["linger_response_seconds_count"];
    assert_eq!(count, (5 + 1 + 10 + 1) as f64);
    assert_eq!(samples["linger_response_seconds_bucket{le=\"+Inf\"}"], count);
    let mut last = 0.0;
    for le in ["0.0005", "0.001", "0.005", "0.025", "0.1", "0.5", "2.5", "10", "+Inf"] {
        let v = samples[&format!("linger_response_seconds_bucket{{le=\"{le}\"}}")];
        assert!(v >= last, "buckets are cumulative");
        last = v;
    }

    match Command::new("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).output_with(&text) {
        Some(out) => {
            let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
            println!("promtool check metrics: no problem found");
        }
        None => println!("SKIP: promtool is not installed (Debian: prometheus)"),
    }
}

trait OutputWith {
    fn output_with(&mut self, input: &str) -> Option<std::process::Output>;
}

impl OutputWith for Command {
    /// Run with `input` on stdin; `None` if the program is missing.
    fn output_with(&mut self, input: &str) -> Option<std::process::Output> {
        let mut child = self.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().ok()?;
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        Some(child.wait_with_output().unwrap())
    }
}

fn bucket(d: &Driven, le: &str) -> u64 {
    let fields = linger::status::fields(d.server.counters(), &d.gauges(), d.server.channels());
    let text = linger::metrics::render(&fields, &d.server.counters().response_time);
    let (samples, _) = parse(&String::from_utf8(text).unwrap());
    samples[&format!("linger_response_seconds_bucket{{le=\"{le}\"}}")] as u64
}

/// On the loop clock: a response written in its own turn lands in the
/// lowest bucket; one the client takes 30 ms of loop clock to read lands
/// in the 0.1 s bucket (30 ms > 25 ms); a held long poll is not timed.
#[test]
fn response_times_follow_the_loop_clock() {
    let dir = TempDir::new("metrics-driven");
    dir.write("big.bin", &vec![7u8; 8 << 20]);
    let mut d = Driven::start(&["--root", dir.arg()]);
    let mut c = d.connect();
    let r = d.response_to(&mut c, b"GET /nothing-here HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 404);
    assert_eq!(bucket(&d, "0.0005"), 1);
    // 8 MiB that the client does not read yet: the socket fills.
    d.send(&mut c, b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    for _ in 0..5 {
        d.turn();
    }
    assert_eq!(bucket(&d, "+Inf"), 1, "not written yet");
    d.advance(30);
    let mut got = 0;
    d.until("the whole file", |_| {
        c.pump();
        got += c.buf.len();
        c.buf.clear();
        got >= 8 << 20
    });
    d.until("the histogram", |d| bucket(d, "+Inf") == 2);
    assert_eq!((bucket(&d, "0.025"), bucket(&d, "0.1")), (1, 2), "30 ms of loop clock");
    // A long poll held, then answered by its timeout: not a response time.
    let mut p = d.connect();
    d.send(&mut p, b"GET /sub/news HTTP/1.1\r\nHost: t\r\n\r\n");
    d.advance(30_000);
    assert_eq!(d.response(&mut p).status, 204);
    assert_eq!(bucket(&d, "+Inf"), 2);
}
