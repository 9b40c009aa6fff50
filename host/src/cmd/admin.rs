//! `init`, `enroll`, `client-bundle`: creating the profile and issuing bundles.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bramble_certs::Role;
use bramble_host::profile::Profile;

pub(super) fn init(
    profile: &Profile,
    listen: SocketAddr,
    public: Vec<String>,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let config = profile.init(listen, public, force)?;
    println!("created profile {}", profile.dir.display());
    println!(
        "  host listens on {}; workers and clients dial {}",
        config.listen,
        config.public.join(", ")
    );
    println!("next: `bramble serve`, then `bramble enroll NAME` for each Pi");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn enroll(
    profile: &Profile,
    name: &str,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let kept = profile.worker_bundle_path(name);
    let bundle = profile.enroll(Role::Worker, name, &kept)?;
    if let Some(out) = &out {
        bundle.save(out)?;
    }
    println!("{}", out.unwrap_or(kept).display());
    Ok(ExitCode::SUCCESS)
}

pub(super) fn client_bundle(
    profile: &Profile,
    name: &str,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let out = out.unwrap_or_else(|| PathBuf::from(format!("{name}.json")));
    profile.enroll(Role::Client, name, &out)?;
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}
