//! Running work: `apply`, `map`, `scatter` (submit, then print results as they come until the
//! job ends; Ctrl-C cancels it), `submit` (print the id and leave), `results`, `wait`,
//! `cancel`. Following a job across lost connections and host restarts, in input or
//! completion order, is `bramble-client`'s; this turns arguments into a job and events into
//! output.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bramble_client::{Client, JobEnd, JobEvent, JobStream, Order};
use bramble_wire::{Command, ItemRange, JobId, JobKind, JobSpec, StagedCommand, Work};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::TASKS_FAILED;
use super::inputs::{parse_range, parse_targets, read_inputs, split_command, timeout_ms};
use super::output::{Layout, Printer};
use super::records::Records;
use super::stage::{self, Source};
use crate::cli::{ApplyArgs, InputArgs, MapArgs, RunOpts, ScatterArgs};

/// Exit code of `wait --timeout` when the job is still running (as coreutils `timeout`).
const TIMED_OUT: u8 = 124;

/// A job ready to submit, and how to show its results.
pub(super) struct Job {
    spec: JobSpec,
    order: Order,
    layout: Layout,
    /// Staged files, put on the host before the job is submitted.
    staged: Vec<Source>,
    /// Where fetched files go (with `--fetch`).
    fetch_dir: Option<PathBuf>,
    /// `--tag`.
    tag: bool,
    /// `--halt`: what to do once this many items failed.
    halt: Option<Halt>,
    /// `--joblog`, `--results`.
    joblog: Option<PathBuf>,
    results: Option<PathBuf>,
    /// `--name`.
    name: Option<String>,
}

impl Job {
    fn new(spec: JobSpec, order: Order, layout: Layout, run: &RunOpts) -> anyhow::Result<Self> {
        let staged = stage::collect(&run.stage)?;
        let mut spec = spec;
        if !staged.is_empty() || !run.fetch.is_empty() {
            let Work::Command {
                command,
                persistent,
            } = spec.work
            else {
                bail!("--stage and --fetch are for commands");
            };
            spec.work = Work::StagedCommand(StagedCommand {
                command,
                persistent,
                files: staged.iter().map(|s| s.file.clone()).collect(),
                fetch: run.fetch.clone(),
            });
        }
        Ok(Self {
            spec,
            order,
            layout,
            staged,
            fetch_dir: (!run.fetch.is_empty()).then(|| run.fetch_dir.clone()),
            tag: run.tag,
            halt: run.halt.as_deref().map(parse_halt).transpose()?,
            joblog: run.joblog.clone(),
            results: run.results.clone(),
            name: run.name.as_deref().map(check_job_name).transpose()?,
        })
    }

    /// Checks that `--name` is free, and puts the staged files the host does not have:
    /// what a job needs before it is submitted.
    async fn prepare(&self, client: &Client) -> anyhow::Result<()> {
        if let Some(name) = &self.name
            && let Some((id, _)) = client
                .job_names()
                .await?
                .into_iter()
                .find(|(_, n)| n == name)
        {
            bail!("the name {name:?} is taken by job {id} (`bramble forget {id}` frees it)");
        }
        if !self.staged.is_empty() {
            stage::upload(client, &self.staged).await?;
        }
        Ok(())
    }
}

/// Names a submitted job (`--name`).
async fn name_job(client: &Client, job: JobId, name: Option<&str>) -> anyhow::Result<()> {
    if let Some(name) = name {
        client
            .name_job(job, name)
            .await
            .with_context(|| format!("job {job} runs, but naming it failed"))?;
    }
    Ok(())
}

/// A job name: 1 to 64 characters, not all digits (those are ids), no spaces or control
/// characters.
fn check_job_name(name: &str) -> anyhow::Result<String> {
    let ok = (1..=64).contains(&name.chars().count())
        && !name.chars().all(|c| c.is_ascii_digit())
        && !name.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        bail!("--name {name:?}: 1 to 64 characters, not all digits, without spaces");
    }
    Ok(name.to_owned())
}

/// A JOB argument: an id, or the name of a job (`--name`).
pub(super) async fn resolve_job(client: &Client, job: &str) -> anyhow::Result<JobId> {
    if let Ok(id) = job.parse::<u64>() {
        return Ok(JobId(id));
    }
    client
        .job_names()
        .await?
        .into_iter()
        .find(|(_, n)| n == job)
        .map(|(id, _)| id)
        .with_context(|| format!("no job named {job:?} (`bramble jobs` lists them)"))
}

/// `--halt now,fail=N` or `soon,fail=N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Halt {
    /// `soon`: start nothing more and let what runs finish; `now`: cancel, killing what runs.
    soon: bool,
    failures: u64,
}

fn parse_halt(s: &str) -> anyhow::Result<Halt> {
    let (when, fail) = s.split_once(',').unwrap_or((s, ""));
    let failures = fail
        .strip_prefix("fail=")
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n > 0);
    match (when, failures) {
        ("now", Some(failures)) => Ok(Halt {
            soon: false,
            failures,
        }),
        ("soon", Some(failures)) => Ok(Halt {
            soon: true,
            failures,
        }),
        _ => bail!("--halt {s}: expected now,fail=N or soon,fail=N with N at least 1"),
    }
}

/// A job's items: listed, or a range the host makes them from.
enum Items {
    List(Vec<String>),
    Range(ItemRange),
}

fn items(input: &InputArgs, trailing: Option<Vec<String>>) -> anyhow::Result<Items> {
    match (&input.range, &input.inputs, trailing) {
        (None, None, None) => {
            bail!("this needs items: --range A..B, --inputs FILE, or `::: a b c` after the command")
        }
        (Some(r), None, None) => parse_range(r).map(Items::Range),
        (None, Some(path), None) => read_inputs(path).map(Items::List),
        (None, None, Some(items)) => Ok(Items::List(items)),
        _ => bail!("give items one way only: --range, --inputs or :::"),
    }
}

fn spec(
    kind: JobKind,
    argv: Vec<String>,
    items: Items,
    chunksize: u32,
    run: &RunOpts,
    persistent: bool,
) -> anyhow::Result<JobSpec> {
    let (items, range) = match items {
        Items::List(list) => (list.into_iter().map(String::into_bytes).collect(), None),
        Items::Range(r) => (Vec::new(), Some(r)),
    };
    let command = Command {
        argv,
        shell: run.shell,
        timeout_ms: timeout_ms(run.timeout)?,
    };
    Ok(JobSpec {
        kind,
        work: Work::Command {
            command,
            persistent,
        },
        items,
        chunksize,
        targets: parse_targets(run.targets.as_deref())?,
        retries: run.retries,
        range,
    })
}

pub(super) fn apply_job(args: &ApplyArgs) -> anyhow::Result<Job> {
    let (argv, trailing) = split_command(&args.command)?;
    if trailing.is_some() {
        bail!("apply takes no items (`:::`); use map or scatter");
    }
    let spec = spec(
        JobKind::Apply,
        argv,
        Items::List(Vec::new()),
        1,
        &args.run,
        false,
    )?;
    Job::new(spec, Order::Completion, Layout::ByWorker, &args.run)
}

pub(super) fn map_job(args: &MapArgs) -> anyhow::Result<Job> {
    let (argv, trailing) = split_command(&args.command)?;
    let items = items(&args.input, trailing)?;
    if args.chunksize == 0 || args.chunksize > bramble_sched::MAX_CHUNKSIZE {
        bail!("--chunksize must be 1 to {}", bramble_sched::MAX_CHUNKSIZE);
    }
    let spec = spec(
        JobKind::Map,
        argv,
        items,
        args.chunksize,
        &args.run,
        args.persistent,
    )?;
    let order = if args.unordered {
        Order::Completion
    } else {
        Order::Input
    };
    Job::new(spec, order, Layout::Lines, &args.run)
}

pub(super) fn scatter_job(args: &ScatterArgs) -> anyhow::Result<Job> {
    let (argv, trailing) = split_command(&args.command)?;
    let items = items(&args.input, trailing)?;
    let spec = spec(JobKind::Scatter, argv, items, 1, &args.run, false)?;
    Job::new(spec, Order::Input, Layout::Lines, &args.run)
}

/// Submits and prints the results until the job ends; Ctrl-C cancels it.
pub(super) async fn run(client: Client, mut job: Job, json: bool) -> anyhow::Result<ExitCode> {
    job.prepare(&client).await?;
    let records = (job.joblog.is_some() || job.results.is_some())
        .then(|| Records::open(job.joblog.as_deref(), job.results.as_deref()))
        .transpose()?;
    let spec = (json || job.tag || records.is_some()).then(|| job.spec.clone());
    let name = job.name.take();
    let stream = client.submit_and_follow(job.spec, job.order).await?;
    name_job(&client, stream.job(), name.as_deref()).await?;
    let total = stream.total().unwrap_or(0);
    let mut printer = Printer::new(job.layout, json, spec);
    printer.fetch_dir = job.fetch_dir;
    printer.tag = job.tag;
    printer.records = records;
    let follow = Follow {
        cancel_on_interrupt: true,
        halt: job.halt,
        json,
    };
    print_until_end(&client, stream, total, &mut printer, follow).await
}

/// `submit`: prints the job id and leaves the job running.
pub(super) async fn submit(client: Client, job: Job, json: bool) -> anyhow::Result<ExitCode> {
    if job.tag || job.halt.is_some() || job.joblog.is_some() || job.results.is_some() {
        bail!(
            "--tag, --halt, --joblog and --results act while a job is followed: use map, apply \
             or scatter (`bramble results JOB` prints a submitted job's results)"
        );
    }
    job.prepare(&client).await?;
    let (id, total) = client.submit(job.spec).await?;
    name_job(&client, id, job.name.as_deref()).await?;
    if json {
        println!("{}", serde_json::json!({ "job": id.0, "total": total }));
    } else {
        println!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `results JOB [--follow]`, in input order.
pub(super) async fn results(
    client: Client,
    job: String,
    follow: bool,
    fetch_dir: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let job = resolve_job(&client, &job).await?.0;
    let mut printer = Printer::new(Layout::Lines, json, None);
    printer.fetch_dir = fetch_dir;
    if follow {
        let stream = client.follow(JobId(job), Order::Input);
        let follow = Follow {
            cancel_on_interrupt: false,
            halt: None,
            json,
        };
        return print_until_end(&client, stream, 0, &mut printer, follow).await;
    }
    let mut stream = client.results(JobId(job), Order::Input);
    let mut ended = false;
    while let Some(event) = stream.next().await? {
        match event {
            JobEvent::Item(item) => printer.push(item.worker, item.output)?,
            JobEvent::Ended(_) => ended = true,
            JobEvent::HostNote { message } => eprintln!("bramble: host: {message}"),
            JobEvent::Accepted { .. } | JobEvent::Reconnecting { .. } | JobEvent::Output { .. } => {
            }
        }
    }
    printer.finish()?;
    if !ended {
        eprintln!(
            "bramble: job {job} is still running ({} results expected); use --follow to wait",
            stream.total().unwrap_or(0)
        );
    }
    Ok(exit_code(printer.failed))
}

/// How a job is followed.
struct Follow {
    /// Ctrl-C cancels the job (it was submitted by this command).
    cancel_on_interrupt: bool,
    /// `--halt`.
    halt: Option<Halt>,
    json: bool,
}

/// Prints a followed job's events until it ends.
async fn print_until_end(
    client: &Client,
    mut stream: JobStream,
    total: u64,
    printer: &mut Printer,
    follow: Follow,
) -> anyhow::Result<ExitCode> {
    let job = stream.job();
    let progress = progress_bar(total, follow.json);
    let mut halted = false;
    let end = loop {
        let event = tokio::select! {
            event = stream.next() => event?,
            _ = tokio::signal::ctrl_c() => {
                progress.finish_and_clear();
                if follow.cancel_on_interrupt {
                    eprintln!("bramble: interrupted; cancelling job {job}");
                    if let Err(e) = client.cancel(job).await {
                        eprintln!("bramble: could not cancel job {job}: {e}");
                    }
                }
                return Ok(ExitCode::from(130));
            }
        };
        match event {
            Some(JobEvent::Accepted { total }) => progress.set_length(total),
            Some(JobEvent::Item(item)) => {
                progress.suspend(|| printer.push(item.worker, item.output))?;
                progress.inc(1);
                match follow
                    .halt
                    .filter(|h| !halted && printer.failed >= h.failures)
                {
                    Some(Halt { soon: false, .. }) => {
                        progress.finish_and_clear();
                        printer.finish()?;
                        eprintln!(
                            "bramble: --halt: {} item(s) failed; cancelling job {job}",
                            printer.failed
                        );
                        if let Err(e) = client.cancel(job).await {
                            eprintln!("bramble: could not cancel job {job}: {e}");
                        }
                        return Ok(ExitCode::from(TASKS_FAILED));
                    }
                    Some(Halt { soon: true, .. }) => {
                        halted = true;
                        progress.suspend(|| {
                            eprintln!(
                                "bramble: --halt: {} item(s) failed; job {job} starts nothing \
                                 more, waiting for what runs",
                                printer.failed
                            );
                        });
                        if let Err(e) = client.wind_down(job).await {
                            progress.suspend(|| {
                                eprintln!("bramble: could not wind job {job} down: {e}");
                            });
                        }
                    }
                    None => {}
                }
            }
            Some(JobEvent::HostNote { message }) => {
                progress.suspend(|| eprintln!("bramble: host: {message}"));
            }
            Some(JobEvent::Reconnecting { reason }) => {
                progress.suspend(|| eprintln!("bramble: lost the host ({reason}); reconnecting"));
            }
            // A Python item's output as it is printed; the result that follows has all of it.
            Some(JobEvent::Output { .. }) => {}
            Some(JobEvent::Ended(end)) => break end,
            None => bail!("the results of job {job} ended before the job"),
        }
    };
    progress.finish_and_clear();
    printer.finish()?;
    Ok(report_end(job, end))
}

/// The exit code of a job's end, saying on stderr what went wrong.
fn report_end(job: JobId, end: JobEnd) -> ExitCode {
    match end {
        JobEnd::Finished { failed: 0 } => ExitCode::SUCCESS,
        JobEnd::Finished { failed } => {
            eprintln!("bramble: {failed} item(s) of job {job} failed");
            ExitCode::from(TASKS_FAILED)
        }
        JobEnd::Cancelled => {
            eprintln!("bramble: job {job} was cancelled");
            ExitCode::from(TASKS_FAILED)
        }
    }
}

fn exit_code(failed: u64) -> ExitCode {
    if failed > 0 {
        ExitCode::from(TASKS_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// A done/total bar with rate and ETA on stderr, only when stderr is a terminal.
fn progress_bar(total: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {rate} ETA {eta}") {
        // indicatif's own {per_sec} prints "2.0318/s".
        let rate = |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = match state.per_sec() {
                r if r >= 10.0 => write!(w, "{r:.0}/s"),
                r => write!(w, "{r:.1}/s"),
            };
        };
        bar.set_style(style.with_key("rate", rate));
    }
    bar
}

/// `wait JOB [--timeout S]`.
pub(super) async fn wait(
    client: Client,
    job: String,
    timeout: Option<f64>,
) -> anyhow::Result<ExitCode> {
    let job = resolve_job(&client, &job).await?.0;
    let limit = match timeout_ms(timeout)? {
        0 => Duration::MAX,
        ms => Duration::from_millis(ms),
    };
    match tokio::time::timeout(limit, client.wait(JobId(job))).await {
        Err(_) => {
            eprintln!(
                "bramble: job {job} still running after {}s",
                limit.as_secs_f64()
            );
            Ok(ExitCode::from(TIMED_OUT))
        }
        Ok(end) => Ok(report_end(JobId(job), end?)),
    }
}

/// `cancel JOB`.
pub(super) async fn cancel(client: Client, job: String) -> anyhow::Result<ExitCode> {
    let job = resolve_job(&client, &job).await?.0;
    client.cancel(JobId(job)).await?;
    println!("cancelled job {job}");
    Ok(ExitCode::SUCCESS)
}
