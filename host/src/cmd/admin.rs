//! `init`, `enroll`, `client-bundle`: creating the profile and issuing bundles.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use bramble_certs::{Bundle, Role, check_name};
use bramble_client::Client;
use bramble_host::net::append_revoked;
use bramble_host::profile::{Again, Profile};
use bramble_wire::WorkerId;

pub(super) fn init(
    profile: &Profile,
    listen: SocketAddr,
    public: Vec<String>,
    force: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = profile.init(listen, public, force)?;
    if json {
        let report = serde_json::json!({
            "profile": profile.dir,
            "listen": config.listen.to_string(),
            "public": config.public,
            "local": bramble_host::profile::local_hosts(&config),
            "client_bundle": profile.client_bundle_path(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("created profile {}", profile.dir.display());
    println!(
        "  host listens on {}; Pis and other machines dial {}; this machine's CLI dials {}",
        config.listen,
        config.public.join(", "),
        bramble_host::profile::local_hosts(&config).join(", ")
    );
    if only_loopback(&config.public) {
        println!(
            "  only this machine can reach that address: for Pis, `bramble init --force --public \
             ADDRESS:PORT` (or set `public` in {} and enroll them again)",
            profile.config_path().display()
        );
    }
    println!("next: `bramble serve`, then `bramble enroll NAME` for each Pi");
    Ok(ExitCode::SUCCESS)
}

/// Whether every address is this machine's loopback (a Pi given such a bundle dials itself).
fn only_loopback(hosts: &[String]) -> bool {
    hosts.iter().all(|h| {
        bramble_host::profile::split_host_port(h).is_ok_and(|(host, _)| {
            host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
    })
}

pub(super) fn enroll(
    profile: &Profile,
    name: &str,
    out: Option<PathBuf>,
    again: Again,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (bundle, id) = profile.enroll_worker(name, again)?;
    if let Some(out) = &out {
        bundle.save(out)?;
    }
    let path = out.unwrap_or_else(|| profile.worker_bundle_path(name));
    issued(&bundle, &path, Some(id), json)
}

pub(super) fn client_bundle(
    profile: &Profile,
    name: &str,
    out: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let out = out.unwrap_or_else(|| PathBuf::from(format!("{name}.json")));
    let bundle = profile.client_bundle(name, &out)?;
    issued(&bundle, &out, None, json)
}

/// Says where an issued bundle is: its path, or with `--json` its name, role, worker id, path
/// and the addresses it dials.
fn issued(
    bundle: &Bundle,
    path: &Path,
    id: Option<WorkerId>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if bundle.role == Role::Worker && only_loopback(&bundle.hosts) {
        eprintln!(
            "bramble: warning: {} dials only {} (this machine): a Pi given it cannot reach the \
             host; set `public` in the profile's host.toml to an address the Pis reach \
             (or `bramble init --force --public ADDRESS:PORT`) and enroll it again",
            path.display(),
            bundle.hosts.join(", ")
        );
    }
    if json {
        let report = serde_json::json!({
            "name": bundle.name,
            "role": bundle.role.to_string(),
            "id": id.map(|id| id.0),
            "bundle": path,
            "hosts": bundle.hosts,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Adds the name to the profile's `revoked.txt` (when the profile is here) and tells a running
/// host, which drops the name's live connections.
pub(super) fn revoke(
    profile: &Profile,
    bundle: Option<&Path>,
    name: &str,
    force: bool,
) -> anyhow::Result<ExitCode> {
    check_name(name)?;
    let bundle_path = bundle;
    let bundle = bramble_client::locate::load_bundle(Some(profile.name()), bundle_path)?;
    if bundle.name == name && !force {
        bail!(
            "{name} is the certificate this command connects with: once revoked, every \
             command with it is refused (--force to revoke it anyway, after `bramble \
             client-bundle OTHER` for a new one)"
        );
    }
    let local = bundle_path.is_none() && profile.exists();
    if local {
        append_revoked(&profile.revoked_path(), name)?;
    }
    bramble_net::logging::init(tracing::Level::WARN);
    let own = bundle.name == name;
    let told = super::current_thread()?.block_on(async {
        let client = Client::connect(bundle).await?;
        let r = client.revoke(name).await;
        client.close().await;
        r
    });
    match (told, local) {
        (Ok(()), _) => println!("revoked {name}"),
        // The host drops the revoked name's connections: this one too, before it answers.
        (Err(bramble_client::ClientError::Refused(_)), _) if own => {
            println!("revoked {name} (the certificate of this command: it is refused from now on)")
        }
        (Err(e), true) if e.is_connection() => {
            println!(
                "revoked {name} in {} (host not reachable: applies when it starts)",
                profile.revoked_path().display()
            );
        }
        (Err(e), _) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `bramble.1` and `bramble-COMMAND.1` (subcommands of subcommands too) into `dir`,
/// generated from the clap definitions; returns how many.
pub(super) fn man_pages(cli: clap::Command, dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cli = cli.bin_name("bramble");
    cli.build();
    let mut pages = vec![("bramble".to_owned(), cli.clone())];
    let mut i = 0;
    while i < pages.len() {
        let (name, cmd) = pages[i].clone();
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let full = format!("{name}-{}", sub.get_name());
            let page = sub
                .clone()
                .display_name(full.clone())
                .bin_name(full.replace("-", " "));
            pages.push((full, page));
        }
        i += 1;
    }
    for (name, cmd) in &pages {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(pages.len())
}

/// `drain NAME` / `undrain NAME`.
pub(super) async fn drain(
    client: Client,
    worker: String,
    draining: bool,
) -> anyhow::Result<ExitCode> {
    client.drain(&worker, draining).await?;
    if draining {
        println!(
            "draining {worker}: no new work; running tasks finish (`bramble undrain {worker}` to resume)"
        );
    } else {
        println!("undrained {worker}");
    }
    Ok(ExitCode::SUCCESS)
}
