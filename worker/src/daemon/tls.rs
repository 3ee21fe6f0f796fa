//! TLS for `wss://` coordinators: either the usual certificate authorities (the webpki roots
//! plus any `tls_ca`), or exactly one certificate pinned by its SHA-256 fingerprint.
//!
//! A coordinator announced on chain may name the fingerprint of its (typically self-signed)
//! certificate. The announcement is signed by the validator's hotkey, so the pin is the trust
//! anchor: [`PinnedCertVerifier`] accepts the certificate whose DER hashes to the fingerprint,
//! whatever its issuer, names or validity dates, and still checks that the server holds its
//! private key (the handshake signature, with the crypto provider's algorithms).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, SignatureScheme};
use tokio_tungstenite::Connector;
use tracing::info;
use veribench_chain::CertFingerprint;

use super::connection::ConnectionError;

/// The crypto provider every connector uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls connector trusting the webpki roots plus the PEM certificates in `tls_ca`.
pub fn ca_connector(tls_ca: Option<&Path>) -> Result<Connector, ConnectionError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = tls_ca {
        let pem = std::fs::read(path)
            .map_err(|e| ConnectionError::Tls(format!("cannot read {}: {e}", path.display())))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert
                .map_err(|e| ConnectionError::Tls(format!("bad PEM in {}: {e}", path.display())))?;
            roots.add(cert).map_err(|e| {
                ConnectionError::Tls(format!("bad CA certificate in {}: {e}", path.display()))
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(ConnectionError::Tls(format!("no certificate in {}", path.display())));
        }
        info!(path = %path.display(), certificates = added, "trusting extra CA certificates");
    }
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectionError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(client)))
}

/// A rustls connector that accepts exactly the certificate of `fingerprint`, and the verifier
/// inside it (which remembers the last mismatching certificate, see
/// [`PinnedCertVerifier::take_mismatch`]).
pub fn pinned_connector(
    fingerprint: CertFingerprint,
) -> Result<(Connector, Arc<PinnedCertVerifier>), ConnectionError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCertVerifier {
        fingerprint,
        algorithms: provider.signature_verification_algorithms,
        mismatch: Mutex::new(None),
    });
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectionError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    Ok((Connector::Rustls(Arc::new(client)), verifier))
}

/// Accepts only the end-entity certificate whose SHA-256 is the pinned fingerprint.
#[derive(Debug)]
pub struct PinnedCertVerifier {
    fingerprint: CertFingerprint,
    algorithms: WebPkiSupportedAlgorithms,
    /// The fingerprint of the last refused certificate, for a typed error after the handshake.
    mismatch: Mutex<Option<CertFingerprint>>,
}

impl PinnedCertVerifier {
    /// The pinned fingerprint.
    pub fn fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }

    /// The fingerprint of the certificate refused since the last call, if any.
    pub fn take_mismatch(&self) -> Option<CertFingerprint> {
        self.mismatch.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let served = CertFingerprint::of_der(end_entity.as_ref());
        if served == self.fingerprint {
            return Ok(ServerCertVerified::assertion());
        }
        *self.mismatch.lock().unwrap_or_else(|e| e.into_inner()) = Some(served);
        Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::PrivateKeyDer;
    use tokio::net::TcpListener;
    use veribench_protocol::PublicKey;
    use veribench_protocol::wire::Limits;

    use super::super::connection::{Target, connect};
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    fn server_cert() -> CertificateDer<'static> {
        CertificateDer::from_pem_file(fixture("server.pem")).expect("server.pem")
    }

    /// A loopback TLS + WebSocket server presenting `server.pem` (issued by the test CA, which
    /// the client does not trust); returns its port and the task accepting one connection.
    async fn serve_once() -> (u16, tokio::task::JoinHandle<bool>) {
        let key = PrivateKeyDer::from_pem_file(fixture("server-key.pem")).expect("server key");
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![server_cert()], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            match acceptor.accept(tcp).await {
                Ok(tls) => tokio_tungstenite::accept_async(tls).await.is_ok(),
                Err(_) => false,
            }
        });
        (port, task)
    }

    fn target(port: u16, fingerprint: CertFingerprint) -> Target {
        let (connector, pin) = pinned_connector(fingerprint).expect("connector");
        Target {
            url: format!("wss://localhost:{port}/ws"),
            pinned: PublicKey([9; 32]),
            connector: Some(connector),
            pin: Some(pin),
            public_only: false,
        }
    }

    #[tokio::test]
    async fn the_pinned_certificate_is_accepted_whoever_issued_it() {
        let (port, server) = serve_once().await;
        let pinned = CertFingerprint::of_der(server_cert().as_ref());
        let connected = connect(&target(port, pinned), &Limits::default()).await;
        assert!(connected.is_ok(), "{:?}", connected.err());
        assert!(server.await.expect("server task"), "the server completed the handshake");
    }

    #[tokio::test]
    async fn another_certificate_is_refused_with_both_fingerprints() {
        let (port, server) = serve_once().await;
        let announced = CertFingerprint([0x5a; 32]);
        let refused = connect(&target(port, announced), &Limits::default()).await;
        match refused {
            Err(ConnectionError::FingerprintMismatch { announced: a, served }) => {
                assert_eq!(a, announced);
                assert_eq!(served, CertFingerprint::of_der(server_cert().as_ref()));
            }
            other => panic!("expected a fingerprint mismatch, got {:?}", other.err()),
        }
        assert!(!server.await.expect("server task"), "no TLS session was established");
    }

    #[tokio::test]
    async fn without_a_pin_the_test_ca_is_needed() {
        let (port, server) = serve_once().await;
        let untrusting = Target {
            url: format!("wss://localhost:{port}/ws"),
            pinned: PublicKey([9; 32]),
            connector: Some(ca_connector(None).expect("connector")),
            pin: None,
            public_only: false,
        };
        let refused = connect(&untrusting, &Limits::default()).await;
        assert!(matches!(refused, Err(ConnectionError::Connect(_))), "{:?}", refused.err());
        assert!(!server.await.expect("server task"));

        let (port, server) = serve_once().await;
        let trusting = Target {
            url: format!("wss://localhost:{port}/ws"),
            connector: Some(ca_connector(Some(&fixture("test-ca.pem"))).expect("connector")),
            ..untrusting
        };
        assert!(connect(&trusting, &Limits::default()).await.is_ok());
        assert!(server.await.expect("server task"));
    }
}
