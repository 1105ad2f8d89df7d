//! Test fixtures: a certificate authority and a server certificate (ECDSA
//! P-256) made at test time, a real loopback TCP pair with a rustls client
//! on one end and a `TlsSession` on the other, both driven from one thread
//! in bounded loops, and a counting allocator for the memory figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256};
use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, SupportedProtocolVersion};

use super::outcome::{Flushed, TlsRead};
use super::session::TlsSession;
use crate::http::Output;

/// Rounds a test may take to reach a state: loopback delivers within the
/// sending call, so a handful suffice; the bound only stops a broken test.
pub const ROUNDS: usize = 10_000;

/// Heap bytes counted on this thread while `tracked` runs, so the client
/// and the test's own allocations (same thread) stay out of the figures.
pub mod heap {
    use super::*;

    pub struct Counting;

    thread_local! {
        static TRACKING: Cell<bool> = const { Cell::new(false) };
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn note(delta: isize) {
        let _ = TRACKING.try_with(|t| {
            if t.get() {
                LIVE.with(|l| {
                    let v = l.get() + delta;
                    l.set(v);
                    PEAK.with(|p| p.set(p.get().max(v)));
                });
            }
        });
    }

    // SAFETY: every call is passed on to the system allocator unchanged;
    // the counters are const-initialised thread-locals without
    // destructors, so counting never allocates.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                note(layout.size() as isize);
            }
            p
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                note(layout.size() as isize);
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            note(-(layout.size() as isize));
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                note(new_size as isize - layout.size() as isize);
            }
            p
        }
    }

    /// Run `f` with its allocations and frees counted.
    pub fn tracked<R>(f: impl FnOnce() -> R) -> R {
        let was = TRACKING.with(|t| t.replace(true));
        let r = f();
        TRACKING.with(|t| t.set(was));
        r
    }

    /// Net bytes allocated by tracked code on this thread.
    pub fn live() -> isize {
        LIVE.with(|l| l.get())
    }

    /// Highest `live` since `reset_peak`.
    pub fn peak() -> isize {
        PEAK.with(|p| p.get())
    }

    pub fn reset_peak() {
        PEAK.with(|p| p.set(LIVE.with(|l| l.get())));
    }
}

#[global_allocator]
static ALLOC: heap::Counting = heap::Counting;

/// A CA, a server certificate for `localhost` and 127.0.0.1 signed by it,
/// and their PEM files in a directory of their own (removed on drop).
pub struct Pki {
    pub dir: PathBuf,
    pub ca: CertificateDer<'static>,
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("linger-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "linger test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();

        let pki = Pki {
            ca_path: dir.join("ca.pem"),
            cert_path: dir.join("cert.pem"),
            key_path: dir.join("key.pem"),
            ca: ca.der().clone(),
            dir,
        };
        std::fs::write(&pki.ca_path, ca.pem()).unwrap();
        std::fs::write(&pki.cert_path, cert.pem()).unwrap();
        std::fs::write(&pki.key_path, key.serialize_pem()).unwrap();
        pki
    }

    /// A file in this PKI's directory.
    pub fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        super::TlsConfig::load(&self.cert_path, &self.key_path).unwrap().server_config()
    }

    /// A client that trusts this CA, speaking only `versions` and offering
    /// `alpn`. Each call makes a new client with its own session cache.
    pub fn client_config(&self, versions: &[&'static SupportedProtocolVersion], alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A connected loopback pair, both ends non-blocking.
pub fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    // As the server's sockets: without it Nagle holds a small record
    // behind an unacknowledged one, and a bounded loop runs out first.
    for sock in [&client, &server] {
        sock.set_nodelay(true).unwrap();
        sock.set_nonblocking(true).unwrap();
    }
    (client, server)
}

/// A rustls client and a `TlsSession` over one loopback connection.
pub struct Pair {
    pub client: ClientConnection,
    pub csock: TcpStream,
    pub ssock: TcpStream,
    pub server: TlsSession,
    /// The server's plaintext input, as the connection's input buffer.
    pub input: Vec<u8>,
    pub limit: usize,
    /// Plaintext the client has received.
    pub received: Vec<u8>,
    /// The client read the server's close_notify (rustls's clean EOF).
    pub client_saw_close: bool,
}

impl Pair {
    pub fn new(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Pair {
        let (csock, ssock) = tcp_pair();
        let name = ServerName::try_from("localhost").unwrap();
        Pair {
            client: ClientConnection::new(client, name).unwrap(),
            csock,
            ssock,
            server: heap::tracked(|| TlsSession::new(server)).unwrap(),
            input: Vec::new(),
            limit: 16 * 1024,
            received: Vec::new(),
            client_saw_close: false,
        }
    }

    pub fn sfd(&self) -> RawFd {
        self.ssock.as_raw_fd()
    }

    pub fn server_read(&mut self) -> TlsRead {
        let (fd, limit) = (self.sfd(), self.limit);
        let Pair { server, input, .. } = self;
        heap::tracked(|| server.read(fd, input, limit, false))
    }

    pub fn server_flush(&mut self) -> Flushed {
        let fd = self.sfd();
        heap::tracked(|| self.server.flush(fd)).unwrap()
    }

    /// The client's side of one round: send what it has, take what came.
    pub fn client_io(&mut self) -> Result<(), rustls::Error> {
        while self.client.wants_write() {
            match self.client.write_tls(&mut self.csock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("client write: {e}"),
            }
        }
        loop {
            match self.client.read_tls(&mut self.csock) {
                Ok(0) => break,
                Ok(_) => {
                    self.client.process_new_packets()?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) if e.kind() == io::ErrorKind::Other => break, // its plaintext buffer is full
                Err(e) => panic!("client read: {e}"),
            }
            self.drain_client_plaintext();
        }
        self.drain_client_plaintext();
        Ok(())
    }

    fn drain_client_plaintext(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.client.reader().read(&mut buf) {
                Ok(0) => {
                    self.client_saw_close = true;
                    break;
                }
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
    }

    /// Drive both ends until neither is handshaking and nothing is queued.
    pub fn handshake(&mut self) {
        for _ in 0..ROUNDS {
            self.client_io().unwrap();
            let r = self.server_read();
            assert!(r.fatal.is_none(), "server: {:?}", r.fatal);
            self.server_flush();
            self.client_io().unwrap();
            if !self.client.is_handshaking() && !r.handshaking && !self.server.wants_write() {
                // Let the client take the session tickets sent last.
                self.client_io().unwrap();
                return;
            }
            std::thread::yield_now();
        }
        panic!("no handshake within {ROUNDS} rounds");
    }

    pub fn client_send(&mut self, bytes: &[u8]) {
        self.client.writer().write_all(bytes).unwrap();
        self.client_io().unwrap();
    }

    /// Send `response` through the session and let the client read it.
    pub fn respond(&mut self, response: &[u8]) {
        let mut out = Output::default();
        out.bytes().extend_from_slice(response);
        let fd = self.sfd();
        let before = self.received.len();
        let sent = heap::tracked(|| self.server.send(fd, &mut out, 512 * 1024)).unwrap();
        assert!(!sent.blocked && out.is_empty());
        assert_eq!(sent.plaintext, response.len() as u64);
        for _ in 0..ROUNDS {
            self.client_io().unwrap();
            if self.received.len() >= before + response.len() {
                break;
            }
            std::thread::yield_now();
        }
        assert_eq!(&self.received[before..], response);
    }

    /// Read on the server until `input` holds `n` bytes.
    pub fn server_wants(&mut self, n: usize) -> TlsRead {
        for _ in 0..ROUNDS {
            let r = self.server_read();
            if self.input.len() >= n || r.fatal.is_some() || r.peer_eof || r.close_notify {
                return r;
            }
            self.client_io().unwrap();
            std::thread::yield_now();
        }
        panic!("server got {} of {n} bytes", self.input.len());
    }
}
