//! Bundles: one JSON file holding everything a worker or remote client needs to connect
//! (host addresses, the CA to trust, its own certificate and key). Written 0600.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{CertsError, Role, check_name};

/// Bundle format version written by this code.
pub const BUNDLE_VERSION: u32 = 1;

/// `{"version":1,"role":..,"name":..,"hosts":[..],"server_name":..,"ca":..,"cert":..,"key":..}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub version: u32,
    pub role: Role,
    pub name: String,
    /// `ip:port` (or `name:port`) of the host, tried in order.
    pub hosts: Vec<String>,
    /// TLS server name the host's certificate must carry.
    pub server_name: String,
    /// PEM of the CA certificate.
    pub ca: String,
    /// PEM of this peer's certificate.
    pub cert: String,
    /// PEM of this peer's private key.
    pub key: String,
}

impl Bundle {
    /// Loads and checks a bundle file.
    pub fn load(path: &Path) -> Result<Self, CertsError> {
        let text = fs::read_to_string(path).map_err(|error| CertsError::Io {
            path: path.display().to_string(),
            error,
        })?;
        Self::parse(&text).map_err(|reason| CertsError::BadBundle {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Parses bundle JSON; the error says what is wrong in words.
    pub fn parse(text: &str) -> Result<Self, String> {
        let b: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if b.version != BUNDLE_VERSION {
            return Err(format!(
                "version {} (this bramble reads {BUNDLE_VERSION})",
                b.version
            ));
        }
        if b.role == Role::Host {
            return Err("role \"host\" is not a connectable bundle".into());
        }
        check_name(&b.name).map_err(|e| e.to_string())?;
        if b.hosts.is_empty() {
            return Err("no hosts listed".into());
        }
        for (field, pem) in [("ca", &b.ca), ("cert", &b.cert), ("key", &b.key)] {
            if !pem.contains("-----BEGIN ") {
                return Err(format!("field {field:?} holds no PEM"));
            }
        }
        let field = |name: &str, e: CertsError| format!("field {name:?}: {e}");
        crate::tls::certs_from_pem(&b.ca).map_err(|e| field("ca", e))?;
        crate::tls::certs_from_pem(&b.cert).map_err(|e| field("cert", e))?;
        crate::tls::key_from_pem(&b.key).map_err(|e| field("key", e))?;
        Ok(b)
    }

    /// Writes the bundle as JSON, readable only by its owner.
    pub fn save(&self, path: &Path) -> Result<(), CertsError> {
        let json = serde_json::to_string_pretty(self).map_err(|e| CertsError::BadBundle {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        write_private(path, json.as_bytes())
    }
}

/// Writes `bytes` to `path` with mode 0600 (the file is replaced if it exists).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CertsError> {
    let io = |error| CertsError::Io {
        path: path.display().to_string(),
        error,
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        let mut f = opts.open(path).map_err(io)?;
        // An existing file keeps its old mode on open; force it.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        f.write_all(bytes).map_err(io)?;
    }
    #[cfg(not(unix))]
    opts.open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bundle {
        let ca = crate::ca::Ca::generate("test").unwrap();
        let issued = ca.issue_peer(Role::Worker, "pi-01").unwrap();
        Bundle {
            version: 1,
            role: Role::Worker,
            name: "pi-01".into(),
            hosts: vec!["127.0.0.1:7707".into()],
            server_name: "bramble-host".into(),
            ca: ca.cert_pem().to_owned(),
            cert: issued.cert_pem,
            key: issued.key_pem,
        }
    }

    #[test]
    fn round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        let b = sample();
        b.save(&path).unwrap();
        assert_eq!(Bundle::load(&path).unwrap(), b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[test]
    fn rejects_bad_bundles() {
        assert!(Bundle::parse("{}").unwrap_err().contains("missing field"));
        let mut b = sample();
        b.hosts.clear();
        let text = serde_json::to_string(&b).unwrap();
        assert_eq!(Bundle::parse(&text).unwrap_err(), "no hosts listed");
        let mut b = sample();
        b.role = Role::Host;
        assert!(Bundle::parse(&serde_json::to_string(&b).unwrap()).is_err());
    }

    #[test]
    fn a_cut_short_pem_names_its_field_and_what_is_missing() {
        let mut b = sample();
        b.cert.truncate(b.cert.len() / 2);
        let err = Bundle::parse(&serde_json::to_string(&b).unwrap()).unwrap_err();
        assert_eq!(
            err,
            "field \"cert\": bad PEM (certificate): cut short: the CERTIFICATE has no \
             \"-----END CERTIFICATE-----\" line"
        );
    }

    /// Bounded fuzz run (CI): bundle files, random and mangled, give an error, never a panic.
    #[test]
    fn parsing_never_panics_on_any_file() {
        let sample = serde_json::to_string(&sample()).unwrap();
        bramble_wire::fuzz::run(&[sample.as_bytes()], 4096, |input| {
            let _ = Bundle::parse(&String::from_utf8_lossy(input));
        });
    }
}
