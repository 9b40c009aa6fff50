//! The profile's enrolled workers (`enrolled.txt`): each worker name's id, given at enrollment
//! in enrollment order and kept, and the fingerprint of its current certificate. The host
//! admits a worker certificate only if it is the newest one enrolled for its name, so
//! `bramble enroll NAME --force` retires the old bundle.
//!
//! One line per enrollment, `ID NAME SHA256`; a later line for a name replaces an earlier one.
//! Workers enrolled before this file existed have no line: they are admitted as before and get
//! their id when they first connect.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use bramble_wire::WorkerId;

/// One name's enrollment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrollment {
    pub id: WorkerId,
    /// SHA-256 of the certificate (DER), lowercase hex.
    pub fingerprint: String,
}

/// The enrolled names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Enrolled {
    by_name: BTreeMap<String, Enrollment>,
}

impl Enrolled {
    /// Parses the file's text. Lines that do not parse are skipped (a torn last line from a
    /// crash mid-append must not lock every worker out).
    pub fn parse(text: &str) -> Self {
        let mut by_name = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(id), Some(name), Some(fingerprint), None) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                continue;
            };
            let Ok(id) = id.parse() else { continue };
            if fingerprint.len() != 64 {
                continue;
            }
            by_name.insert(
                name.to_owned(),
                Enrollment {
                    id: WorkerId(id),
                    fingerprint: fingerprint.to_owned(),
                },
            );
        }
        Self { by_name }
    }

    /// Reads the file (a missing one is empty).
    pub fn load(path: &Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Enrollment> {
        self.by_name.get(name)
    }

    /// The id a new name gets: one past the highest given.
    pub fn next_id(&self) -> WorkerId {
        WorkerId(self.by_name.values().map(|e| e.id.0 + 1).max().unwrap_or(0))
    }
}

/// Appends an enrollment to the file (created if missing).
pub fn append(path: &Path, name: &str, enrollment: &Enrollment) -> std::io::Result<()> {
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if new {
        writeln!(
            f,
            "# enrolled workers: id, name, SHA-256 of the certificate (the last line of a name counts)"
        )?;
    }
    writeln!(f, "{} {name} {}", enrollment.id, enrollment.fingerprint)
}

/// SHA-256 of a certificate's DER, lowercase hex.
pub fn fingerprint(cert_der: &[u8]) -> String {
    bramble_wire::hex(ring::digest::digest(&ring::digest::SHA256, cert_der).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_lines_replace_earlier_ones_and_torn_lines_are_skipped() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let torn = &a[..10];
        let text = format!("# comment\n0 pi-01 {a}\n1 pi-02 {a}\n0 pi-01 {b}\n2 pi-03 {torn}");
        let e = Enrolled::parse(&text);
        assert_eq!(e.get("pi-01").unwrap().fingerprint, b);
        assert_eq!(e.get("pi-02").unwrap().id, WorkerId(1));
        assert!(e.get("pi-03").is_none());
        assert_eq!(e.next_id(), WorkerId(2));
        assert_eq!(Enrolled::default().next_id(), WorkerId(0));
    }

    #[test]
    fn append_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enrolled.txt");
        assert_eq!(Enrolled::load(&path).unwrap(), Enrolled::default());
        let fp = fingerprint(b"cert");
        assert_eq!(fp.len(), 64);
        let one = Enrollment {
            id: WorkerId(0),
            fingerprint: fp.clone(),
        };
        append(&path, "pi-01", &one).unwrap();
        append(
            &path,
            "pi-02",
            &Enrollment {
                id: WorkerId(1),
                ..one.clone()
            },
        )
        .unwrap();
        let e = Enrolled::load(&path).unwrap();
        assert_eq!(e.get("pi-01"), Some(&one));
        assert_eq!(e.next_id(), WorkerId(2));
    }
}
