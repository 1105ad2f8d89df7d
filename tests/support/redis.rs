//! A real `redis-server` for tests: on a free loopback port, persistence
//! off, stopped by its pid. Tests that need one skip (with a note) when
//! `redis-server` is not installed, so the rest of the suite still runs on
//! a machine without it; `.ci/run` installs it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer PING.
const START_WAIT: Duration = Duration::from_secs(10);

pub struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    /// A running server, or `None` (and a note on stderr) when
    /// `redis-server` is missing.
    pub fn start() -> Option<Redis> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("note: redis-server is not installed; skipping this test");
            return None;
        }
        // The port is free when we look and, almost always, still free a
        // moment later; if another process took it, try another.
        for _ in 0..5 {
            let port = free_port();
            let mut redis = Redis { child: None, port };
            if redis.spawn() {
                return Some(redis);
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGKILL, as a crash would: no shutdown, nothing saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill and start again on the same port, empty: a Redis restarted
    /// without persistence.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_WAIT;
        // Redis sets SO_REUSEADDR, so the port is normally free at once.
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart on port {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start on `self.port` and wait until it answers PING; false if it
    /// exited (the port was taken).
    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + START_WAIT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().ok().flatten().is_some()
            {
                self.child = None;
                return false;
            }
            if self.ping() {
                return true;
            }
            // Polling a child process that has no readiness signal: short
            // steps, bounded by the deadline above.
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        false
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(self.addr()) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}
