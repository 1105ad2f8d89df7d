//! The command line (DESIGN.md: a contract; add flags, never rename) and
//! the limits it sets, each default with its reason.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use getopts::Options;

use crate::access_log::LogFormat;

#[derive(Clone, Debug)]
pub struct Config {
    /// Plain HTTP listeners (`--listen`, repeatable).
    pub listen: Vec<SocketAddr>,
    /// HTTPS listeners (`--tls-listen`, repeatable), with the certificate
    /// chain and key they serve.
    pub tls_listen: Vec<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub backlog: u32,
    pub max_conns: usize,
    pub max_requests: u32,
    pub idle_timeout: Duration,
    pub min_idle_timeout: Duration,
    pub header_timeout: Duration,
    pub linger_timeout: Duration,
    pub send_timeout: Duration,
    pub quantum: u32,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub max_buffer_memory: usize,
    pub access_log: Option<String>,
    pub access_log_format: LogFormat,
    pub longpoll_timeout: Duration,
    pub sse_ping: Duration,
    pub stream_lifetime: Duration,
    pub channel_history: usize,
    pub max_channels: usize,
    /// Channels live in this Redis, shared by every process and host on it.
    pub broker: Option<crate::broker::BrokerUrl>,
    pub publish_token: Option<String>,
    pub shutdown_timeout: Duration,
    /// Worker processes (`--workers`): 1 is the single process, no
    /// supervisor. Above 1, each worker has `max_conns` slots and
    /// `max_buffer_memory` of its own (nginx's `worker_connections`).
    pub workers: usize,
    /// `--cors-origin` (repeatable, or `*`): origins whose pages may use
    /// the channels (`cors.rs`).
    pub cors_origins: Vec<String>,
    /// `--user NAME[:GROUP]`: the account to serve as, dropped to once the
    /// listeners are bound and the TLS key read (`privileges.rs`).
    pub user: Option<String>,
    pub group: Option<String>,
    /// Test-only: close abortively instead of lingering, to prove the
    /// lingering tests can fail. Set by `LINGER_TEST_ABORTIVE_CLOSE=1`;
    /// deliberately not a flag.
    pub abortive_close: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![DEFAULT_LISTEN],
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            root: None,
            // Seed 001: a short backlog turns bursts into refused SYNs.
            backlog: 1024,
            max_conns: 10_000,
            // Gettys & Freier §9: a cap restores the natural rotation of
            // HTTP/1.0 without its cost per request.
            max_requests: 1000,
            // §11 and Mogul: most of the benefit of a persistent connection
            // comes within about a minute.
            idle_timeout: Duration::from_secs(60),
            min_idle_timeout: Duration::from_secs(2),
            header_timeout: Duration::from_secs(10),
            // Apache and nginx drain for seconds, not minutes.
            linger_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(60),
            quantum: 4,
            max_header_bytes: 8192,
            max_body_bytes: 1 << 20,
            // §11: memory, not CPU, is the controlling resource.
            max_buffer_memory: 256 << 20,
            access_log: None,
            access_log_format: LogFormat::Common,
            // RFC 6202 §5.5: 30 s is the safe value for intermediaries.
            longpoll_timeout: Duration::from_secs(30),
            // Well inside the idle cut-off of common proxies.
            sse_ping: Duration::from_secs(15),
            // §3.2: end streams now and then so clients reconnect and
            // intermediaries release what they buffered.
            stream_lifetime: Duration::from_secs(300),
            channel_history: 100,
            // Any client may name a new channel by subscribing to it: a
            // bound keeps that from growing memory without end. A channel
            // costs about 200 bytes before its history (which all channels
            // share a 32 MiB budget for), so the default bounds the records
            // near 2 MiB.
            max_channels: 10_000,
            broker: None,
            publish_token: None,
            shutdown_timeout: Duration::from_secs(10),
            // One process unless asked: a second process changes what a
            // channel is (it would be split without a broker).
            workers: 1,
            cors_origins: Vec::new(),
            user: None,
            group: None,
            abortive_close: false,
        }
    }
}

/// Where linger listens when no listener is named.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
/// Listeners at most (each is a poll token and a bit in the accept mask).
pub const MAX_LISTENERS: usize = 32;
/// Worker processes at most: far beyond any host's cores, low enough that
/// a typo cannot fork a thousand processes.
pub const MAX_WORKERS: usize = 256;

/// What the command line asked for.
pub enum Command {
    Run(Box<Config>),
    Help(String),
    Version,
}

fn options() -> Options {
    let d = Config::default();
    let mut o = Options::new();
    o.optmulti("l", "listen", &format!("address to serve HTTP on, repeatable [{DEFAULT_LISTEN}]"), "ADDR");
    o.optmulti(
        "",
        "tls-listen",
        "address to serve HTTPS on, repeatable (needs --tls-cert and --tls-key) [off]",
        "ADDR",
    );
    o.optopt("", "tls-cert", "PEM certificate chain for --tls-listen", "PEM");
    o.optopt("", "tls-key", "PEM private key for --tls-listen", "PEM");
    o.optopt("r", "root", "directory to serve; without it the built-in demo site", "DIR");
    o.optopt("", "backlog", &format!("listen backlog [{}]", d.backlog), "N");
    o.optopt("", "max-conns", &format!("connection slots [{}]", d.max_conns), "N");
    o.optopt("", "max-requests", &format!("requests per connection, then Connection: close [{}]", d.max_requests), "N");
    o.optopt("", "idle-timeout", &format!("keep-alive idle timeout when quiet [{}]", secs(d.idle_timeout)), "SECS");
    o.optopt(
        "",
        "min-idle-timeout",
        &format!("idle timeout when slots or memory run short [{}]", secs(d.min_idle_timeout)),
        "SECS",
    );
    o.optopt(
        "",
        "header-timeout",
        &format!("time allowed to send a request head (and body) [{}]", secs(d.header_timeout)),
        "SECS",
    );
    o.optopt(
        "",
        "linger-timeout",
        &format!("how long a closing connection is drained [{}]", secs(d.linger_timeout)),
        "SECS",
    );
    o.optopt(
        "",
        "send-timeout",
        &format!("drop a client that reads nothing of its response for this long [{}]", secs(d.send_timeout)),
        "SECS",
    );
    o.optopt("", "quantum", &format!("requests per connection per scheduler turn [{}]", d.quantum), "N");
    o.optopt("", "max-header-bytes", &format!("larger heads get 431 [{}]", d.max_header_bytes), "N");
    o.optopt("", "max-body-bytes", &format!("larger bodies get 413 [{}]", d.max_body_bytes), "N");
    o.optopt(
        "",
        "max-buffer-memory",
        &format!("connection buffer memory that counts as full occupancy [{}]", d.max_buffer_memory),
        "BYTES",
    );
    o.optopt("", "access-log", "access log file (see --access-log-format), '-' for stdout [off]", "PATH");
    o.optopt(
        "",
        "access-log-format",
        "common (Common Log Format) or combined (adds Referer and User-Agent) [common]",
        "FORMAT",
    );
    o.optopt("", "longpoll-timeout", &format!("how long a long poll is held [{}]", secs(d.longpoll_timeout)), "SECS");
    o.optopt("", "sse-ping", &format!("keep-alive comment interval on event streams [{}]", secs(d.sse_ping)), "SECS");
    o.optopt(
        "",
        "stream-lifetime",
        &format!("streams end after this long so clients reconnect [{}]", secs(d.stream_lifetime)),
        "SECS",
    );
    o.optopt("", "channel-history", &format!("messages kept per channel [{}]", d.channel_history), "N");
    o.optopt(
        "",
        "broker",
        "keep channels in Redis, shared across processes and hosts [in-process]",
        "redis://HOST:PORT[/DB]",
    );
    o.optopt("", "max-channels", &format!("channels at once; a new one past it gets 503 [{}]", d.max_channels), "N");
    o.optopt("", "publish-token", "require 'Authorization: Bearer TOKEN' to publish [loopback only]", "TOKEN");
    o.optopt(
        "",
        "shutdown-timeout",
        &format!("on SIGTERM/SIGINT, time allowed to finish before exiting [{}]", secs(d.shutdown_timeout)),
        "SECS",
    );
    o.optopt(
        "",
        "workers",
        &format!("worker processes, or 'auto' for one per CPU this process may use [{}]", d.workers),
        "N|auto",
    );
    o.optmulti(
        "",
        "cors-origin",
        "let pages from this origin (scheme://host[:port]) use /sub/ and /pub/ across origins, repeatable, \
         or '*' for any [off]",
        "ORIGIN",
    );
    o.optopt(
        "",
        "user",
        "bind (or inherit) the listeners and read the TLS key, then serve as this user (and group); \
         needs root [off]",
        "NAME[:GROUP]",
    );
    o.optflag("h", "help", "print this help");
    o.optflag("V", "version", "print the version");
    o
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 { format!("{s:.0}") } else { format!("{s}") }
}

/// Parse the arguments (without the program name). Errors are one line,
/// meant for `linger: {error}` and exit code 2.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let opts = options();
    let m = opts.parse(args).map_err(|e| e.to_string())?;
    if m.opt_present("help") {
        let brief = "Usage: linger [OPTIONS]\n\nA single-threaded, event-driven HTTP/1.1 server.";
        let mut text = opts.usage(brief);
        text.push_str("\nLogging: RUST_LOG=debug linger ...\n");
        return Ok(Command::Help(text));
    }
    if m.opt_present("version") {
        return Ok(Command::Version);
    }
    if let Some(extra) = m.free.first() {
        return Err(format!("unexpected argument '{extra}' (see --help)"));
    }
    let mut c =
        Config { listen: addresses(&m, "listen")?, tls_listen: addresses(&m, "tls-listen")?, ..Config::default() };
    if c.listen.is_empty() && c.tls_listen.is_empty() {
        c.listen.push(DEFAULT_LISTEN);
    }
    if c.listen.len() + c.tls_listen.len() > MAX_LISTENERS {
        return Err(format!("at most {MAX_LISTENERS} listeners (--listen and --tls-listen together)"));
    }
    c.tls_cert = m.opt_str("tls-cert").map(PathBuf::from);
    c.tls_key = m.opt_str("tls-key").map(PathBuf::from);
    if !c.tls_listen.is_empty() && (c.tls_cert.is_none() || c.tls_key.is_none()) {
        return Err("--tls-listen needs --tls-cert and --tls-key".into());
    }
    c.root = m.opt_str("root").map(PathBuf::from);
    if let Some(root) = &c.root
        && !root.is_dir()
    {
        return Err(format!("invalid value '{}' for --root: not a directory", root.display()));
    }
    c.backlog = number(&m, "backlog", c.backlog, 1, i32::MAX as u64)?;
    c.max_conns = number(&m, "max-conns", c.max_conns, 1, 10_000_000)?;
    c.max_requests = number(&m, "max-requests", c.max_requests, 1, u32::MAX as u64)?;
    c.quantum = number(&m, "quantum", c.quantum, 1, 1_000_000)?;
    c.max_header_bytes = number(&m, "max-header-bytes", c.max_header_bytes, 256, 1 << 20)?;
    c.max_body_bytes = number(&m, "max-body-bytes", c.max_body_bytes, 0, u64::MAX >> 1)?;
    c.max_buffer_memory = number(&m, "max-buffer-memory", c.max_buffer_memory, 1 << 16, usize::MAX as u64 >> 1)?;
    c.idle_timeout = seconds(&m, "idle-timeout", c.idle_timeout)?;
    c.min_idle_timeout = seconds(&m, "min-idle-timeout", c.min_idle_timeout)?;
    c.header_timeout = seconds(&m, "header-timeout", c.header_timeout)?;
    c.linger_timeout = seconds(&m, "linger-timeout", c.linger_timeout)?;
    c.send_timeout = seconds(&m, "send-timeout", c.send_timeout)?;
    if c.min_idle_timeout > c.idle_timeout {
        if m.opt_present("min-idle-timeout") {
            return Err("--min-idle-timeout must not exceed --idle-timeout".into());
        }
        // Only --idle-timeout was given, below the default minimum.
        c.min_idle_timeout = c.idle_timeout;
    }
    c.access_log = m.opt_str("access-log");
    if let Some(v) = m.opt_str("access-log-format") {
        c.access_log_format = LogFormat::parse(&v)
            .ok_or_else(|| format!("invalid value '{v}' for --access-log-format: expected common or combined"))?;
    }
    c.longpoll_timeout = seconds(&m, "longpoll-timeout", c.longpoll_timeout)?;
    c.sse_ping = seconds(&m, "sse-ping", c.sse_ping)?;
    c.stream_lifetime = seconds(&m, "stream-lifetime", c.stream_lifetime)?;
    c.channel_history = number(&m, "channel-history", c.channel_history, 1, 1_000_000)?;
    c.max_channels = number(&m, "max-channels", c.max_channels, 1, 10_000_000)?;
    if let Some(v) = m.opt_str("broker") {
        c.broker = Some(v.parse().map_err(|e| format!("invalid value '{v}' for --broker: {e}"))?);
    }
    c.publish_token = m.opt_str("publish-token");
    c.shutdown_timeout = seconds(&m, "shutdown-timeout", c.shutdown_timeout)?;
    c.workers = workers(&m)?;
    if c.publish_token.as_deref() == Some("") {
        return Err("invalid value '' for --publish-token: must not be empty".into());
    }
    c.cors_origins = m.opt_strs("cors-origin");
    crate::cors::check(&c.cors_origins)?;
    if let Some(v) = m.opt_str("user") {
        let (user, group) = match v.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (v.as_str(), None),
        };
        if user.is_empty() || group == Some("") {
            return Err(format!("invalid value '{v}' for --user: expected NAME or NAME:GROUP"));
        }
        c.user = Some(user.to_owned());
        c.group = group.map(str::to_owned);
    }
    c.abortive_close = std::env::var_os("LINGER_TEST_ABORTIVE_CLOSE").is_some_and(|v| v == "1");
    Ok(Command::Run(Box::new(c)))
}

/// `--workers N|auto`: `auto` is the CPUs this process may run on (its
/// affinity mask, so `taskset` and cpusets are respected), at most
/// [`MAX_WORKERS`].
fn workers(m: &getopts::Matches) -> Result<usize, String> {
    match m.opt_str("workers").as_deref() {
        None => Ok(Config::default().workers),
        Some("auto") => Ok(crate::sys::cpus().clamp(1, MAX_WORKERS)),
        Some(v) => match v.parse::<usize>() {
            Ok(n @ 1..=MAX_WORKERS) => Ok(n),
            _ => Err(format!("invalid value '{v}' for --workers: expected 'auto' or a number from 1 to {MAX_WORKERS}")),
        },
    }
}

/// Every `IP:PORT` given for a repeatable address flag.
fn addresses(m: &getopts::Matches, name: &str) -> Result<Vec<SocketAddr>, String> {
    m.opt_strs(name)
        .iter()
        .map(|v| v.parse().map_err(|_| format!("invalid value '{v}' for --{name}: expected IP:PORT")))
        .collect()
}

fn number<T>(m: &getopts::Matches, name: &str, default: T, min: u64, max: u64) -> Result<T, String>
where
    T: TryFrom<u64>,
{
    let Some(v) = m.opt_str(name) else {
        return Ok(default);
    };
    let n: u64 = v.parse().map_err(|_| format!("invalid value '{v}' for --{name}: expected a whole number"))?;
    if n < min || n > max {
        return Err(format!("invalid value '{v}' for --{name}: must be between {min} and {max}"));
    }
    T::try_from(n).map_err(|_| format!("invalid value '{v}' for --{name}: too large"))
}

/// Seconds, fractions allowed (tests use short timeouts), at least 1 ms.
fn seconds(m: &getopts::Matches, name: &str, default: Duration) -> Result<Duration, String> {
    let Some(v) = m.opt_str(name) else {
        return Ok(default);
    };
    let bad = || format!("invalid value '{v}' for --{name}: expected seconds, like 5 or 0.5");
    let s: f64 = v.parse().map_err(|_| bad())?;
    if !s.is_finite() || !(0.001..=86_400.0 * 365.0).contains(&s) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args)? {
            Command::Run(c) => Ok(*c),
            _ => Err("not a run".into()),
        }
    }

    #[test]
    fn defaults_and_values() {
        let c = run(&[]).unwrap();
        assert_eq!(c.listen, [DEFAULT_LISTEN]);
        let c = run(&["--tls-listen", "[::1]:0", "--tls-cert", "c.pem", "--tls-key", "k.pem", "-l", "127.0.0.1:0"])
            .unwrap();
        assert_eq!((c.listen.len(), c.tls_listen.len()), (1, 1));
        let c = run(&["--tls-listen", "127.0.0.1:0", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert!(c.listen.is_empty(), "--tls-listen alone serves HTTPS only");
        let c = run(&["--user", "www-data:adm"]).unwrap();
        assert_eq!((c.user.as_deref(), c.group.as_deref()), (Some("www-data"), Some("adm")));
        let c = run(&["--listen", "127.0.0.1:0", "--idle-timeout", "0.5", "--quantum", "8"]).unwrap();
        assert_eq!(c.idle_timeout, Duration::from_millis(500));
        assert_eq!(c.min_idle_timeout, Duration::from_millis(500));
        assert_eq!(c.quantum, 8);
        assert_eq!(c.workers, 1, "one process unless asked");
        assert_eq!(run(&["--workers", "3"]).unwrap().workers, 3);
        let auto = run(&["--workers", "auto"]).unwrap().workers;
        assert!((1..=MAX_WORKERS).contains(&auto), "{auto}");
    }

    #[test]
    fn bad_input_is_one_clear_line() {
        for args in [
            &["--max-conns", "many"][..],
            &["--max-conns", "0"],
            &["--listen", "nowhere"],
            &["--tls-listen", "127.0.0.1:0"],
            &["--tls-listen", "127.0.0.1:0", "--tls-cert", "c.pem"],
            &["--broker", "http://localhost"],
            &["--broker", "redis://localhost:99999"],
            &["--idle-timeout", "-1"],
            &["--bogus"],
            &["stray"],
            &["--root", "/definitely/not/here"],
            &["--idle-timeout", "5", "--min-idle-timeout", "9"],
            &["--workers", "0"],
            &["--workers", "many"],
            &["--workers", "-2"],
            &["--workers", "257"],
            &["--user", ""],
            &["--user", "nobody:"],
            &["--user", ":adm"],
            &["--access-log-format", "json"],
            &["--cors-origin", "example.com"],
            &["--cors-origin", "*", "--cors-origin", "https://a.example"],
        ] {
            let err = run(args).unwrap_err();
            assert!(!err.contains('\n') && !err.is_empty(), "{args:?}: {err}");
        }
    }

    #[test]
    fn help_lists_every_flag_with_its_default() {
        let Ok(Command::Help(text)) = parse(&["--help".to_string()]) else { panic!() };
        for flag in [
            "--listen",
            "--root",
            "--max-conns",
            "--idle-timeout",
            "--quantum",
            "--access-log",
            "--user",
            "--access-log-format",
            "--cors-origin",
        ] {
            assert!(text.contains(flag), "{flag}");
        }
        assert!(text.contains("[127.0.0.1:8080]") && text.contains("[10000]"));
    }
}
