//! The profile directory (`$BRAMBLE_HOME/<profile>/`): host config, CA and host certificate,
//! bundles, and the persisted worker ids. Creating it is `bramble init`; issuing bundles is
//! `enroll` / `client-bundle`.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bramble_certs::bundle::{BUNDLE_VERSION, write_private};
use bramble_certs::ca::Ca;
use bramble_certs::{Bundle, HOST_SERVER_NAME, Role, check_name};
use bramble_wire::WorkerId;
use serde::{Deserialize, Serialize};

use crate::enrolled::{Enrolled, Enrollment, fingerprint};

/// Default UDP port of `bramble serve`.
pub const DEFAULT_PORT: u16 = 7707;

/// What `enroll_worker` does with a name that is enrolled already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Again {
    /// Refuse (one bundle per Pi).
    Refuse,
    /// Give the kept bundle (deploying to the same Pi again).
    Reuse,
    /// Issue a new certificate; the old one is refused from then on (`--force`).
    Replace,
}

/// `host.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Address the host listens on (UDP).
    pub listen: String,
    /// Addresses workers and clients dial, written into every bundle.
    pub public: Vec<String>,
    /// Placement policy: `leastload` or `roundrobin`.
    pub policy: String,
    /// Telemetry interval asked of workers.
    pub heartbeat_ms: u64,
    /// A worker silent this long is lost and its tasks re-queued.
    pub worker_timeout_ms: u64,
}

/// A profile directory.
#[derive(Clone, Debug)]
pub struct Profile {
    pub dir: PathBuf,
}

impl Profile {
    /// `$BRAMBLE_HOME/<name>` (see `bramble_client::locate`).
    pub fn locate(name: &str) -> anyhow::Result<Self> {
        Ok(Self {
            dir: bramble_client::locate::profile_dir(name)?,
        })
    }

    /// The profile's name (its directory's).
    pub fn name(&self) -> &str {
        self.dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("default")
    }

    fn security(&self) -> PathBuf {
        self.dir.join("security")
    }

    /// `host.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("host.toml")
    }

    /// The local CLI's client bundle.
    pub fn client_bundle_path(&self) -> PathBuf {
        bramble_client::locate::client_bundle_path(&self.dir)
    }

    /// Where `enroll` keeps a copy of a worker's bundle.
    pub fn worker_bundle_path(&self, name: &str) -> PathBuf {
        self.dir.join("workers").join(format!("{name}.json"))
    }

    /// The job store.
    pub fn store_path(&self) -> PathBuf {
        self.dir.join("jobs.db")
    }

    /// Revoked certificate names, one per line.
    pub fn revoked_path(&self) -> PathBuf {
        self.dir.join("revoked.txt")
    }

    /// Staged files (see [`crate::blobs`]).
    pub fn blobs_path(&self) -> PathBuf {
        self.dir.join("blobs")
    }

    /// Enrolled workers: ids and current certificates (see [`crate::enrolled`]).
    pub fn enrolled_path(&self) -> PathBuf {
        self.dir.join("enrolled.txt")
    }

    pub fn exists(&self) -> bool {
        self.config_path().exists()
    }

    /// Creates the profile: CA, host certificate, host.toml, local client bundle.
    pub fn init(
        &self,
        listen: SocketAddr,
        public: Vec<String>,
        force: bool,
    ) -> anyhow::Result<HostConfig> {
        if self.exists() && !force {
            bail!(
                "profile already exists at {} (use --force to recreate it; every issued bundle stops working)",
                self.dir.display()
            );
        }
        let public = if public.is_empty() {
            default_public(listen)
        } else {
            public
        };
        for p in &public {
            split_host_port(p)?;
        }
        let config = HostConfig {
            listen: listen.to_string(),
            public,
            policy: "thermal".into(),
            heartbeat_ms: 1000,
            worker_timeout_ms: 5000,
        };
        fs::create_dir_all(self.security())
            .with_context(|| format!("creating {}", self.dir.display()))?;
        // A new CA makes every old bundle, id and job meaningless.
        let _ = fs::remove_dir_all(self.dir.join("workers"));
        fs::create_dir_all(self.dir.join("workers"))?;
        let label = self
            .dir
            .file_name()
            .map_or("default".into(), |n| n.to_string_lossy().into_owned());
        let ca = Ca::generate(&label)?;
        write_private(&self.security().join("ca.key"), ca.key_pem().as_bytes())?;
        fs::write(self.security().join("ca.crt"), ca.cert_pem())?;
        let names: Vec<String> = config
            .public
            .iter()
            .map(|p| split_host_port(p).map(|(h, _)| h))
            .collect::<Result<_, _>>()?;
        let host = ca.issue_host(&names)?;
        fs::write(self.security().join("host.crt"), &host.cert_pem)?;
        write_private(&self.security().join("host.key"), host.key_pem.as_bytes())?;
        fs::write(self.config_path(), toml::to_string(&config)?)?;
        for old in [
            self.store_path(),
            self.revoked_path(),
            self.enrolled_path(),
            self.security().join("reset.key"),
        ] {
            let _ = fs::remove_file(&old);
        }
        for suffix in ["-wal", "-shm"] {
            let _ = fs::remove_file(self.dir.join(format!("jobs.db{suffix}")));
        }
        let mut local = self.issue_bundle(
            &ca,
            &config,
            Role::Client,
            "local-cli",
            &self.client_bundle_path(),
        )?;
        local.hosts = local_hosts(&config);
        local.save(&self.client_bundle_path())?;
        Ok(config)
    }

    /// Reads host.toml.
    pub fn config(&self) -> anyhow::Result<HostConfig> {
        let path = self.config_path();
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "no profile at {} (run `bramble init` first)",
                self.dir.display()
            )
        })?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))
    }

    fn ca(&self) -> anyhow::Result<Ca> {
        let cert = read(&self.security().join("ca.crt"))?;
        let key = read(&self.security().join("ca.key"))?;
        Ok(Ca::from_pem(&cert, &key)?)
    }

    /// Issues a client bundle for `name` and writes it to `out` (0600).
    pub fn client_bundle(&self, name: &str, out: &Path) -> anyhow::Result<Bundle> {
        check_name(name)?;
        let config = self.config()?;
        let ca = self.ca()?;
        self.issue_bundle(&ca, &config, Role::Client, name, out)
    }

    /// Enrolls worker `name`: issues its bundle (kept in `workers/NAME.json`), gives the name
    /// the next id and records its certificate in `enrolled.txt`. A name enrolled already is
    /// refused, given its kept bundle, or given a new certificate that retires the old one,
    /// as `again` says. Returns the bundle and the name's id.
    pub fn enroll_worker(&self, name: &str, again: Again) -> anyhow::Result<(Bundle, WorkerId)> {
        check_name(name)?;
        let config = self.config()?;
        let kept = self.worker_bundle_path(name);
        let enrolled = Enrolled::load(&self.enrolled_path())?;
        let before = enrolled.get(name).map(|e| e.id);
        if before.is_some() || kept.exists() {
            let id = before.map_or_else(|| "no id yet".to_owned(), |id| format!("id {id}"));
            match again {
                Again::Refuse => bail!(
                    "{name} is enrolled already ({id}): one bundle per Pi; `bramble enroll \
                     {name} --force` issues a new one and retires the old, `--reuse` gives \
                     the existing one"
                ),
                Again::Reuse => {
                    let bundle = Bundle::load(&kept).with_context(|| {
                        format!("{name} is enrolled but its bundle is gone: use --force")
                    })?;
                    let id = before.unwrap_or_else(|| enrolled.next_id());
                    return Ok((bundle, id));
                }
                Again::Replace => {}
            }
        }
        let ca = self.ca()?;
        let bundle = self.issue_bundle(&ca, &config, Role::Worker, name, &kept)?;
        let der = bramble_certs::tls::certs_from_pem(&bundle.cert)?;
        let cert = der.first().context("issued bundle has no certificate")?;
        let id = before.unwrap_or_else(|| enrolled.next_id());
        let enrollment = Enrollment {
            id,
            fingerprint: fingerprint(cert),
        };
        crate::enrolled::append(&self.enrolled_path(), name, &enrollment)?;
        // A revoked name enrolled again is welcome with its new certificate.
        crate::net::unrevoke(&self.revoked_path(), name)?;
        Ok((bundle, id))
    }

    fn issue_bundle(
        &self,
        ca: &Ca,
        config: &HostConfig,
        role: Role,
        name: &str,
        out: &Path,
    ) -> anyhow::Result<Bundle> {
        let issued = ca.issue_peer(role, name)?;
        let bundle = Bundle {
            version: BUNDLE_VERSION,
            role,
            name: name.to_owned(),
            hosts: config.public.clone(),
            server_name: HOST_SERVER_NAME.to_owned(),
            ca: ca.cert_pem().to_owned(),
            cert: issued.cert_pem,
            key: issued.key_pem,
        };
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        bundle.save(out)?;
        Ok(bundle)
    }

    /// The host was started on port 0 and got `addr`: its port goes into host.toml (for the
    /// listen address and every public address with port 0) and into every address with port
    /// 0 of every bundle issued so far (`--listen 127.0.0.1:0` picks a free port this way,
    /// with no race for it).
    pub fn settle_address(&self, addr: SocketAddr) -> anyhow::Result<()> {
        let settle = |hosts: &mut Vec<String>| -> anyhow::Result<()> {
            for h in hosts {
                let (host, port) = split_host_port(h)?;
                if port == 0 {
                    let host = if host.contains(':') {
                        format!("[{host}]")
                    } else {
                        host
                    };
                    *h = format!("{host}:{}", addr.port());
                }
            }
            Ok(())
        };
        let mut config = self.config()?;
        config.listen = addr.to_string();
        settle(&mut config.public)?;
        fs::write(self.config_path(), toml::to_string(&config)?)?;
        let mut bundles = vec![self.client_bundle_path()];
        for entry in fs::read_dir(self.dir.join("workers"))? {
            bundles.push(entry?.path());
        }
        for path in bundles {
            let mut bundle = Bundle::load(&path)?;
            settle(&mut bundle.hosts)?;
            bundle.save(&path)?;
        }
        Ok(())
    }

    /// The host's stateless-reset secret (created on first use, 0600).
    pub fn reset_key(&self) -> anyhow::Result<Vec<u8>> {
        let path = self.security().join("reset.key");
        match fs::read(&path) {
            Ok(key) if key.len() == 32 => Ok(key),
            Ok(_) => bail!("{}: expected 32 bytes", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                    .map_err(|_| anyhow::anyhow!("no system randomness"))?;
                write_private(&path, &key)?;
                Ok(key.to_vec())
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The host's TLS material: (CA cert, host cert, host key), PEM.
    pub fn server_material(&self) -> anyhow::Result<(String, String, String)> {
        let s = self.security();
        Ok((
            read(&s.join("ca.crt"))?,
            read(&s.join("host.crt"))?,
            read(&s.join("host.key"))?,
        ))
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Without `--public`: a wildcard listen address is reached at this machine's addresses (its
/// IPv4 addresses other than loopback, then its `HOSTNAME.local` name for Pis that resolve mDNS,
/// should the addresses change; loopback when it has none, and `init` says so); any other at
/// itself.
fn default_public(listen: SocketAddr) -> Vec<String> {
    if !listen.ip().is_unspecified() {
        return vec![listen.to_string()];
    }
    let lan = std::fs::read_to_string("/proc/net/fib_trie")
        .map(|t| local_ipv4(&t))
        .unwrap_or_default();
    if lan.is_empty() {
        return vec![format!("127.0.0.1:{}", listen.port())];
    }
    let mut public: Vec<String> = lan
        .iter()
        .map(|ip| format!("{ip}:{}", listen.port()))
        .collect();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    if let Some(name) = mdns_name(hostname.trim()) {
        public.push(format!("{name}:{}", listen.port()));
    }
    public
}

/// `NAME.local` for a plain host name (one label of letters, digits and `-`, not
/// `localhost`).
fn mdns_name(hostname: &str) -> Option<String> {
    let plain = !hostname.is_empty()
        && hostname.len() <= 63
        && hostname != "localhost"
        && hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    plain.then(|| format!("{hostname}.local"))
}

/// What a bundle used on this machine dials (the local CLI, `cluster start`'s workers):
/// loopback when the host listens on every interface or on loopback, so that nothing local
/// depends on the network; else the address it listens on.
pub fn local_hosts(config: &HostConfig) -> Vec<String> {
    match config.listen.parse::<SocketAddr>() {
        Ok(l) if l.ip().is_unspecified() && l.is_ipv6() => vec![format!("[::1]:{}", l.port())],
        Ok(l) if l.ip().is_unspecified() => vec![format!("127.0.0.1:{}", l.port())],
        Ok(l) if l.ip().is_loopback() => vec![l.to_string()],
        _ => config.public.clone(),
    }
}

/// This machine's IPv4 addresses other than loopback, from the text of `/proc/net/fib_trie`
/// (an address line `|-- A.B.C.D` followed by `/32 host LOCAL`), in order, each once.
fn local_ipv4(fib_trie: &str) -> Vec<std::net::Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<std::net::Ipv4Addr> = None;
    for line in fib_trie.lines().map(str::trim) {
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.parse().ok();
        } else if line == "/32 host LOCAL"
            && let Some(ip) = last.take()
            && !ip.is_loopback()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// `"10.0.0.2:7707"` → `("10.0.0.2", 7707)`; `"[::1]:7707"` → `("::1", 7707)`.
pub fn split_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("{s:?} lacks a :port"))?;
    let port = port.parse().with_context(|| format!("{s:?}: bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("{s:?} lacks a host");
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_enroll_and_ids_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let p = Profile {
            dir: tmp.path().join("default"),
        };
        let listen: SocketAddr = "0.0.0.0:7707".parse().unwrap();
        let config = p.init(listen, vec![], false).unwrap();
        // Pis dial this machine's addresses; its own CLI dials loopback.
        assert!(!config.public.is_empty());
        assert_eq!(
            Bundle::load(&p.client_bundle_path()).unwrap().hosts,
            ["127.0.0.1:7707"]
        );
        assert!(
            p.init(listen, vec![], false)
                .unwrap_err()
                .to_string()
                .contains("--force")
        );
        let (b, id) = p.enroll_worker("pi-01", Again::Refuse).unwrap();
        assert_eq!(Bundle::load(&p.worker_bundle_path("pi-01")).unwrap(), b);
        assert_eq!(id, WorkerId(0));
        assert_eq!(
            Bundle::load(&p.client_bundle_path()).unwrap().role,
            Role::Client
        );
        assert!(p.enroll_worker("bad name", Again::Refuse).is_err());
        assert!(
            p.client_bundle("bad name", &tmp.path().join("x.json"))
                .is_err()
        );
    }

    #[test]
    fn enrolling_again_refuses_reuses_or_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        let p = Profile {
            dir: tmp.path().join("default"),
        };
        p.init("127.0.0.1:7707".parse().unwrap(), vec![], false)
            .unwrap();
        let (one, _) = p.enroll_worker("pi-01", Again::Refuse).unwrap();
        let (_, two) = p.enroll_worker("pi-02", Again::Refuse).unwrap();
        assert_eq!(two, WorkerId(1));
        let err = p.enroll_worker("pi-01", Again::Refuse).unwrap_err();
        assert!(err.to_string().contains("enrolled already (id 0)"), "{err}");
        assert_eq!(
            p.enroll_worker("pi-01", Again::Reuse).unwrap(),
            (one.clone(), WorkerId(0))
        );
        crate::net::append_revoked(&p.revoked_path(), "pi-01").unwrap();
        let (new, id) = p.enroll_worker("pi-01", Again::Replace).unwrap();
        assert_ne!(new.cert, one.cert);
        assert_eq!(id, WorkerId(0));
        let enrolled = Enrolled::load(&p.enrolled_path()).unwrap();
        let der = bramble_certs::tls::certs_from_pem(&new.cert).unwrap();
        assert_eq!(
            enrolled.get("pi-01").unwrap().fingerprint,
            fingerprint(&der[0])
        );
        assert_eq!(std::fs::read_to_string(p.revoked_path()).unwrap(), "");
    }

    #[test]
    fn local_addresses_from_the_fib_trie() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                    |-- 127.0.0.1\n   /32 host LOCAL\n |-- 192.0.2.0\n  /24 link UNICAST\n\
                    |-- 192.0.2.2\n   /32 host LOCAL\n |-- 192.0.2.255\n /32 link BROADCAST\n\
                    Local:\n |-- 192.0.2.2\n /32 host LOCAL\n |-- 10.1.2.3\n /32 host LOCAL\n";
        let got: Vec<String> = local_ipv4(trie).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["192.0.2.2", "10.1.2.3"]);
        assert_eq!(mdns_name("pi-master").as_deref(), Some("pi-master.local"));
        assert_eq!(mdns_name("localhost"), None);
        assert_eq!(mdns_name("a.example.org"), None);
        let config = |listen: &str| HostConfig {
            listen: listen.into(),
            public: vec!["192.0.2.2:7707".into()],
            policy: "thermal".into(),
            heartbeat_ms: 1000,
            worker_timeout_ms: 5000,
        };
        assert_eq!(local_hosts(&config("0.0.0.0:7707")), ["127.0.0.1:7707"]);
        assert_eq!(local_hosts(&config("[::]:7707")), ["[::1]:7707"]);
        assert_eq!(local_hosts(&config("127.0.0.1:9")), ["127.0.0.1:9"]);
        assert_eq!(local_hosts(&config("192.0.2.2:7707")), ["192.0.2.2:7707"]);
    }

    #[test]
    fn host_port_split() {
        assert_eq!(
            split_host_port("10.0.0.2:7707").unwrap(),
            ("10.0.0.2".into(), 7707)
        );
        assert_eq!(split_host_port("[::1]:1").unwrap(), ("::1".into(), 1));
        assert!(split_host_port("pi.local").is_err());
        assert!(split_host_port(":7707").is_err());
    }

    /// The example in docs/ parses (every key is required, so it shows them all).
    #[test]
    fn the_documented_example_parses() {
        let c: HostConfig = toml::from_str(include_str!("../../docs/host.toml")).unwrap();
        assert_eq!(c.policy, "thermal");
    }

    /// Bounded fuzz run (CI): `host.toml` texts, random and mangled, give an error, never a
    /// panic.
    #[test]
    fn config_files_never_panic() {
        let sample = "listen = \"0.0.0.0:7707\"\npublic = [\"10.0.0.2:7707\"]\n\
                      policy = \"thermal\"\nheartbeat_ms = 1000\nworker_timeout_ms = 5000\n";
        assert!(toml::from_str::<HostConfig>(sample).is_ok());
        bramble_wire::fuzz::run(&[sample.as_bytes()], 512, |input| {
            let _ = toml::from_str::<HostConfig>(&String::from_utf8_lossy(input));
        });
    }
}
