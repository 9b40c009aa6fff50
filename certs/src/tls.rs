//! rustls configurations for bramble's mutual TLS: TLS 1.3 only, the ring provider only, client
//! certificates required and checked against the profile's CA. (`bramble-net` adds the ALPN
//! of the wire protocol's major version.)

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::{Bundle, CertsError};

/// The one crypto provider bramble uses. Passed explicitly to every config, so no process-wide
/// default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses all certificates in a PEM text.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, CertsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertsError::Pem {
            what: "certificate",
            reason: pem_reason(e),
        })?;
    if certs.is_empty() {
        return Err(CertsError::Pem {
            what: "certificate",
            reason: "none found".into(),
        });
    }
    Ok(certs)
}

/// Parses a private key from PEM.
pub fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, CertsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| CertsError::Pem {
        what: "private key",
        reason: pem_reason(e),
    })
}

/// A PEM error in words (rustls shows the markers as arrays of bytes).
fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    match e {
        E::MissingSectionEnd { end_marker } => format!(
            "cut short: the {0} has no \"-----END {0}-----\" line",
            text(&end_marker)
        ),
        E::IllegalSectionStart { line } => format!("malformed BEGIN line {:?}", text(&line)),
        E::Base64Decode(why) => format!("damaged base64 ({why})"),
        E::NoItemsFound => "none found".into(),
        other => other.to_string(),
    }
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, CertsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem)? {
        roots.add(cert)?;
    }
    Ok(Arc::new(roots))
}

/// The host's server config: requires a client certificate issued by the CA.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ServerConfig, CertsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider.clone())
        .build()
        .map_err(|e| CertsError::Tls(rustls::Error::General(e.to_string())))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs_from_pem(cert_pem)?, key_from_pem(key_pem)?)?;
    Ok(config)
}

/// A worker's or client's config: trusts only the bundle's CA and presents its certificate.
pub fn client_config(bundle: &Bundle) -> Result<rustls::ClientConfig, CertsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&bundle.ca)?)
        .with_client_auth_cert(certs_from_pem(&bundle.cert)?, key_from_pem(&bundle.key)?)?;
    Ok(config)
}
