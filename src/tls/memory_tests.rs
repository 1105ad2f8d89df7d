//! What a TLS connection costs in memory: idle (handshake done, nothing in
//! flight), and while a file larger than 1 MiB goes out through it.
//! Heap bytes are counted by the test allocator on the server's calls
//! only (the client runs in the same thread).

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use rustls::version::{TLS12, TLS13};

use super::session::{FILE_CHUNK, LIMIT_SLACK, OUT_BOUND, TlsSession};
use super::testkit::{Pair, Pki, ROUNDS, heap};
use crate::http::Output;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";

/// Heap bytes dropping the session gives back: everything it owns. The
/// test keeps a reference to the `ServerConfig`, so it is not counted.
fn owned_heap(server: TlsSession) -> isize {
    let before = heap::live();
    heap::tracked(|| drop(server));
    before - heap::live()
}

#[test]
fn an_idle_tls_connection_holds_no_plaintext_buffers() {
    let pki = Pki::new("idle");
    let config = pki.server_config();
    let fresh = owned_heap(heap::tracked(|| TlsSession::new(config.clone())).unwrap());
    println!("a session before any byte: {fresh} heap bytes");
    for (version, name) in [(&TLS13, "TLS 1.3"), (&TLS12, "TLS 1.2")] {
        let client = pki.client_config(&[version], &[b"http/1.1"]);
        let mut p = Pair::new(config.clone(), client.clone());
        p.handshake();
        let Pair { server, .. } = p;
        let after_handshake = owned_heap(server);

        let mut p = Pair::new(config.clone(), client);
        p.handshake();
        p.client_send(REQUEST);
        p.server_wants(REQUEST.len());
        p.respond(RESPONSE);
        assert!(!p.server.wants_write());
        let Pair { server, .. } = p;
        let after_exchange = owned_heap(server);

        println!(
            "{name}: idle session owns {after_handshake} heap bytes after the handshake, {after_exchange} after a \
             request (plus {} inline)",
            std::mem::size_of::<TlsSession>()
        );
        // rustls keeps its 4 KiB read buffer (the deframer's) and the
        // traffic keys; no plaintext buffer and no record waits.
        assert!(after_exchange < 8 * 1024, "{name}: {after_exchange} bytes");
    }
}

/// Shrink a socket buffer so the socket fills and the writer must stop.
fn small_buffer(fd: RawFd, option: libc::c_int) {
    let size: libc::c_int = 32 * 1024;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

#[test]
fn a_large_file_goes_out_in_bounded_pieces() {
    let pki = Pki::new("large");
    let mut p = Pair::new(pki.server_config(), pki.client_config(&[&TLS13], &[b"http/1.1"]));
    p.handshake();
    small_buffer(p.sfd(), libc::SO_SNDBUF);
    small_buffer(p.csock.as_raw_fd(), libc::SO_RCVBUF);

    let len = (1 << 20) + 300_001;
    let content: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
    let path = pki.file("large.bin", &content);
    let mut out = Output::default();
    out.bytes().extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
    out.file(Rc::new(File::open(&path).unwrap()), 0, len as u64);
    out.bytes().extend_from_slice(b"-- after the file --");
    let mut expected = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    expected.extend_from_slice(&content);
    expected.extend_from_slice(b"-- after the file --");

    let base = heap::live();
    heap::reset_peak();
    let (mut most_queued, mut blocked) = (0, 0);
    for round in 0..ROUNDS {
        heap::tracked(|| p.server.write(&mut out, 512 * 1024)).unwrap();
        most_queued = most_queued.max(p.server.tls_bytes_queued());
        blocked += usize::from(!p.server_flush().all_out);
        // A slow reader: the socket fills and the writer must wait.
        if round % 4 == 0 {
            p.client_io().unwrap();
        }
        if p.received.len() == expected.len() {
            break;
        }
    }
    assert!(p.received.len() == expected.len() && p.received == expected, "the bytes arrive intact");
    let peak = heap::peak() - base;
    println!("{len}-byte file: at most {most_queued} bytes of records queued, heap peak +{peak} bytes");
    assert!(blocked > 0, "the socket filled at least once");
    assert!(most_queued <= OUT_BOUND + LIMIT_SLACK, "{most_queued}");
    // Queued records, plus the whole allocation of a record the socket
    // took only part of (rustls frees a record once all of it is sent);
    // never the file.
    assert!(peak <= (OUT_BOUND + LIMIT_SLACK + FILE_CHUNK) as isize, "{peak}");
}
