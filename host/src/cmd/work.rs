//! Running work: `apply`, `map`, `scatter` (submit, then follow the results until the job
//! ends), `submit` (print the id and leave), `results`, `wait`, `cancel`, `jobs`. Following
//! survives a host restart: the CLI reconnects and asks again from where it was. Ctrl-C on a
//! blocking command cancels its job.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bramble_certs::Bundle;
use bramble_host::client::{Client, ClientError};
use bramble_wire::{Command, JobId, JobKind, JobSpec, ToClient};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::TASKS_FAILED;
use super::inputs::{parse_range, parse_targets, read_inputs, split_command, timeout_ms};
use super::output::{Order, Printer};
use crate::cli::{ApplyArgs, InputArgs, MapArgs, RunOpts, ScatterArgs};

/// Exit code of `wait --timeout` when the job is still running (as coreutils `timeout`).
const TIMED_OUT: u8 = 124;
/// How long a following CLI keeps trying to reach a restarted host.
const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// A job ready to submit, and how to show its results.
pub(super) struct Job {
    spec: JobSpec,
    order: Order,
}

/// A client connection that can be re-established.
pub(super) struct Session {
    bundle: Bundle,
    client: Client,
}

impl Session {
    pub(super) fn new(bundle: Bundle, client: Client) -> Self {
        Self { bundle, client }
    }

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    pub(super) async fn close(self) {
        self.client.close().await;
    }

    /// Reconnects with backoff for up to [`RECONNECT_FOR`].
    async fn reconnect(&mut self, why: &ClientError) -> anyhow::Result<()> {
        eprintln!("bramble: lost the host ({why}); reconnecting");
        let give_up = Instant::now() + RECONNECT_FOR;
        let mut delay = Duration::from_millis(200);
        loop {
            tokio::time::sleep(delay).await;
            match Client::connect(&self.bundle).await {
                Ok(client) => {
                    self.client = client;
                    return Ok(());
                }
                Err(e) if Instant::now() < give_up => {
                    delay = (delay * 2).min(Duration::from_secs(3));
                    tracing::debug!("still cannot reach the host: {e}");
                }
                Err(e) => return Err(e).context("gave up reconnecting"),
            }
        }
    }
}

fn command(argv: Vec<String>, run: &RunOpts) -> anyhow::Result<Command> {
    Ok(Command {
        argv,
        shell: run.shell,
        timeout_ms: timeout_ms(run.timeout)?,
    })
}

fn items(input: &InputArgs, trailing: Option<Vec<String>>) -> anyhow::Result<Vec<String>> {
    match (&input.range, &input.inputs, trailing) {
        (None, None, None) => {
            bail!("this needs items: --range A..B, --inputs FILE, or `::: a b c` after the command")
        }
        (Some(r), None, None) => parse_range(r),
        (None, Some(path), None) => read_inputs(path),
        (None, None, Some(items)) => Ok(items),
        _ => bail!("give items one way only: --range, --inputs or :::"),
    }
}

fn spec(
    kind: JobKind,
    argv: Vec<String>,
    items: Vec<String>,
    chunksize: u32,
    run: &RunOpts,
    persistent: bool,
) -> anyhow::Result<JobSpec> {
    Ok(JobSpec {
        kind,
        command: command(argv, run)?,
        items,
        chunksize,
        targets: parse_targets(run.targets.as_deref())?,
        retries: run.retries,
        persistent,
    })
}

pub(super) fn apply_job(args: &ApplyArgs) -> anyhow::Result<Job> {
    let (argv, trailing) = split_command(&args.command)?;
    if trailing.is_some() {
        bail!("apply takes no items (`:::`); use map or scatter");
    }
    Ok(Job {
        spec: spec(JobKind::Apply, argv, Vec::new(), 1, &args.run, false)?,
        order: Order::ByWorker,
    })
}

pub(super) fn map_job(args: &MapArgs) -> anyhow::Result<Job> {
    let (argv, trailing) = split_command(&args.command)?;
    let items = items(&args.input, trailing)?;
    if args.chunksize == 0 {
        bail!("--chunksize must be at least 1");
    }
    let order = if args.unordered {
        Order::Completion
    } else {
        Order::Input
    };
    Ok(Job {
        spec: spec(
            JobKind::Map,
            argv,
            items,
            args.chunksize,
            &args.run,
            args.persistent,
        )?,
        order,
    })
}

pub(super) fn scatter_job(args: &ScatterArgs) -> anyhow::Result<Job> {
    let (argv, trailing) = split_command(&args.command)?;
    let items = items(&args.input, trailing)?;
    Ok(Job {
        spec: spec(JobKind::Scatter, argv, items, 1, &args.run, false)?,
        order: Order::Input,
    })
}

/// Submits and follows until the job ends; Ctrl-C cancels it.
pub(super) async fn run(mut session: Session, job: Job, json: bool) -> anyhow::Result<ExitCode> {
    let items = if json {
        job.spec.items.clone()
    } else {
        Vec::new()
    };
    let (id, total) = session.client().submit(job.spec).await?;
    let mut printer = Printer::new(job.order, json, items);
    let code = follow(&mut session, id, total, &mut printer, true, json).await;
    session.close().await;
    code
}

/// `submit`: prints the job id and leaves the job running.
pub(super) async fn submit(session: Session, job: Job, json: bool) -> anyhow::Result<ExitCode> {
    let (id, total) = session.client().submit(job.spec).await?;
    session.close().await;
    if json {
        println!("{}", serde_json::json!({ "job": id.0, "total": total }));
    } else {
        println!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `results JOB [--follow]`: in input order.
pub(super) async fn results(
    mut session: Session,
    job: u64,
    follow_on: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut printer = Printer::new(Order::Input, json, Vec::new());
    let code = if follow_on {
        follow(&mut session, JobId(job), 0, &mut printer, false, json).await
    } else {
        print_stored(&session, JobId(job), &mut printer).await
    };
    session.close().await;
    code
}

async fn print_stored(
    session: &Session,
    job: JobId,
    printer: &mut Printer,
) -> anyhow::Result<ExitCode> {
    let mut replies = session.client().results(job, 0, false).await?;
    let mut ended = false;
    let mut total = 0;
    while let Some(msg) = replies.next().await? {
        match msg {
            ToClient::JobAccepted { total: t, .. } => total = t,
            ToClient::ItemDone { worker, output, .. } => {
                printer.push(worker, output)?;
            }
            ToClient::JobFinished { .. } | ToClient::JobCancelled { .. } => ended = true,
            other => bail!("unexpected answer from host: {other:?}"),
        }
    }
    printer.finish()?;
    if !ended {
        eprintln!(
            "bramble: job {job} is still running ({total} results expected); use --follow to wait"
        );
    }
    Ok(if printer.failed > 0 {
        ExitCode::from(TASKS_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

enum End {
    Finished(u64),
    Cancelled,
}

/// Prints the job's results until it ends, reconnecting after a lost connection.
async fn follow(
    session: &mut Session,
    job: JobId,
    total: u64,
    printer: &mut Printer,
    cancel_on_interrupt: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let progress = progress_bar(total, json);
    let end = loop {
        let from = printer.resume_from();
        let attempt = stream(session.client(), job, from, printer, &progress);
        let outcome = tokio::select! {
            r = attempt => r,
            _ = tokio::signal::ctrl_c() => {
                progress.finish_and_clear();
                if cancel_on_interrupt {
                    eprintln!("bramble: interrupted; cancelling job {job}");
                    if let Err(e) = session.client().cancel(job).await {
                        eprintln!("bramble: could not cancel job {job}: {e}");
                    }
                }
                return Ok(ExitCode::from(130));
            }
        };
        match outcome {
            Ok(end) => break end,
            Err(e) => match e.downcast::<ClientError>() {
                Ok(ce) if ce.is_connection() => session.reconnect(&ce).await?,
                Ok(ce) => return Err(ce.into()),
                Err(other) => return Err(other),
            },
        }
    };
    progress.finish_and_clear();
    printer.finish()?;
    match end {
        End::Finished(0) => Ok(ExitCode::SUCCESS),
        End::Finished(failed) => {
            eprintln!("bramble: {failed} item(s) of job {job} failed");
            Ok(ExitCode::from(TASKS_FAILED))
        }
        End::Cancelled => {
            eprintln!("bramble: job {job} was cancelled");
            Ok(ExitCode::from(TASKS_FAILED))
        }
    }
}

/// One results stream: prints what arrives until the job ends or the stream breaks.
async fn stream(
    client: &Client,
    job: JobId,
    from: u64,
    printer: &mut Printer,
    progress: &ProgressBar,
) -> anyhow::Result<End> {
    let mut replies = client.results(job, from, true).await?;
    loop {
        match replies.next().await? {
            Some(ToClient::JobAccepted { total, .. }) => progress.set_length(total),
            Some(ToClient::ItemDone { worker, output, .. }) => {
                if progress.suspend(|| printer.push(worker, output))? {
                    progress.inc(1);
                }
            }
            Some(ToClient::JobFinished { failed, .. }) => return Ok(End::Finished(failed)),
            Some(ToClient::JobCancelled { .. }) => return Ok(End::Cancelled),
            Some(other) => bail!("unexpected answer from host: {other:?}"),
            None => {
                return Err(ClientError::Protocol("the results stream ended early".into()).into());
            }
        }
    }
}

/// A done/total bar with rate and ETA on stderr, only when stderr is a terminal.
fn progress_bar(total: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} ETA {eta}") {
        bar.set_style(style);
    }
    bar
}

/// `wait JOB [--timeout S]`.
pub(super) async fn wait(
    session: Session,
    job: u64,
    timeout: Option<f64>,
) -> anyhow::Result<ExitCode> {
    let limit = match timeout_ms(timeout)? {
        0 => Duration::MAX,
        ms => Duration::from_millis(ms),
    };
    let end = tokio::time::timeout(limit, session.client().wait(JobId(job))).await;
    session.close().await;
    match end {
        Err(_) => {
            eprintln!(
                "bramble: job {job} still running after {}s",
                limit.as_secs_f64()
            );
            Ok(ExitCode::from(TIMED_OUT))
        }
        Ok(Ok(ToClient::JobFinished { failed: 0, .. })) => Ok(ExitCode::SUCCESS),
        Ok(Ok(ToClient::JobFinished { failed, .. })) => {
            eprintln!("bramble: {failed} item(s) of job {job} failed");
            Ok(ExitCode::from(TASKS_FAILED))
        }
        Ok(Ok(ToClient::JobCancelled { .. })) => {
            eprintln!("bramble: job {job} was cancelled");
            Ok(ExitCode::from(TASKS_FAILED))
        }
        Ok(Ok(other)) => bail!("unexpected answer from host: {other:?}"),
        Ok(Err(e)) => Err(e.into()),
    }
}

/// `cancel JOB`.
pub(super) async fn cancel(session: Session, job: u64) -> anyhow::Result<ExitCode> {
    let result = session.client().cancel(JobId(job)).await;
    session.close().await;
    result?;
    println!("cancelled job {job}");
    Ok(ExitCode::SUCCESS)
}
