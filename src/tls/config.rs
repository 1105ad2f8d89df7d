//! The certificate chain and key from PEM files, and the rustls
//! `ServerConfig` each new connection is made from.
//!
//! Crypto is *ring*'s: it builds with a C compiler alone (no cmake, no Go,
//! no assembler toolchain of its own) and is small. Each error is one line
//! naming the file and what is wrong with it, for the command line to print
//! before exiting 2 and for SIGHUP to log while the old pair stays in force.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{Error, InconsistentKeys, ServerConfig};

/// Sessions remembered by id for TLS 1.2 clients that do not take tickets
/// (RFC 5246 §7.3 resumption; RFC 5077 tickets need none). Tickets
/// serve TLS 1.3 and every other client without server memory. An entry
/// is a few hundred bytes, so the cache is bounded at a few hundred KiB
/// and evicts the oldest beyond it.
pub const SESSION_CACHE_ENTRIES: usize = 1024;

/// The ALPN protocols offered (RFC 7301). Only HTTP/1.1: a client that
/// offers only `h2` gets rustls's `no_application_protocol` alert (RFC 7301
/// §3.2) instead of a connection that would speak the wrong protocol. A
/// client that offers no ALPN at all is served HTTP/1.1.
pub const ALPN: &[&[u8]] = &[b"http/1.1"];

pub struct TlsConfig {
    cert: PathBuf,
    key: PathBuf,
    config: Arc<ServerConfig>,
}

impl TlsConfig {
    /// Read the chain (end-entity certificate first) and the private key
    /// (PKCS#8, PKCS#1 or SEC1), check that they belong together, and build
    /// the server configuration.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsConfig, String> {
        let provider = Arc::new(ring::default_provider());
        // Ticket keys rotate every 6 hours (rustls's ring `Ticketer`).
        let ticketer = ring::Ticketer::new().map_err(|e| format!("TLS session tickets: {e}"))?;
        let sessions = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        let config = build(cert, key, provider, ticketer, sessions)?;
        Ok(TlsConfig { cert: cert.to_path_buf(), key: key.to_path_buf(), config })
    }

    /// Load the same files again (SIGHUP). On success new connections get
    /// the new pair; connections already made keep theirs. On error the
    /// old configuration stays and the error line is returned.
    ///
    /// The ticket keys and the session cache carry over, so clients keep
    /// resuming across a certificate change (resumption does not use the
    /// certificate's key, RFC 8446 §2.2).
    pub fn reload(&mut self) -> Result<(), String> {
        let old = &self.config;
        let config = build(
            &self.cert,
            &self.key,
            Arc::clone(old.crypto_provider()),
            Arc::clone(&old.ticketer),
            Arc::clone(&old.session_storage),
        )?;
        self.config = config;
        Ok(())
    }

    /// The configuration for a new connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    pub fn key_path(&self) -> &Path {
        &self.key
    }
}

fn build(
    cert: &Path,
    key: &Path,
    provider: Arc<CryptoProvider>,
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
) -> Result<Arc<ServerConfig>, String> {
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    let signing_key =
        provider.key_provider.load_private_key(key_der).map_err(|e| line(key, "unusable private key", e))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key type cannot report its public half; rustls
        // itself accepts such a pair, and so do we.
        Ok(()) | Err(Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(format!("{}: private key does not match the certificate in {}", key.display(), cert.display()));
        }
        Err(e) => return Err(line(cert, "the first certificate cannot be parsed", e)),
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    config.ticketer = ticketer;
    config.session_storage = sessions;
    // No 0-RTT: early data can be replayed (RFC 8446 §8, §E.5), and an
    // HTTP/1.1 request is not known to be safe to repeat.
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| line(path, "cannot read", e))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = read_file(path)?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| line(path, "bad PEM", e))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it (no PEM 'CERTIFICATE' block)", path.display()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let text = read_file(path)?;
    match PrivateKeyDer::from_pem_slice(&text) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) if contains(&text, b"ENCRYPTED PRIVATE KEY") => {
            Err(format!("{}: the private key is encrypted; give it unencrypted", path.display()))
        }
        Err(pem::Error::NoItemsFound) => Err(format!(
            "{}: no private key in it (no PEM 'PRIVATE KEY', 'RSA PRIVATE KEY' or 'EC PRIVATE KEY' block)",
            path.display()
        )),
        Err(e) => Err(line(path, "bad PEM", e)),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `PATH: what: why` on one line (some errors carry newlines of their own).
fn line(path: &Path, what: &str, why: impl Display) -> String {
    let why = why.to_string().replace(['\r', '\n'], " ");
    format!("{}: {what}: {why}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testkit::{Pair, Pki};
    use rustls::version::TLS13;

    fn error(cert: &Path, key: &Path) -> String {
        let e = TlsConfig::load(cert, key).err().expect("an error");
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    #[test]
    fn a_good_pair_gives_http11_only_and_no_early_data() {
        let pki = Pki::new("config-good");
        let config = TlsConfig::load(&pki.cert_path, &pki.key_path).unwrap().server_config();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(config.max_early_data_size, 0);
        assert!(config.ticketer.enabled());
    }

    #[test]
    fn bad_files_give_one_line_naming_the_file() {
        let pki = Pki::new("config-bad");
        let (cert, key) = (&pki.cert_path, &pki.key_path);
        let cert_text = std::fs::read_to_string(cert).unwrap();
        let key_text = std::fs::read_to_string(key).unwrap();
        let other_key = pki.file("other.pem", rcgen::KeyPair::generate().unwrap().serialize_pem());
        let missing = pki.dir.join("missing.pem");
        let encrypted =
            pki.file("enc.pem", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n");
        let bad_base64 = pki.file("b64.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
        let not_der = pki.file("der.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let cases: [(&Path, &Path, &Path, &str); 7] = [
            (&missing, key, &missing, "cannot read"),
            (cert, &missing, &missing, "cannot read"),
            (key, key, key, "no certificate"),
            (cert, &pki.file("certs-only.pem", &cert_text), &pki.dir.join("certs-only.pem"), "no private key"),
            (cert, &other_key, &other_key, &format!("does not match the certificate in {}", cert.display())),
            (cert, &encrypted, &encrypted, "encrypted"),
            (&bad_base64, key, &bad_base64, "bad PEM"),
        ];
        for (c, k, named, what) in cases {
            let e = error(c, k);
            assert!(e.starts_with(&format!("{}: ", named.display())), "{e}");
            assert!(e.contains(what), "{e}");
        }
        let e = error(&not_der, key);
        assert!(e.starts_with(&format!("{}: ", not_der.display())) && e.contains("cannot be parsed"), "{e}");
        // The key may sit in the chain's file and the chain in the key's.
        let both = pki.file("both.pem", format!("{cert_text}{key_text}"));
        assert!(TlsConfig::load(&both, &both).is_ok());
    }

    #[test]
    fn reload_keeps_the_old_pair_on_error_and_takes_a_good_new_one() {
        let pki = Pki::new("config-reload");
        let mut tls = TlsConfig::load(&pki.cert_path, &pki.key_path).unwrap();
        let before = tls.server_config();

        std::fs::write(&pki.key_path, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let e = tls.reload().unwrap_err();
        assert!(e.contains("does not match") && !e.contains('\n'), "{e}");
        assert!(Arc::ptr_eq(&before, &tls.server_config()), "the old configuration stays");
        std::fs::remove_file(&pki.cert_path).unwrap();
        assert!(tls.reload().unwrap_err().contains("cannot read"));
        assert!(Arc::ptr_eq(&before, &tls.server_config()));

        // A new pair (from a new CA): new handshakes present it, and the
        // ticket keys carry over.
        let fresh = Pki::new("config-reload-new");
        std::fs::copy(&fresh.cert_path, &pki.cert_path).unwrap();
        std::fs::copy(&fresh.key_path, &pki.key_path).unwrap();
        tls.reload().unwrap();
        let after = tls.server_config();
        assert!(!Arc::ptr_eq(&before, &after));
        assert!(Arc::ptr_eq(&before.ticketer, &after.ticketer));
        let mut p = Pair::new(after, fresh.client_config(&[&TLS13], &[b"http/1.1"]));
        p.handshake();
        let served = p.client.peer_certificates().unwrap()[0].clone();
        let expected = CertificateDer::from_pem_file(&fresh.cert_path).unwrap();
        assert_eq!(served, expected);
    }

    /// PKCS#1 (RSA) and SEC1 (EC) keys, made by the openssl command.
    #[test]
    fn pkcs1_and_sec1_keys_load() {
        if std::process::Command::new("openssl").arg("version").output().is_err() {
            println!("skipped: no openssl command to write PKCS#1 and SEC1 keys");
            return;
        }
        let pki = Pki::new("config-formats");
        let openssl = |args: &[&str]| {
            let status = std::process::Command::new("openssl").args(args).current_dir(&pki.dir).status().unwrap();
            assert!(status.success(), "openssl {args:?}");
        };
        openssl(&["ec", "-in", "key.pem", "-out", "sec1.pem"]);
        assert!(std::fs::read_to_string(pki.dir.join("sec1.pem")).unwrap().contains("BEGIN EC PRIVATE KEY"));
        TlsConfig::load(&pki.cert_path, &pki.dir.join("sec1.pem")).unwrap();

        openssl(&["genrsa", "-traditional", "-out", "rsa.pem", "2048"]);
        let subj = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"];
        openssl(
            &[&["req", "-new", "-x509", "-key", "rsa.pem", "-out", "rsa-cert.pem", "-days", "1"][..], &subj].concat(),
        );
        assert!(std::fs::read_to_string(pki.dir.join("rsa.pem")).unwrap().contains("BEGIN RSA PRIVATE KEY"));
        TlsConfig::load(&pki.dir.join("rsa-cert.pem"), &pki.dir.join("rsa.pem")).unwrap();
        let e = TlsConfig::load(&pki.cert_path, &pki.dir.join("rsa.pem")).err().unwrap();
        assert!(e.contains("does not match"), "{e}");
    }
}
