//! `TlsSession` against a real rustls client over loopback TCP, one
//! thread, bounded loops, no sleeps: handshakes, requests and responses,
//! resumption, ALPN refusal, close_notify both ways, back-pressure, and
//! what does not speak TLS.

use std::fs::File;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;

use rustls::client::{Resumption, Tls12Resumption};
use rustls::version::{TLS12, TLS13};
use rustls::{AlertDescription, HandshakeKind, ProtocolVersion, SupportedProtocolVersion};

use super::outcome::{Fatal, TlsRead};
use super::session::TlsSession;
use super::sniff;
use super::testkit::{Pair, Pki, ROUNDS, tcp_pair};
use crate::http::Output;

const REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
const H11: &[&[u8]] = &[b"http/1.1"];
const VERSIONS: [(&SupportedProtocolVersion, ProtocolVersion); 2] =
    [(&TLS13, ProtocolVersion::TLSv1_3), (&TLS12, ProtocolVersion::TLSv1_2)];

#[test]
fn handshake_request_and_response_on_tls13_and_tls12() {
    let pki = Pki::new("exchange");
    for (version, wire) in VERSIONS {
        let mut p = Pair::new(pki.server_config(), pki.client_config(&[version], H11));
        p.handshake();
        assert!(!p.server.is_handshaking());
        assert_eq!(p.server.protocol_version(), Some(wire));
        assert_eq!(p.server.alpn(), Some(&b"http/1.1"[..]));
        assert_eq!(p.client.handshake_kind(), Some(HandshakeKind::Full));

        p.client_send(REQUEST);
        let r = p.server_wants(REQUEST.len());
        assert_eq!(p.input, REQUEST);
        assert_eq!(r.added, REQUEST.len());
        assert!(r.drained && !r.more_plaintext && !r.peer_eof && !r.close_notify && !r.handshaking);
        p.respond(RESPONSE);
    }
}

#[test]
fn clients_offering_http11_among_others_or_no_alpn_are_served() {
    let pki = Pki::new("alpn");
    for (offer, chosen) in [(&[&b"h2"[..], b"http/1.1"][..], Some(&b"http/1.1"[..])), (&[], None)] {
        let mut p = Pair::new(pki.server_config(), pki.client_config(&[&TLS13], offer));
        p.handshake();
        assert_eq!(p.server.alpn(), chosen);
    }
}

#[test]
fn a_client_offering_only_h2_is_refused_with_no_application_protocol() {
    let pki = Pki::new("h2-only");
    let mut p = Pair::new(pki.server_config(), pki.client_config(&[&TLS13], &[b"h2"]));
    p.client_io().unwrap();
    let r = p.server_read();
    assert!(matches!(r.fatal, Some(Fatal::Tls(rustls::Error::NoApplicationProtocol))), "{:?}", r.fatal);
    assert!(p.server.wants_write(), "the alert is queued");
    assert!(p.server_flush().all_out);
    let seen = p.client_io().unwrap_err();
    assert_eq!(seen, rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol));
}

#[test]
fn the_second_connection_resumes() {
    let pki = Pki::new("resume");
    // TLS 1.3 tickets, TLS 1.2 tickets (RFC 5077), TLS 1.2 session ids
    // (the server's bounded cache).
    let id_only = Resumption::in_memory_sessions(16).tls12_resumption(Tls12Resumption::SessionIdOnly);
    let cases = [(&TLS13, None), (&TLS12, None), (&TLS12, Some(id_only))];
    for (version, resumption) in cases {
        let mut client = Arc::unwrap_or_clone(pki.client_config(&[version], H11));
        if let Some(resumption) = resumption {
            client.resumption = resumption;
        }
        let client = Arc::new(client);
        let server = pki.server_config();
        let mut first = Pair::new(server.clone(), client.clone());
        first.handshake();
        first.client_send(REQUEST);
        first.server_wants(REQUEST.len());
        first.respond(RESPONSE);
        assert_eq!(first.client.handshake_kind(), Some(HandshakeKind::Full));

        let mut second = Pair::new(server, client);
        second.handshake();
        assert_eq!(second.client.handshake_kind(), Some(HandshakeKind::Resumed), "{version:?}");
        second.client_send(REQUEST);
        second.server_wants(REQUEST.len());
        second.respond(RESPONSE);
    }
}

#[test]
fn a_file_cut_short_under_us_is_an_error_not_a_short_body() {
    let pki = Pki::new("short-file");
    let mut p = Pair::new(pki.server_config(), pki.client_config(&[&TLS13], H11));
    p.handshake();
    let path = pki.file("short.bin", vec![7u8; 1000]);
    let mut out = Output::default();
    out.file(Rc::new(File::open(&path).unwrap()), 0, 5000);
    let e = p.server.write(&mut out, 1 << 20).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
}

#[test]
fn close_notify_from_the_server_then_nothing_is_written() {
    let pki = Pki::new("close-server");
    let mut p = Pair::new(pki.server_config(), pki.client_config(&[&TLS13], H11));
    p.handshake();
    p.server.close_notify();
    assert!(p.server.is_closed());
    let mut out = Output::default();
    out.bytes().extend_from_slice(b"too late");
    assert_eq!(p.server.write(&mut out, 1024).unwrap(), 0, "write after close_notify is a no-op");
    assert_eq!(out.pending(), 8, "the output is left as it was");
    assert!(p.server_flush().all_out);
    for _ in 0..ROUNDS {
        p.client_io().unwrap();
        if p.client_saw_close {
            break;
        }
    }
    assert!(p.client_saw_close, "the client read a clean close");
    assert!(p.received.is_empty(), "nothing followed the close_notify");
}

#[test]
fn close_notify_from_the_client_ends_its_input_after_what_it_sent() {
    let pki = Pki::new("close-client");
    for (version, wire) in VERSIONS {
        let mut p = Pair::new(pki.server_config(), pki.client_config(&[version], H11));
        p.handshake();
        p.client.writer().write_all(REQUEST).unwrap();
        p.client.send_close_notify();
        p.client_io().unwrap();
        let r = p.server_wants(REQUEST.len());
        let r = if r.close_notify { r } else { p.server_read() };
        assert_eq!(p.input, REQUEST, "the request before the close_notify is delivered");
        assert!(r.close_notify && r.fatal.is_none());
        assert!(p.server.read(p.sfd(), &mut p.input, 16 * 1024, false).close_notify, "sticky");
        // TLS 1.3 closes one direction: the response may still be sent.
        // TLS 1.2 closes both: answer with our own close_notify at once.
        assert_eq!(p.server.reply_close_notify_at_once(), wire == ProtocolVersion::TLSv1_2);
        if wire == ProtocolVersion::TLSv1_3 {
            p.respond(RESPONSE);
        }
        p.server.close_notify();
        p.server_flush();
        for _ in 0..ROUNDS {
            p.client_io().unwrap();
            if p.client_saw_close {
                break;
            }
        }
        assert!(p.client_saw_close);
    }
}

#[test]
fn a_full_input_leaves_plaintext_in_rustls_until_there_is_room() {
    let pki = Pki::new("backpressure");
    let mut p = Pair::new(pki.server_config(), pki.client_config(&[&TLS13], H11));
    p.handshake();
    let body: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    p.client.writer().write_all(&body).unwrap();
    p.client_io().unwrap();
    p.limit = 1000;
    let mut got = Vec::new();
    let mut stalled = 0;
    for _ in 0..ROUNDS {
        let r = p.server_read();
        assert!(p.input.len() <= 1000, "never past the limit");
        stalled += usize::from(r.more_plaintext);
        got.append(&mut p.input);
        if got.len() == body.len() {
            break;
        }
        p.client_io().unwrap();
    }
    assert_eq!(got, body);
    assert!(stalled > 0, "the limit held plaintext back");
}

#[test]
fn a_fin_announced_by_the_event_is_read_in_the_same_call() {
    let pki = Pki::new("fin");
    let mut p = Pair::new(pki.server_config(), pki.client_config(&[&TLS13], H11));
    p.handshake();
    p.client_send(REQUEST);
    p.csock.shutdown(Shutdown::Write).unwrap();
    let fd = p.sfd();
    let mut r = p.server.read(fd, &mut p.input, 16 * 1024, true);
    for _ in 0..ROUNDS {
        if r.peer_eof {
            break;
        }
        std::thread::yield_now();
        r = p.server.read(fd, &mut p.input, 16 * 1024, true);
    }
    assert!(r.peer_eof, "the EOF follows the short read without a new edge");
    assert_eq!(p.input, REQUEST);
}

/// A raw socket sends `bytes` where a ClientHello belongs.
fn raw_client(bytes: &[u8]) -> (std::net::TcpStream, std::net::TcpStream, TlsSession) {
    let pki = Pki::new("raw");
    let (mut client, server) = tcp_pair();
    client.write_all(bytes).unwrap();
    (client, server, TlsSession::new(pki.server_config()).unwrap())
}

fn read_raw(session: &mut TlsSession, fd: i32, input: &mut Vec<u8>) -> TlsRead {
    let mut r = session.read(fd, input, 16 * 1024, false);
    for _ in 0..ROUNDS {
        if r.fatal.is_some() || r.plain_http || r.added > 0 {
            break;
        }
        std::thread::yield_now();
        r = session.read(fd, input, 16 * 1024, false);
    }
    r
}

#[test]
fn garbage_instead_of_a_client_hello_is_an_error_not_a_panic() {
    let garbage: [(&[u8], bool); 6] = [
        (b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", true), // a ClientHello one byte long
        (b"\x16\x03\x01\x00\x05\x63\x00\x00\x01\x00", true), // no such handshake message
        (b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", true), // no such content type
        (b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6", true), // high bytes
        (b"\x17\x03\x03\x00\x10AAAAAAAAAAAAAAAA", true),     // application data before a handshake
        // A handshake message claiming 6.6 MB: rustls refuses it past its
        // 64 KiB cap without queueing an alert.
        (b"\x16\x03\x01\x00\x05hello", false),
    ];
    for (bytes, alert) in garbage {
        let (mut client, server, mut session) = raw_client(bytes);
        let mut input = Vec::new();
        let r = read_raw(&mut session, server.as_raw_fd(), &mut input);
        assert!(matches!(r.fatal, Some(Fatal::Tls(_))), "{bytes:?}: {:?}", r.fatal);
        assert!(!r.plain_http && input.is_empty());
        assert_eq!(session.wants_write(), alert, "{bytes:?}: {:?}", r.fatal);
        // What the loop does then: flush what rustls queued, shut, drain.
        assert!(session.flush(server.as_raw_fd()).unwrap().all_out);
        server.shutdown(Shutdown::Write).unwrap();
        client.set_nonblocking(false).unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        if alert {
            assert_eq!(got.len(), 7, "{bytes:?}: one alert record");
            assert_eq!((got[0], got[5]), (0x15, 2), "{bytes:?}: a fatal alert (RFC 8446 §6)");
        } else {
            assert!(got.is_empty(), "a clean close");
        }
        let again = session.read(server.as_raw_fd(), &mut input, 1024, false);
        assert!(again.fatal.is_none() && again.added == 0, "reported once, nothing more read");
    }
}

#[test]
fn plain_http_on_the_tls_port_gets_a_400_in_the_clear() {
    let (mut client, server, mut session) = raw_client(b"GE");
    let fd = server.as_raw_fd();
    let mut input = Vec::new();
    let mut r = session.read(fd, &mut input, 16 * 1024, false);
    for _ in 0..ROUNDS {
        if r.drained {
            break;
        }
        r = session.read(fd, &mut input, 16 * 1024, false);
    }
    assert!(!r.plain_http && r.fatal.is_none(), "two token bytes: undecided");
    client.write_all(b"T / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let r = read_raw(&mut session, fd, &mut input);
    assert!(r.plain_http && r.fatal.is_none());
    assert!(!session.wants_write(), "no TLS alert for a plain-text client");
    assert!(session.read(fd, &mut input, 16 * 1024, false).plain_http, "sticky");

    // What the loop does then: the 400 in the clear, shut, drain.
    let mut answer = Vec::new();
    sniff::plain_http_response(&mut answer, b"Thu, 01 Jan 1970 00:00:00 GMT");
    (&server).write_all(&answer).unwrap();
    server.shutdown(Shutdown::Write).unwrap();
    client.set_nonblocking(false).unwrap();
    let mut got = String::new();
    client.read_to_string(&mut got).unwrap();
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    assert!(got.contains("Connection: close") && got.contains("HTTPS"));
}
