//! What each subcommand does. Every function returns the process exit code, or an error that
//! `main` prints as one line with exit code 2. Talking to the host is `bramble-client`'s job;
//! these only turn arguments into requests and answers into text.

mod admin;
mod dashboard;
mod inputs;
mod output;
mod query;
mod records;
mod serve;
mod stage;
mod work;

use std::path::Path;
use std::process::ExitCode;

use bramble_client::Client;
use bramble_host::profile::{Again, Profile};

use crate::cli::{Cli, ClusterAction, Command, SubmitJob};

/// Exit code when some tasks failed.
pub(crate) const TASKS_FAILED: u8 = 1;

pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let profile = Profile::locate(&cli.profile)?;
    let json = cli.json;
    let bundle = cli.bundle.as_deref();
    match cli.command {
        Command::Init {
            listen,
            public,
            force,
        } => admin::init(&profile, listen, public, force, json),
        Command::Enroll {
            name,
            out,
            force,
            reuse,
        } => {
            let again = match (force, reuse) {
                (true, _) => Again::Replace,
                (_, true) => Again::Reuse,
                _ => Again::Refuse,
            };
            admin::enroll(&profile, &name, out, again, json)
        }
        Command::ClientBundle { name, out } => admin::client_bundle(&profile, &name, out, json),
        Command::Serve {
            listen,
            policy,
            metrics,
        } => {
            bramble_net::logging::init(tracing::Level::INFO);
            multi_thread()?.block_on(serve::serve(&profile, listen, policy, metrics))
        }
        Command::Cluster {
            action:
                ClusterAction::Start {
                    n,
                    slots,
                    listen,
                    policy,
                    python,
                },
        } => {
            bramble_net::logging::init(tracing::Level::INFO);
            let local = serve::Local {
                n,
                slots,
                listen,
                policy,
                python,
            };
            multi_thread()?.block_on(serve::cluster(&profile, local))
        }
        Command::Revoke { name, force } => admin::revoke(&profile, bundle, &name, force),
        Command::Completions { shell } => {
            let mut cli = crate::cli::command();
            clap_complete::generate(shell, &mut cli, "bramble", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => {
            let written = admin::man_pages(crate::cli::command(), &dir)?;
            println!("wrote {written} man pages into {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Dashboard { listen, open } => {
            client_command(&profile, bundle, |c| dashboard::run(c, listen, open))
        }
        Command::Ids => client_command(&profile, bundle, query::ids),
        Command::Status { watch } => {
            client_command(&profile, bundle, |c| query::status(c, json, watch))
        }
        Command::Jobs { state } => {
            client_command(&profile, bundle, |c| query::jobs(c, state, json))
        }
        Command::Forget { jobs } => client_command(&profile, bundle, |c| query::forget(c, jobs)),
        Command::Prune { older_than, keep } => {
            let older_than_ms = older_than.as_deref().map(inputs::parse_age).transpose()?;
            client_command(&profile, bundle, |c| query::prune(c, older_than_ms, keep))
        }
        Command::Drain { worker } => {
            client_command(&profile, bundle, |c| admin::drain(c, worker, true))
        }
        Command::Undrain { worker } => {
            client_command(&profile, bundle, |c| admin::drain(c, worker, false))
        }
        Command::Apply(args) => {
            let job = work::apply_job(&args)?;
            client_command(&profile, bundle, |c| work::run(c, job, json))
        }
        Command::Map(args) => {
            let job = work::map_job(&args)?;
            client_command(&profile, bundle, |c| work::run(c, job, json))
        }
        Command::Scatter(args) => {
            let job = work::scatter_job(&args)?;
            client_command(&profile, bundle, |c| work::run(c, job, json))
        }
        Command::Submit { job } => {
            let job = match job {
                SubmitJob::Map(args) => work::map_job(&args)?,
                SubmitJob::Apply(args) => work::apply_job(&args)?,
                SubmitJob::Scatter(args) => work::scatter_job(&args)?,
            };
            client_command(&profile, bundle, |c| work::submit(c, job, json))
        }
        Command::Wait { job, timeout } => {
            client_command(&profile, bundle, |c| work::wait(c, job, timeout))
        }
        Command::Results {
            job,
            follow,
            fetch_dir,
        } => client_command(&profile, bundle, |c| {
            work::results(c, job, follow, fetch_dir, json)
        }),
        Command::Cancel { job } => client_command(&profile, bundle, |c| work::cancel(c, job)),
    }
}

/// Loads the client bundle (`--bundle`/`BRAMBLE_BUNDLE`, else the profile's), connects, and
/// runs `f` with the connection.
fn client_command<F, Fut>(
    profile: &Profile,
    bundle: Option<&Path>,
    f: F,
) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    bramble_net::logging::init(tracing::Level::WARN);
    let bundle = bramble_client::locate::load_bundle(Some(profile.name()), bundle)?;
    current_thread()?.block_on(async {
        let client = Client::connect(bundle).await?;
        let code = f(client.clone()).await;
        client.close().await;
        code
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
