//! TLS 1.3 configuration for QUIC: both sides authenticate with raw Ed25519 public keys
//! (RFC 7250) that are their node identities. rustls runs on the `ring` provider, passed
//! explicitly; no process-wide provider is installed.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::TransportError;
use crate::identity::{Keypair, PeerId, PublicKey};

/// ALPN protocol id: names our protocol and its version.
pub(crate) const ALPN: &[u8] = b"ggen-p2p/1";
/// SNI sent by clients; identity comes from the raw key, not the name.
pub(crate) const SERVER_NAME: &str = "ggen-p2p";

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Handshake(format!("TLS configuration: {e}"))
}

fn certified_key(
    keypair: &Keypair,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TransportError> {
    let der = PrivateKeyDer::Pkcs8(keypair.to_pkcs8_der().into());
    let key = provider
        .key_provider
        .load_private_key(der)
        .map_err(tls_err)?;
    let spki = CertificateDer::from(keypair.public().to_spki_der());
    Ok(Arc::new(CertifiedKey::new(vec![spki], key)))
}

/// Verifies the remote's raw Ed25519 key, optionally pinning it to an expected `PeerId`, and
/// remembers which identity the remote presented (so a mismatch can be reported precisely).
#[derive(Debug)]
pub(crate) struct PeerVerifier {
    expected: Option<PeerId>,
    seen: Mutex<Option<PeerId>>,
    provider: Arc<CryptoProvider>,
}

impl PeerVerifier {
    pub(crate) fn new(expected: Option<PeerId>, provider: Arc<CryptoProvider>) -> Self {
        Self {
            expected,
            seen: Mutex::new(None),
            provider,
        }
    }

    /// The identity the remote presented, if its key parsed.
    pub(crate) fn seen(&self) -> Option<PeerId> {
        self.seen.lock().ok().and_then(|g| *g)
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General(
                "unexpected certificate chain".into(),
            ));
        }
        let key = PublicKey::from_spki_der(end_entity.as_ref())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let peer = key.peer_id();
        if let Ok(mut g) = self.seen.lock() {
            *g = Some(peer);
        }
        match self.expected {
            Some(expected) if expected != peer => Err(rustls::Error::General(format!(
                "peer id mismatch: expected {expected}, got {peer}"
            ))),
            _ => Ok(()),
        }
    }

    fn verify13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not supported".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not supported".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// Server side: any peer that proves an Ed25519 key is accepted (mutual authentication is
/// mandatory); who it is comes out of the handshake.
pub(crate) fn server_config(keypair: &Keypair) -> Result<rustls::ServerConfig, TransportError> {
    let provider = provider();
    let ck = certified_key(keypair, &provider)?;
    let verifier = Arc::new(PeerVerifier::new(None, provider.clone()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(
            rustls::server::AlwaysResolvesServerRawPublicKeys::new(ck),
        ));
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// Client side for one dial: pins `expected` when given. Returns the verifier too, to read
/// the identity the server presented if the handshake fails on a mismatch.
pub(crate) fn client_config(
    keypair: &Keypair,
    expected: Option<PeerId>,
) -> Result<(rustls::ClientConfig, Arc<PeerVerifier>), TransportError> {
    let provider = provider();
    let ck = certified_key(keypair, &provider)?;
    let verifier = Arc::new(PeerVerifier::new(expected, provider.clone()));
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_cert_resolver(Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(ck),
        ));
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok((cfg, verifier))
}

/// The identity a finished QUIC handshake authenticated, from the presented raw key.
pub(crate) fn peer_from_identity(
    identity: Option<Box<dyn std::any::Any>>,
) -> Result<PeerId, TransportError> {
    let certs = identity
        .and_then(|b| b.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| TransportError::Handshake("remote presented no key".into()))?;
    let first = certs
        .first()
        .ok_or_else(|| TransportError::Handshake("remote presented no key".into()))?;
    PublicKey::from_spki_der(first.as_ref())
        .map(|k| k.peer_id())
        .map_err(|e| TransportError::Handshake(e.to_string()))
}
