//! One TLS configuration for every outbound HTTP client in the process, whose trust roots
//! are read from the system the first time a certificate is checked.
//!
//! reqwest's default reads and parses the whole system certificate store each time a client
//! is built. GoMark builds several (HubSpot, Upso, OIDC, the simulators' webhooks), and in
//! embedded mode every call is plain HTTP to a simulator, so start-up paid for four reads
//! of a store nothing used. Built here, the store is read at most once, and only when a
//! TLS connection is really made. Verification is unchanged: the platform verifier reqwest
//! itself uses.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_platform_verifier::Verifier;

/// A client builder using the process's shared TLS configuration; set timeouts and the
/// rest as usual.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(shared().clone())
}

fn shared() -> &'static rustls::ClientConfig {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = Arc::new(LazyPlatformVerifier::new(provider.clone()));
        match rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
            Ok(builder) => builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth(),
            // The built-in provider supports the default versions; were it ever not to, fall
            // back to what reqwest would have built, cost included.
            Err(_) => rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth(),
        }
    })
}

/// The platform verifier, built on first use. Every connection the shared configuration
/// makes asks this one instance, so the system store is read once per process.
#[derive(Debug)]
struct LazyPlatformVerifier {
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Result<Verifier, rustls::Error>>,
}

impl LazyPlatformVerifier {
    fn new(provider: Arc<CryptoProvider>) -> Self {
        Self { provider, verifier: OnceLock::new() }
    }

    fn verifier(&self) -> Result<&Verifier, rustls::Error> {
        self.verifier.get_or_init(|| Verifier::new(self.provider.clone())).as_ref().map_err(Clone::clone)
    }

    #[cfg(test)]
    fn loaded(&self) -> bool {
        self.verifier.get().is_some()
    }
}

impl ServerCertVerifier for LazyPlatformVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        // What the platform verifier answers too, without reading any root.
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_read_only_when_a_certificate_is_checked() {
        let lazy = LazyPlatformVerifier::new(Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        assert!(!lazy.supported_verify_schemes().is_empty());
        assert!(!lazy.loaded(), "building the configuration must not read the store");
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        let name = ServerName::try_from("api.hubapi.com").expect("name");
        let verdict = lazy.verify_server_cert(&garbage, &[], &name, &[], UnixTime::now());
        assert!(verdict.is_err(), "a certificate that is not one must be refused");
        assert!(lazy.loaded());
    }
}
