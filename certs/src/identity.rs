//! Who a peer is: role and name, as written into its certificate by the CA.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a certificate may do. A worker certificate cannot act as a client and vice versa.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The host scheduler (server side of every connection).
    Host,
    /// A worker agent on a Pi.
    Worker,
    /// A CLI or other client submitting work.
    Client,
}

impl Role {
    /// The subject OU value that marks this role in a certificate.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Host => "bramble-host",
            Self::Worker => "bramble-worker",
            Self::Client => "bramble-client",
        }
    }

    /// Inverse of [`Role::unit`].
    pub fn from_unit(unit: &str) -> Option<Self> {
        [Self::Host, Self::Worker, Self::Client]
            .into_iter()
            .find(|r| r.unit() == unit)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Host => "host",
            Self::Worker => "worker",
            Self::Client => "client",
        })
    }
}

/// A verified peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

/// Reads role and name from a DER certificate that rustls has already verified against our CA.
#[cfg(feature = "issue")]
pub fn peer_identity(cert_der: &[u8]) -> Result<Identity, crate::CertsError> {
    use crate::CertsError;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| CertsError::NoIdentity(format!("unparseable certificate: {e}")))?;
    let subject = cert.subject();
    let unit = subject
        .iter_organizational_unit()
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or_else(|| CertsError::NoIdentity("no OU".into()))?;
    let role = Role::from_unit(unit)
        .ok_or_else(|| CertsError::NoIdentity(format!("unknown OU {unit:?}")))?;
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or_else(|| CertsError::NoIdentity("no CN".into()))?;
    Ok(Identity {
        role,
        name: name.to_owned(),
    })
}
