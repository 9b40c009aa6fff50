//! Revoked certificate names: `revoked.txt` in the profile (one name per line), checked on
//! every new connection; revoking a name also closes its live connections.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bramble_wire::close;

/// The host's revocation list and its live connections by name.
#[derive(Debug, Default)]
pub struct Revocations {
    path: Option<PathBuf>,
    names: Mutex<BTreeSet<String>>,
    live: Mutex<Vec<(String, quinn::Connection)>>,
}

impl Revocations {
    /// Reads `path` (a missing file is an empty list).
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let names = read_names(path)?;
        Ok(Self {
            path: Some(path.to_owned()),
            names: Mutex::new(names),
            live: Mutex::default(),
        })
    }

    pub(crate) fn is_revoked(&self, name: &str) -> bool {
        self.names.lock().is_ok_and(|n| n.contains(name))
    }

    /// Remembers a live connection so that revoking its name can close it. Closed ones are
    /// swept when the list has doubled since the last sweep, so a rack of a thousand joining
    /// costs a thousand sweeps' worth of work once, not a thousand each.
    pub(crate) fn track(&self, name: &str, conn: &quinn::Connection) {
        if let Ok(mut live) = self.live.lock() {
            if live.len() >= live.capacity() {
                live.retain(|(_, c)| c.close_reason().is_none());
                let room = live.len().max(8);
                live.reserve(room);
            }
            live.push((name.to_owned(), conn.clone()));
        }
    }

    /// Refuses `name` from now on (persisted) and closes its connections.
    pub(crate) fn revoke(&self, name: &str) -> std::io::Result<()> {
        if let Some(path) = &self.path {
            append_name(path, name)?;
        }
        if let Ok(mut names) = self.names.lock() {
            names.insert(name.to_owned());
        }
        if let Ok(mut live) = self.live.lock() {
            for (_, conn) in live.iter().filter(|(n, _)| n == name) {
                conn.close(close::REJECTED.into(), b"certificate revoked");
            }
            live.retain(|(n, _)| n != name);
        }
        Ok(())
    }
}

fn read_names(path: &Path) -> std::io::Result<BTreeSet<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e),
    }
}

/// Adds `name` to a revocation file unless it is there already.
pub fn append_name(path: &Path, name: &str) -> std::io::Result<()> {
    if read_names(path)?.contains(name) {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trip_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.txt");
        std::fs::write(&path, "# revoked names\npi-01\n").unwrap();
        append_name(&path, "pi-02").unwrap();
        append_name(&path, "pi-01").unwrap();
        let r = Revocations::load(&path).unwrap();
        assert!(r.is_revoked("pi-01") && r.is_revoked("pi-02") && !r.is_revoked("pi-03"));
        r.revoke("pi-03").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# revoked names\npi-01\npi-02\npi-03\n"
        );
    }
}
