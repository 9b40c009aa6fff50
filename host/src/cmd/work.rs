//! `apply` and `map`: build the job, submit it, print its results as they arrive. Ctrl-C
//! closes the connection, which cancels the job on the host.

use std::process::ExitCode;

use anyhow::bail;
use bramble_host::client::Client;
use bramble_wire::{Command, JobKind, JobSpec, ToClient};

use super::TASKS_FAILED;
use super::inputs::{parse_range, parse_targets, read_inputs, split_command, timeout_ms};
use super::output::{Order, Printer};
use crate::cli::{ApplyArgs, MapArgs, RunOpts};

/// A job ready to submit, and how to show it.
pub(super) struct Job {
    spec: JobSpec,
    order: Order,
}

fn command(argv: Vec<String>, run: &RunOpts) -> anyhow::Result<Command> {
    Ok(Command {
        argv,
        shell: run.shell,
        timeout_ms: timeout_ms(run.timeout)?,
    })
}

pub(super) fn apply_job(args: &ApplyArgs) -> anyhow::Result<Job> {
    let (argv, items) = split_command(&args.command)?;
    if items.is_some() {
        bail!("apply takes no items (`:::`); use map");
    }
    let spec = JobSpec {
        kind: JobKind::Apply,
        command: command(argv, &args.run)?,
        items: Vec::new(),
        chunksize: 1,
        targets: parse_targets(args.run.targets.as_deref())?,
    };
    Ok(Job {
        spec,
        order: Order::ByWorker,
    })
}

pub(super) fn map_job(args: &MapArgs) -> anyhow::Result<Job> {
    let (argv, trailing) = split_command(&args.command)?;
    let sources = [
        args.range.is_some(),
        args.inputs.is_some(),
        trailing.is_some(),
    ];
    let items = match (
        sources.iter().filter(|s| **s).count(),
        &args.range,
        &args.inputs,
        trailing,
    ) {
        (0, ..) => {
            bail!("map needs items: --range A..B, --inputs FILE, or `::: a b c` after the command")
        }
        (2.., ..) => bail!("give items one way only: --range, --inputs or :::"),
        (_, Some(r), _, _) => parse_range(r)?,
        (_, _, Some(path), _) => read_inputs(path)?,
        (_, _, _, Some(items)) => items,
        _ => unreachable!("exactly one source is set"),
    };
    if args.chunksize == 0 {
        bail!("--chunksize must be at least 1");
    }
    let spec = JobSpec {
        kind: JobKind::Map,
        command: command(argv, &args.run)?,
        items,
        chunksize: args.chunksize,
        targets: parse_targets(args.run.targets.as_deref())?,
    };
    let order = if args.unordered {
        Order::Completion
    } else {
        Order::Input
    };
    Ok(Job { spec, order })
}

pub(super) async fn run(client: Client, job: Job, json: bool) -> anyhow::Result<ExitCode> {
    let result = stream_results(&client, job, json).await;
    // Closing tells the host at once; a job still running (error, Ctrl-C) is cancelled.
    client.close().await;
    result
}

async fn stream_results(client: &Client, job: Job, json: bool) -> anyhow::Result<ExitCode> {
    let items = if json {
        job.spec.items.clone()
    } else {
        Vec::new()
    };
    let mut printer = Printer::new(job.order, json, items);
    let mut replies = client.submit(job.spec).await?;
    let failed = loop {
        let msg = tokio::select! {
            msg = replies.next() => msg?,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("bramble: interrupted; cancelling the job");
                return Ok(ExitCode::from(130));
            }
        };
        match msg {
            Some(ToClient::JobAccepted { .. }) => {}
            Some(ToClient::ItemDone { worker, output, .. }) => printer.push(worker, output)?,
            Some(ToClient::JobFinished { failed, .. }) => break failed,
            Some(other) => bail!("unexpected answer from host: {other:?}"),
            None => bail!("the host ended the job without finishing it"),
        }
    };
    printer.finish()?;
    if failed > 0 {
        eprintln!("bramble: {failed} item(s) failed");
        return Ok(ExitCode::from(TASKS_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}
