//! A real OpenSSL client (`openssl s_client`) against `TlsSession`: TLS
//! 1.3 and 1.2 handshakes with certificate verification against the test
//! CA, a request, an answer, and the close (close_notify, shut the write
//! half, drain until the client's FIN). Skipped, with a note, where the
//! command is missing.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::session::TlsSession;
use super::testkit::Pki;
use crate::http::Output;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 18\r\nConnection: close\r\n\r\nhello from linger\n";
/// The whole exchange must be over by then, or the test fails (and kills
/// the client): a bound, not a sleep.
const DEADLINE: Duration = Duration::from_secs(20);

/// Wait until `fd` is readable or `ms` pass (poll(2), not a sleep: it
/// returns as soon as the client has sent something).
fn wait_readable(fd: i32, ms: i32) {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one live pollfd, count 1.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

fn accept(listener: &TcpListener, deadline: Instant) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((sock, _)) => {
                sock.set_nonblocking(true).unwrap();
                sock.set_nodelay(true).unwrap();
                return sock;
            }
            Err(_) => wait_readable(listener.as_raw_fd(), 100),
        }
    }
    panic!("openssl s_client did not connect");
}

/// Serve one request on `sock` through a session, then close as the loop
/// will: close_notify, flush, shut the write half, drain until EOF.
fn serve_one(session: &mut TlsSession, sock: &TcpStream, deadline: Instant) {
    let fd = sock.as_raw_fd();
    let mut input = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no request from openssl s_client");
        wait_readable(fd, 100);
        let r = session.read(fd, &mut input, 16 * 1024, false);
        assert!(r.fatal.is_none(), "{:?}", r.fatal);
        session.flush(fd).unwrap();
        if input.ends_with(b"\r\n\r\n") {
            break;
        }
        assert!(!r.peer_eof, "openssl s_client closed early");
    }
    assert_eq!(input, REQUEST);
    assert_eq!(session.alpn(), Some(&b"http/1.1"[..]));
    let mut out = Output::default();
    out.bytes().extend_from_slice(RESPONSE);
    session.send(fd, &mut out, 1 << 20).unwrap();
    session.close_notify();
    while !session.flush(fd).unwrap().all_out {
        assert!(Instant::now() < deadline, "the answer did not leave");
    }
    sock.shutdown(Shutdown::Write).unwrap();
    let mut scratch = [0u8; 4096];
    loop {
        assert!(Instant::now() < deadline, "openssl s_client did not close");
        match (&*sock).read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => wait_readable(fd, 100),
        }
    }
}

#[test]
fn openssl_s_client_completes_a_handshake_and_gets_the_answer() {
    if Command::new("openssl").arg("version").output().is_err() {
        println!("skipped: no openssl command on this machine");
        return;
    }
    let pki = Pki::new("openssl");
    let config = pki.server_config();
    for version in ["-tls1_3", "-tls1_2"] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
            .arg("-CAfile")
            .arg(&pki.ca_path)
            // -quiet implies -ign_eof: the client stays after its input
            // ends, until the server closes.
            .args(["-verify_return_error", "-alpn", "http/1.1", "-quiet", version])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + DEADLINE;
        let sock = accept(&listener, deadline);
        child.stdin.take().unwrap().write_all(REQUEST).unwrap();
        let mut session = TlsSession::new(config.clone()).unwrap();
        serve_one(&mut session, &sock, deadline);
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stdout.contains("hello from linger"), "{version}: stdout {stdout:?} stderr {stderr:?}");
        assert!(!stderr.contains("verify error"), "{version}: {stderr}");
    }
}
