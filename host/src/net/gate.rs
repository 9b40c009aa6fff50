//! Who may connect: the revoked names (`revoked.txt`), the enrolled workers' current
//! certificates (`enrolled.txt`, read again whenever `bramble enroll` changed it), one live
//! connection per worker certificate, and a short memory of refusals for `bramble status`.
//!
//! The decision is [`decide`], a pure function; [`Gate`] keeps the files and the live
//! connections around it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bramble_certs::{Identity, Role};
use bramble_wire::{Refusal, WorkerId, close};

use crate::enrolled::Enrolled;

/// Refusals are remembered this long, and at most this many (newest kept).
const REFUSALS_KEPT_FOR: Duration = Duration::from_secs(600);
const REFUSALS_KEPT: usize = 64;

/// A connection asking in.
#[derive(Debug)]
pub(crate) struct Candidate<'a> {
    pub identity: &'a Identity,
    pub fingerprint: &'a str,
    pub address: SocketAddr,
}

/// What the gate knows of a live connection.
#[derive(Debug)]
pub(crate) struct LiveFacts<'a> {
    pub name: &'a str,
    pub role: Role,
    pub fingerprint: &'a str,
    pub address: SocketAddr,
}

/// The gate's answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Let it in. `enrolled`: the id its name was given at enrollment. `retire`: indices of
    /// live connections of an older certificate of the same worker, to be closed.
    Admit {
        enrolled: Option<WorkerId>,
        retire: Vec<usize>,
    },
    Refuse(String),
}

/// Decides whether `c` may connect.
///
/// A worker certificate must be the newest enrolled for its name (names enrolled before
/// `enrolled.txt` existed have no entry and pass). One certificate is one Pi: while it is
/// connected from one machine, the same certificate from another machine is refused (the
/// first keeps running); from the same machine it is a restart and replaces the old
/// connection (the scheduler supersedes it). Live connections of an older certificate of the
/// same name are retired.
pub(crate) fn decide(
    c: &Candidate<'_>,
    revoked: &BTreeSet<String>,
    enrolled: &Enrolled,
    live: &[LiveFacts<'_>],
) -> Verdict {
    let name = c.identity.name.as_str();
    if revoked.contains(name) {
        return Verdict::Refuse("certificate revoked".into());
    }
    if c.identity.role != Role::Worker {
        return Verdict::Admit {
            enrolled: None,
            retire: Vec::new(),
        };
    }
    let entry = enrolled.get(name);
    if let Some(e) = entry
        && e.fingerprint != c.fingerprint
    {
        return Verdict::Refuse(format!(
            "this bundle of {name} was replaced by `bramble enroll {name} --force`: give this Pi \
             the new bundle"
        ));
    }
    let mut retire = Vec::new();
    for (i, l) in live.iter().enumerate() {
        if l.role != Role::Worker || l.name != name {
            continue;
        }
        if l.fingerprint != c.fingerprint {
            retire.push(i);
        } else if l.address.ip() != c.address.ip() {
            return Verdict::Refuse(format!(
                "{name} is already connected from {}; one bundle per Pi (`bramble enroll NAME` \
                 for each)",
                l.address
            ));
        }
    }
    Verdict::Admit {
        enrolled: entry.map(|e| e.id),
        retire,
    }
}

/// A file read again when its size or modification time changes (none: always empty).
#[derive(Debug, Default)]
struct Watched<T> {
    path: Option<PathBuf>,
    stamp: Option<(SystemTime, u64)>,
    value: T,
}

impl<T: Default> Watched<T> {
    fn new(path: &Path) -> Self {
        Self {
            path: Some(path.to_owned()),
            stamp: None,
            value: T::default(),
        }
    }

    /// Reads the file again if it changed since the last read.
    fn refresh(&mut self, read: impl Fn(&Path) -> std::io::Result<T>) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let stamp = match std::fs::metadata(path) {
            Ok(m) => Some((m.modified()?, m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if stamp != self.stamp || stamp.is_none() {
            self.value = read(path)?;
            self.stamp = stamp;
        }
        Ok(())
    }
}

/// A live connection (its name is its key in `Gate::live`).
struct Live {
    role: Role,
    fingerprint: String,
    conn: quinn::Connection,
}

/// Recent refusals by (name, address).
#[derive(Debug, Default)]
struct Refusals(VecDeque<Kept>);

#[derive(Debug)]
struct Kept {
    name: Option<String>,
    address: SocketAddr,
    reason: String,
    count: u64,
    last: Instant,
}

impl Refusals {
    fn record(&mut self, now: Instant, name: Option<&str>, address: SocketAddr, reason: &str) {
        self.expire(now);
        let same = |k: &Kept| k.name.as_deref() == name && k.address.ip() == address.ip();
        let count = match self.0.iter().position(same) {
            Some(i) => self.0.remove(i).map_or(0, |k| k.count),
            None => 0,
        };
        if self.0.len() == REFUSALS_KEPT {
            self.0.pop_front();
        }
        self.0.push_back(Kept {
            name: name.map(str::to_owned),
            address,
            reason: reason.to_owned(),
            count: count + 1,
            last: now,
        });
    }

    fn expire(&mut self, now: Instant) {
        while self
            .0
            .front()
            .is_some_and(|k| now.duration_since(k.last) > REFUSALS_KEPT_FOR)
        {
            self.0.pop_front();
        }
    }

    /// Newest first.
    fn list(&mut self, now: Instant) -> Vec<Refusal> {
        self.expire(now);
        self.0
            .iter()
            .rev()
            .map(|k| Refusal {
                name: k.name.clone(),
                address: k.address.to_string(),
                reason: k.reason.clone(),
                count: k.count,
                ago_ms: u64::try_from(now.duration_since(k.last).as_millis()).unwrap_or(u64::MAX),
            })
            .collect()
    }
}

/// The host's gate: files, live connections, refusals.
#[derive(Default)]
pub struct Gate {
    files: Mutex<Files>,
    /// Live connections by certificate name (closed ones are swept when the name comes
    /// again, so a rack of a thousand costs a thousand lookups, not a million).
    live: Mutex<HashMap<String, Vec<Live>>>,
    refusals: Mutex<Refusals>,
}

#[derive(Debug, Default)]
struct Files {
    revoked: Watched<BTreeSet<String>>,
    enrolled: Watched<Enrolled>,
}

impl Gate {
    /// Reads `revoked` and `enrolled` (missing files are empty lists).
    pub fn load(revoked: &Path, enrolled: &Path) -> std::io::Result<Self> {
        let mut files = Files {
            revoked: Watched::new(revoked),
            enrolled: Watched::new(enrolled),
        };
        files.refresh()?;
        Ok(Self {
            files: Mutex::new(files),
            ..Self::default()
        })
    }

    /// Admits the connection (returning its enrolled id) or refuses it with a reason, which is
    /// remembered for `bramble status`. Live connections of a replaced certificate are
    /// closed.
    pub(crate) fn admit(
        &self,
        identity: &Identity,
        fingerprint: &str,
        conn: &quinn::Connection,
    ) -> Result<Option<WorkerId>, String> {
        let address = conn.remote_address();
        let candidate = Candidate {
            identity,
            fingerprint,
            address,
        };
        let verdict = {
            let mut files = self.files.lock().map_err(|_| "gate poisoned".to_owned())?;
            if let Err(e) = files.refresh() {
                tracing::warn!("reading the revocation or enrollment list: {e}");
            }
            let mut live = self.live.lock().map_err(|_| "gate poisoned".to_owned())?;
            let same = live.entry(identity.name.clone()).or_default();
            same.retain(|l| l.conn.close_reason().is_none());
            let facts: Vec<LiveFacts<'_>> = same
                .iter()
                .map(|l| LiveFacts {
                    name: &identity.name,
                    role: l.role,
                    fingerprint: &l.fingerprint,
                    address: l.conn.remote_address(),
                })
                .collect();
            let verdict = decide(
                &candidate,
                &files.revoked.value,
                &files.enrolled.value,
                &facts,
            );
            if let Verdict::Admit { retire, .. } = &verdict {
                for i in retire.iter().rev() {
                    let old = same.swap_remove(*i);
                    old.conn.close(
                        close::REJECTED.into(),
                        b"this bundle was replaced by a newer enrollment",
                    );
                }
                same.push(Live {
                    role: identity.role,
                    fingerprint: fingerprint.to_owned(),
                    conn: conn.clone(),
                });
            }
            verdict
        };
        match verdict {
            Verdict::Admit { enrolled, .. } => Ok(enrolled),
            Verdict::Refuse(reason) => {
                self.refused(Some(&identity.name), address, &reason);
                Err(reason)
            }
        }
    }

    /// Remembers a refusal (also of a handshake that failed before a name was known).
    pub(crate) fn refused(&self, name: Option<&str>, address: SocketAddr, reason: &str) {
        if let Ok(mut r) = self.refusals.lock() {
            r.record(Instant::now(), name, address, reason);
        }
    }

    /// Refusals of the last ten minutes, newest first.
    pub(crate) fn refusals(&self) -> Vec<Refusal> {
        self.refusals
            .lock()
            .map(|mut r| r.list(Instant::now()))
            .unwrap_or_default()
    }

    /// Refuses `name` from now on (persisted) and closes its connections.
    pub(crate) fn revoke(&self, name: &str) -> std::io::Result<()> {
        if let Ok(mut files) = self.files.lock() {
            if let Some(path) = &files.revoked.path {
                append_name(path, name)?;
            }
            files.revoked.value.insert(name.to_owned());
        }
        if let Ok(mut live) = self.live.lock() {
            for l in live.remove(name).unwrap_or_default() {
                l.conn.close(close::REJECTED.into(), b"certificate revoked");
            }
        }
        Ok(())
    }
}

impl Files {
    fn refresh(&mut self) -> std::io::Result<()> {
        self.revoked.refresh(read_names)?;
        self.enrolled.refresh(Enrolled::load)
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

/// Takes `name` off a revocation file (`bramble enroll NAME --force` gives the name a new
/// certificate; the old one is retired by `enrolled.txt` instead).
pub fn remove_name(path: &Path, name: &str) -> std::io::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !text.lines().any(|l| l.trim() == name) {
        return Ok(());
    }
    let kept: String = text
        .lines()
        .filter(|l| l.trim() != name)
        .map(|l| format!("{l}\n"))
        .collect();
    let tmp = path.with_extension("txt.new");
    std::fs::write(&tmp, kept)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrolled::Enrollment;

    fn worker(name: &str) -> Identity {
        Identity {
            role: Role::Worker,
            name: name.into(),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn live<'a>(name: &'a str, fingerprint: &'a str, address: &str) -> LiveFacts<'a> {
        LiveFacts {
            name,
            role: Role::Worker,
            fingerprint,
            address: addr(address),
        }
    }

    fn enrolled(name: &str, id: u32, fingerprint: &str) -> Enrolled {
        let line = format!("{id} {name} {fingerprint}\n");
        let e = Enrolled::parse(&line);
        assert_eq!(
            e.get(name),
            Some(&Enrollment {
                id: WorkerId(id),
                fingerprint: fingerprint.into()
            })
        );
        e
    }

    #[test]
    fn one_certificate_is_one_pi() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let pi = worker("pi-01");
        let none = BTreeSet::new();
        let reg = enrolled("pi-01", 3, &a);
        let ask = |fingerprint: &str, address: &str, live: &[LiveFacts<'_>]| {
            let c = Candidate {
                identity: &pi,
                fingerprint,
                address: addr(address),
            };
            decide(&c, &none, &reg, live)
        };
        let admitted = |retire: Vec<usize>| Verdict::Admit {
            enrolled: Some(WorkerId(3)),
            retire,
        };
        // Alone: admitted with its enrolled id.
        assert_eq!(ask(&a, "10.0.0.4:5000", &[]), admitted(vec![]));
        // The same bundle from another Pi while the first is connected: refused, naming it.
        let Verdict::Refuse(why) = ask(&a, "10.0.0.5:5000", &[live("pi-01", &a, "10.0.0.4:5000")])
        else {
            panic!("a second Pi with one bundle was admitted")
        };
        assert!(why.contains("already connected from 10.0.0.4:5000; one bundle per Pi"));
        // From the same machine: a restart, admitted (the scheduler supersedes the old one).
        assert_eq!(
            ask(&a, "10.0.0.4:6000", &[live("pi-01", &a, "10.0.0.4:5000")]),
            admitted(vec![])
        );
        // An older certificate of the name is refused, and retired when the new one comes.
        let Verdict::Refuse(why) = ask(&b, "10.0.0.4:5000", &[]) else {
            panic!("a replaced bundle was admitted")
        };
        assert!(why.contains("--force"), "{why}");
        assert_eq!(
            ask(
                &a,
                "10.0.0.5:5000",
                &[
                    live("pi-02", &b, "10.0.0.9:1"),
                    live("pi-01", &b, "10.0.0.4:5000")
                ]
            ),
            admitted(vec![1])
        );
        // Revoked names are refused; clients share names freely; unenrolled workers pass.
        let revoked = BTreeSet::from(["pi-01".to_owned()]);
        let c = Candidate {
            identity: &pi,
            fingerprint: &a,
            address: addr("10.0.0.4:1"),
        };
        assert_eq!(
            decide(&c, &revoked, &reg, &[]),
            Verdict::Refuse("certificate revoked".into())
        );
        let cli = Identity {
            role: Role::Client,
            name: "laptop".into(),
        };
        let mut other = live("laptop", &a, "10.0.0.8:1");
        other.role = Role::Client;
        let c = Candidate {
            identity: &cli,
            fingerprint: &a,
            address: addr("10.0.0.9:1"),
        };
        assert_eq!(
            decide(&c, &none, &reg, &[other]),
            Verdict::Admit {
                enrolled: None,
                retire: vec![]
            }
        );
        let old = worker("old-pi");
        let c = Candidate {
            identity: &old,
            fingerprint: &b,
            address: addr("10.0.0.9:1"),
        };
        assert_eq!(
            decide(&c, &none, &reg, &[]),
            Verdict::Admit {
                enrolled: None,
                retire: vec![]
            }
        );
    }

    #[test]
    fn refusals_are_counted_per_name_and_address_and_forgotten() {
        let t0 = Instant::now();
        let mut r = Refusals::default();
        let a = addr("10.0.0.5:1");
        r.record(t0, Some("pi-01"), a, "dup");
        r.record(
            t0 + Duration::from_secs(1),
            Some("pi-01"),
            addr("10.0.0.5:2"),
            "dup",
        );
        r.record(t0 + Duration::from_secs(2), None, addr("10.0.0.6:1"), "tls");
        let list = r.list(t0 + Duration::from_secs(3));
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].name.as_deref(), list[0].ago_ms), (None, 1000));
        assert_eq!((list[1].count, list[1].ago_ms), (2, 2000));
        assert!(
            r.list(t0 + REFUSALS_KEPT_FOR + Duration::from_secs(3))
                .is_empty()
        );
    }

    #[test]
    fn revocation_file_round_trip_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.txt");
        std::fs::write(&path, "# revoked names\npi-01\n").unwrap();
        append_name(&path, "pi-02").unwrap();
        append_name(&path, "pi-01").unwrap();
        assert_eq!(
            read_names(&path).unwrap(),
            BTreeSet::from(["pi-01".to_owned(), "pi-02".to_owned()])
        );
        remove_name(&path, "pi-01").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# revoked names\npi-02\n"
        );
    }

    #[test]
    fn watched_files_are_read_again_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.txt");
        let mut w: Watched<BTreeSet<String>> = Watched::new(&path);
        w.refresh(read_names).unwrap();
        assert!(w.value.is_empty());
        append_name(&path, "pi-01").unwrap();
        w.refresh(read_names).unwrap();
        assert!(w.value.contains("pi-01"));
        remove_name(&path, "pi-01").unwrap();
        w.refresh(read_names).unwrap();
        assert!(w.value.is_empty());
    }
}
