//! What each subcommand does. Every function returns the process exit code, or an error that
//! `main` prints as one line with exit code 2.

mod admin;
mod inputs;
mod output;
mod query;
mod serve;
mod work;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use bramble_certs::Bundle;
use bramble_host::client::Client;
use bramble_host::profile::Profile;

use crate::cli::{Cli, ClusterAction, Command, SubmitJob};
use work::Session;

/// Exit code when some tasks failed.
pub(crate) const TASKS_FAILED: u8 = 1;

pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let profile = Profile::locate(&cli.profile)?;
    let json = cli.json;
    match cli.command {
        Command::Init {
            listen,
            public,
            force,
        } => admin::init(&profile, listen, public, force),
        Command::Enroll { name, out } => admin::enroll(&profile, &name, out),
        Command::ClientBundle { name, out } => admin::client_bundle(&profile, &name, out),
        Command::Serve { listen, policy } => {
            init_logging("info");
            multi_thread()?.block_on(serve::serve(&profile, listen, policy))
        }
        Command::Cluster {
            action:
                ClusterAction::Start {
                    n,
                    slots,
                    listen,
                    policy,
                },
        } => {
            init_logging("info");
            multi_thread()?.block_on(serve::cluster(&profile, n, slots, listen, policy))
        }
        Command::Revoke { name } => admin::revoke(&profile, cli.bundle.as_deref(), &name),
        cmd => {
            let bundle = cli.bundle.as_deref();
            match cmd {
                Command::Ids => client_command(&profile, bundle, query::ids),
                Command::Status { watch } => {
                    client_command(&profile, bundle, |s| query::status(s, json, watch))
                }
                Command::Jobs => client_command(&profile, bundle, |s| query::jobs(s, json)),
                Command::Apply(args) => blocking(&profile, bundle, work::apply_job(&args)?, json),
                Command::Map(args) => blocking(&profile, bundle, work::map_job(&args)?, json),
                Command::Scatter(args) => {
                    blocking(&profile, bundle, work::scatter_job(&args)?, json)
                }
                Command::Submit { job } => {
                    let job = match job {
                        SubmitJob::Map(args) => work::map_job(&args)?,
                        SubmitJob::Apply(args) => work::apply_job(&args)?,
                        SubmitJob::Scatter(args) => work::scatter_job(&args)?,
                    };
                    client_command(&profile, bundle, |s| work::submit(s, job, json))
                }
                Command::Wait { job, timeout } => {
                    client_command(&profile, bundle, |s| work::wait(s, job, timeout))
                }
                Command::Results { job, follow } => {
                    client_command(&profile, bundle, |s| work::results(s, job, follow, json))
                }
                Command::Cancel { job } => {
                    client_command(&profile, bundle, |s| work::cancel(s, job))
                }
                _ => unreachable!("handled above"),
            }
        }
    }
}

fn blocking(
    profile: &Profile,
    bundle: Option<&Path>,
    job: work::Job,
    json: bool,
) -> anyhow::Result<ExitCode> {
    client_command(profile, bundle, |s| work::run(s, job, json))
}

/// The client bundle: `--bundle`/`BRAMBLE_BUNDLE`, else the profile's.
fn load_bundle(profile: &Profile, bundle: Option<&Path>) -> anyhow::Result<Bundle> {
    let path = bundle.map_or_else(|| profile.client_bundle_path(), Path::to_owned);
    Bundle::load(&path).with_context(|| {
        if bundle.is_none() && !profile.exists() {
            format!(
                "no profile at {} (run `bramble init`, or pass --bundle)",
                profile.dir.display()
            )
        } else {
            "cannot use the client bundle".to_owned()
        }
    })
}

/// Connects with `--bundle`/`BRAMBLE_BUNDLE` or the profile's client bundle and runs `f`.
fn client_command<F, Fut>(
    profile: &Profile,
    bundle: Option<&Path>,
    f: F,
) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Session) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    init_logging("warn");
    let bundle = load_bundle(profile, bundle)?;
    current_thread()?.block_on(async {
        let client = Client::connect(&bundle).await?;
        f(Session::new(bundle, client)).await
    })
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn multi_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Logs to stderr; `BRAMBLE_LOG` overrides the level.
fn init_logging(default: &str) {
    let level = std::env::var("BRAMBLE_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .or_else(|| default.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
