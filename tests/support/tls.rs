//! TLS for the integration tests: a certificate authority and a server
//! certificate (ECDSA P-256, for `localhost` and 127.0.0.1) made at test
//! time with rcgen, and a blocking rustls client that trusts that CA.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion};

use super::{TempDir, WAIT};

/// A CA and a server certificate signed by it, as PEM files.
pub struct Pki {
    pub dir: TempDir,
    pub ca: CertificateDer<'static>,
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    ca_key: KeyPair,
    ca_cert: Certificate,
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "linger test CA");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = TempDir::new(&format!("tls-{name}"));
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ca = ca_params().self_signed(&ca_key).unwrap();
        let ca_path = dir.write("ca.pem", ca.pem().as_bytes());
        let pki = Pki {
            ca: ca.der().clone(),
            ca_path,
            cert_path: dir.path().join("cert.pem"),
            key_path: dir.path().join("key.pem"),
            dir,
            ca_key,
            ca_cert: ca,
        };
        pki.issue("localhost");
        pki
    }

    /// Write a fresh server key and certificate (subject `cn`) over the
    /// served files: what a certificate renewal does before its SIGHUP.
    pub fn issue(&self, cn: &str) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        // The key first, then the chain: a reload in between sees a
        // mismatch and keeps the old pair, never a half-written file.
        std::fs::write(&self.key_path, key.serialize_pem()).unwrap();
        std::fs::write(&self.cert_path, cert.pem()).unwrap();
    }

    /// The flags that serve HTTPS with this certificate.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--tls-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            self.cert_path.to_str().unwrap().into(),
            "--tls-key".into(),
            self.key_path.to_str().unwrap().into(),
        ]
    }

    /// A client configuration trusting the test CA.
    pub fn client(&self, versions: &[&'static SupportedProtocolVersion], alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// The usual client: TLS 1.2 and 1.3, ALPN `http/1.1`.
    pub fn default_client(&self) -> Arc<ClientConfig> {
        self.client(rustls::DEFAULT_VERSIONS, &[b"http/1.1"])
    }
}

pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A blocking TLS connection to `addr` (the handshake happens on first
/// use), with the tests' read and write timeouts.
pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> TlsStream {
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.set_write_timeout(Some(WAIT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config.clone(), name).unwrap();
    StreamOwned::new(conn, sock)
}

/// Complete the handshake now.
pub fn handshake(s: &mut TlsStream) -> io::Result<()> {
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(())
}

/// Read until the stream ends: the bytes, and how it ended. A clean end
/// over TLS is the server's `close_notify`: rustls reads it as `Ok(0)`.
pub fn until_end(s: &mut TlsStream) -> (Vec<u8>, io::Result<()>) {
    let mut all = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match super::read_retrying(s, &mut chunk) {
            Ok(0) => return (all, Ok(())),
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) => return (all, Err(e)),
        }
    }
}

/// Send our `close_notify` and shut the TCP write half: a client done
/// sending that still reads (RFC 8446 §6.1).
pub fn half_close(s: &mut TlsStream) {
    s.conn.send_close_notify();
    let _ = s.conn.complete_io(&mut s.sock);
    let _ = s.sock.flush();
    let _ = s.sock.shutdown(std::net::Shutdown::Write);
}

/// The subject common name of the certificate the server presented.
pub fn peer_subject(s: &TlsStream) -> Vec<u8> {
    s.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default()
}

/// Write all of `bytes` on a TLS stream.
pub fn send(s: &mut TlsStream, bytes: &[u8]) -> io::Result<()> {
    s.write_all(bytes)?;
    s.flush()
}
