//! The profile's private CA: generated once by `bramble init`, then loaded from PEM to issue
//! host, worker and client certificates. Host and CLI only (feature `issue`).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

use crate::{CertsError, HOST_SERVER_NAME, Role, check_name};

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA able to issue certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// Validity of every certificate: from long before any Pi's wrong boot-time clock (no RTC
/// battery: Pis boot at 1970 or at the image's build date) to long after anyone cares.
fn validity(params: &mut CertificateParams) {
    params.not_before = date_time_ymd(1970, 1, 2);
    params.not_after = date_time_ymd(2125, 1, 1);
}

impl Ca {
    /// A new CA with a fresh ECDSA P-256 key. `label` goes into its common name.
    pub fn generate(label: &str) -> Result<Self, CertsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("bramble CA {label}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
        })
    }

    /// Loads a CA written by [`Ca::cert_pem`] and [`Ca::key_pem`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertsError::Pem {
            what: "CA key",
            reason: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| CertsError::Pem {
            what: "CA certificate",
            reason: e.to_string(),
        })?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM. Store it 0600.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a host certificate valid for [`HOST_SERVER_NAME`] and every name or IP address in
    /// `public` (without ports).
    pub fn issue_host(&self, public: &[String]) -> Result<Issued, CertsError> {
        let mut sans = vec![HOST_SERVER_NAME.to_owned()];
        sans.extend(public.iter().filter(|p| *p != HOST_SERVER_NAME).cloned());
        self.issue(Role::Host, "host", sans)
    }

    /// Issues a worker or client certificate for `name`.
    pub fn issue_peer(&self, role: Role, name: &str) -> Result<Issued, CertsError> {
        check_name(name)?;
        self.issue(role, name, Vec::new())
    }

    fn issue(&self, role: Role, name: &str, sans: Vec<String>) -> Result<Issued, CertsError> {
        let mut params = CertificateParams::new(sans)?;
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, role.unit());
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match role {
            Role::Host => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Worker | Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::peer_identity;
    use crate::tls::certs_from_pem;

    #[test]
    fn identity_round_trips_through_reloaded_ca() {
        let ca = Ca::generate("test").unwrap();
        let reloaded = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        let issued = reloaded.issue_peer(Role::Worker, "pi-07").unwrap();
        let der = certs_from_pem(&issued.cert_pem).unwrap().remove(0);
        let id = peer_identity(&der).unwrap();
        assert_eq!((id.role, id.name.as_str()), (Role::Worker, "pi-07"));
        let host = ca.issue_host(&["10.0.0.2".into()]).unwrap();
        let der = certs_from_pem(&host.cert_pem).unwrap().remove(0);
        assert_eq!(peer_identity(&der).unwrap().role, Role::Host);
    }

    #[test]
    fn bad_names_are_refused() {
        let ca = Ca::generate("test").unwrap();
        assert!(matches!(
            ca.issue_peer(Role::Client, "a b"),
            Err(CertsError::BadName(_))
        ));
    }
}
