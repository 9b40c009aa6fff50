//! bramble's security material: the private CA, certificates by role, bundles, and the rustls
//! configs for mutual TLS.
//!
//! Identity lives in the certificate: subject CN is the name, subject OU the [`Role`]. The host
//! reads both from the *verified* peer certificate ([`identity::peer_identity`]), never from a
//! message. Verification is never disabled; there is no "dangerous" switch here.
//!
//! Generating keys and certificates needs the `issue` feature (rcgen, x509-parser); the worker
//! builds without it and only loads PEM from its bundle.

/// Tests count allocations: every decoder's fuzz run checks what it allocates.
#[cfg(test)]
#[global_allocator]
static COUNTING: bramble_wire::fuzz::Counting = bramble_wire::fuzz::Counting;

pub mod bundle;
#[cfg(feature = "issue")]
pub mod ca;
pub mod identity;
pub mod tls;

pub use bundle::Bundle;
pub use identity::{Identity, Role};

/// DNS name every host certificate carries; bundles use it as the TLS server name, so a host
/// keeps working when its IP address changes.
pub const HOST_SERVER_NAME: &str = "bramble-host";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// Reading or writing a file failed (said once: not also as the error's source).
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    /// A bundle file is not valid bundle JSON.
    #[error("{path}: not a bramble bundle: {reason}")]
    BadBundle { path: String, reason: String },
    /// PEM text did not contain what was expected.
    #[error("bad PEM ({what}): {reason}")]
    Pem { what: &'static str, reason: String },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A certificate lacks the role or name bramble puts in it.
    #[error("certificate has no bramble identity: {0}")]
    NoIdentity(String),
    /// A name is not usable for a worker or client.
    #[error("invalid name {0:?}: use 1-63 letters, digits, '.', '_' or '-', starting alphanumeric")]
    BadName(String),
    /// Certificate generation failed.
    #[cfg(feature = "issue")]
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// Checks a worker or client name: it becomes a certificate CN and a file name.
pub fn check_name(name: &str) -> Result<(), CertsError> {
    let ok = (1..=63).contains(&name.len())
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CertsError::BadName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["pi-01", "a", "node_7.rack2"] {
            check_name(good).unwrap();
        }
        for bad in ["", "-x", "a b", "../etc", "é", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
