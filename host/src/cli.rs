//! The command line as typed (clap derive): raw values only; `cmd/` turns them into work.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Turn a cluster of Raspberry Pis into one parallel computer.
#[derive(Debug, Parser)]
#[command(
    name = "bramble",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BRAMBLE_COMMIT"), ")"),
    propagate_version = true
)]
pub(crate) struct Cli {
    /// Profile under $BRAMBLE_HOME (default ~/.config/bramble).
    #[arg(
        long,
        global = true,
        default_value = "default",
        env = "BRAMBLE_PROFILE"
    )]
    pub(crate) profile: String,
    /// Client bundle to connect with, instead of the profile's (for a CLI on another machine).
    #[arg(long, global = true, env = "BRAMBLE_BUNDLE")]
    pub(crate) bundle: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create the profile: private CA, host certificate, host.toml, local client bundle.
    Init {
        /// UDP address the host will listen on.
        #[arg(long, default_value = "0.0.0.0:7707")]
        listen: SocketAddr,
        /// Address workers and clients dial (ip:port or name:port; repeatable).
        #[arg(long)]
        public: Vec<String>,
        /// Recreate an existing profile (every issued bundle stops working).
        #[arg(long)]
        force: bool,
    },
    /// Issue a worker bundle (kept in the profile's workers/ directory) and give the name its
    /// worker id: ids follow enrollment order and are kept. One bundle per Pi: a name enrolled
    /// already is refused unless --force or --reuse.
    Enroll {
        /// The worker's name (its hostname, say `pi-01`): shown in status, usable in --targets.
        name: String,
        /// Also write the bundle here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Issue a new bundle for a name enrolled already; the old one is refused from then on
        /// (a lost or re-imaged Pi; a revoked name is taken back).
        #[arg(long, conflicts_with = "reuse")]
        force: bool,
        /// For a name enrolled already, give the bundle it has (deploying to the same Pi
        /// again).
        #[arg(long)]
        reuse: bool,
    },
    /// Issue a client bundle for a CLI on another machine.
    ClientBundle {
        /// A name for that CLI (say `laptop`); revoke it by this name.
        name: String,
        /// Where to write it [default: ./NAME.json].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run the host scheduler (foreground).
    Serve {
        /// Listen address [default: from host.toml].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Placement policy: thermal, leastload or roundrobin [default: from host.toml].
        #[arg(long)]
        policy: Option<String>,
        /// Also serve Prometheus metrics at http://ADDR/metrics (say 127.0.0.1:9707).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<SocketAddr>,
    },
    /// A host and N local workers in one command.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Connected worker ids as a JSON array.
    Ids,
    /// One row per connected worker.
    ///
    /// Columns: ID and NAME; STATE (`up`, or `draining`: no new work); ADDRESS it connects
    /// from; SLOTS (tasks at once) and RUNNING (tasks it holds, including those sent ahead);
    /// °C, the SoC temperature; MHz, the measured ARM clock over its maximum (lower while
    /// throttled); THROTTLE, the firmware's throttle flags, now and since boot; SPEED, how
    /// fast it runs tasks now against the fastest connected worker (1.00 = the fastest; from
    /// the task times it reported, scaled by its clock, throttling and temperature trend; `-`
    /// until it has finished a task); DONE, items it finished since the host started; UPTIME
    /// of its connection. A last line tells the host's state and the job store's free space.
    Status {
        /// Refresh every second.
        #[arg(long)]
        watch: bool,
    },
    /// Run CMD once on each target; print `[stdout:ID] line` in id order.
    Apply(ApplyArgs),
    /// Load-balanced: run CMD once per input item.
    Map(MapArgs),
    /// Split the items into one contiguous chunk per target, given to CMD on stdin; print the
    /// outputs in target order.
    Scatter(ScatterArgs),
    /// Like map/apply/scatter, but print the job id at once and leave the job running.
    Submit {
        #[command(subcommand)]
        job: SubmitJob,
    },
    /// Jobs with state, progress and elapsed time.
    Jobs {
        /// Only jobs in this state.
        #[arg(long, value_enum)]
        state: Option<JobStateArg>,
    },
    /// Remove ended jobs and their results from the host's job store.
    Forget {
        /// The jobs' ids or names (`bramble jobs` lists them); a running job is refused.
        #[arg(required = true, value_name = "JOB")]
        jobs: Vec<String>,
    },
    /// Forget ended jobs by age or count, so the job store does not grow without bound.
    #[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["older_than", "keep"])))]
    Prune {
        /// Those that ended longer ago than this: `90s`, `30m`, `12h`, `7d`.
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        /// Apart from the newest N ended jobs.
        #[arg(long, value_name = "N")]
        keep: Option<u64>,
    },
    /// Block until a job has ended (exit 0 all ok, 1 failures or cancelled, 124 timeout).
    Wait {
        /// The job's id or name (`bramble jobs` lists them).
        job: String,
        /// Give up after this many seconds.
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
    },
    /// Print a job's results in input order.
    Results {
        /// The job's id or name (`bramble jobs` lists them).
        job: String,
        /// Keep printing results as they arrive until the job ends.
        #[arg(long)]
        follow: bool,
        /// Write the files its items brought back (`--fetch`) here.
        #[arg(long, value_name = "DIR")]
        fetch_dir: Option<PathBuf>,
    },
    /// Stop a job: queued tasks dropped, running ones killed.
    Cancel {
        /// The job's id or name (`bramble jobs` lists them).
        job: String,
    },
    /// Refuse a worker or client certificate name from now on; live connections are dropped.
    Revoke {
        /// The certificate name (a worker's or a client bundle's).
        name: String,
        /// Revoke even the certificate this command itself connects with.
        #[arg(long)]
        force: bool,
    },
    /// Place no new work on a worker (by name or id); its running tasks finish. Shown as
    /// `draining` in status; kept across reconnects and host restarts.
    Drain {
        /// The worker's name or id.
        worker: String,
    },
    /// Serve a live web page of the cluster: each Pi's heat, clock and throttling over the last
    /// ten minutes, its tasks, and the jobs (a client of the host: it needs only the bundle).
    Dashboard {
        /// Where to serve it; another address than loopback lets other machines see it
        /// (read-only).
        #[arg(long, default_value = "127.0.0.1:8707")]
        listen: SocketAddr,
        /// Open it in the desktop's browser.
        #[arg(long)]
        open: bool,
    },
    /// Write man pages (bramble.1, and bramble-COMMAND.1 for each command) into DIR, e.g.
    /// `bramble man ~/.local/share/man/man1`.
    Man {
        /// The directory (created if missing).
        dir: PathBuf,
    },
    /// Print a completion script for SHELL, e.g. `bramble completions bash >
    /// ~/.local/share/bash-completion/completions/bramble`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Place work on a drained worker again.
    Undrain {
        /// The worker's name or id.
        worker: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SubmitJob {
    /// Load-balanced: run CMD once per input item (as `bramble map`).
    Map(MapArgs),
    /// Run CMD once on each target (as `bramble apply`).
    Apply(ApplyArgs),
    /// One contiguous chunk of the items per target, on CMD's stdin (as `bramble scatter`).
    Scatter(ScatterArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterAction {
    /// Start the host and N workers in the foreground; Ctrl-C stops all.
    Start {
        /// Number of workers.
        #[arg(short = 'n', long = "workers", default_value_t = 4)]
        n: u16,
        /// Slots per worker.
        #[arg(long, default_value_t = 1)]
        slots: u16,
        /// Listen address when the profile is created by this command (port 0: a free one,
        /// written into the profile once the host listens).
        #[arg(long, default_value = "127.0.0.1:7707")]
        listen: SocketAddr,
        /// Placement policy [default: from host.toml].
        #[arg(long)]
        policy: Option<String>,
        /// The Python the workers' engines run [default: python3 on the PATH].
        #[arg(long)]
        python: Option<String>,
    },
}

/// A job state, as `jobs --state` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum JobStateArg {
    Running,
    Done,
    Cancelled,
}

/// Options shared by the commands that run work.
#[derive(Debug, Args)]
pub(crate) struct RunOpts {
    /// Workers to use: `all`, or ids (`0,2,5-7`), names (`pi-01`) and labels, comma-separated.
    #[arg(long)]
    pub(crate) targets: Option<String>,
    /// Run CMD through `sh -c` (items are shell-quoted).
    #[arg(long)]
    pub(crate) shell: bool,
    /// Kill a task's process group after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub(crate) timeout: Option<f64>,
    /// Re-run a failed item up to N times, on another worker when possible.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) retries: u32,
    /// Files or directories to send with the job: each item runs in a fresh directory that
    /// holds them (sent to each worker once and cached there; a directory keeps its name).
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub(crate) stage: Vec<PathBuf>,
    /// Bring back the files each item leaves in its directory that match PATTERN (`*.png`,
    /// `out/**`), into --fetch-dir; repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub(crate) fetch: Vec<String>,
    /// Name the job (unique among the host's jobs): commands that take a JOB take its name.
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Prefix each line of output with the item (its values tab-separated), GNU parallel's
    /// --tag.
    #[arg(long)]
    pub(crate) tag: bool,
    /// Write GNU parallel's job log (Seq, Host, Starttime, JobRuntime, Send, Receive, Exitval,
    /// Signal, Command) to FILE as results come.
    #[arg(long, value_name = "FILE")]
    pub(crate) joblog: Option<PathBuf>,
    /// Keep each item's stdout, stderr and seq in DIR/1/VALUE/ (DIR/1/A/2/B/ for several
    /// sources), as GNU parallel's --results.
    #[arg(long, value_name = "DIR")]
    pub(crate) results: Option<PathBuf>,
    /// Once N items have failed: `now,fail=N` cancels the job (killing what runs);
    /// `soon,fail=N` starts nothing more of it and waits for what runs.
    #[arg(long, value_name = "now|soon,fail=N")]
    pub(crate) halt: Option<String>,
    /// Where --fetch writes the files (their paths kept; a later item's file of the same name
    /// replaces an earlier one's: name outputs after the item, like `{}.out`).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub(crate) fetch_dir: PathBuf,
}

/// Where a job's items come from (or `::: a b c` after the command).
#[derive(Debug, Args)]
pub(crate) struct InputArgs {
    /// Integer items A..B-1.
    #[arg(long, value_name = "A..B")]
    pub(crate) range: Option<String>,
    /// One item per line; `-` for stdin.
    #[arg(long, value_name = "FILE")]
    pub(crate) inputs: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    #[command(flatten)]
    pub(crate) run: RunOpts,
    /// The command, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct MapArgs {
    #[command(flatten)]
    pub(crate) run: RunOpts,
    #[command(flatten)]
    pub(crate) input: InputArgs,
    /// Items sent to a worker together.
    #[arg(long, default_value_t = 1)]
    pub(crate) chunksize: u32,
    /// Print results as they complete instead of in input order.
    #[arg(long)]
    pub(crate) unordered: bool,
    /// Start CMD once per worker slot and feed it one item per line on stdin, reading one
    /// line of output per item (fast path for tiny tasks).
    #[arg(long)]
    pub(crate) persistent: bool,
    /// The command after `--`; `{}` is the item, `{#}` its index; `::: a b c` gives items.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ScatterArgs {
    #[command(flatten)]
    pub(crate) run: RunOpts,
    #[command(flatten)]
    pub(crate) input: InputArgs,
    /// The command after `--`; it reads its chunk on stdin; `::: a b c` gives items.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}

/// Commands that work on the profile, not through the host: `--bundle` (global, for the
/// commands that connect) means nothing to them and is hidden from their help.
const LOCAL_COMMANDS: [&str; 7] = [
    "init",
    "enroll",
    "client-bundle",
    "serve",
    "cluster",
    "completions",
    "man",
];

/// The command line's definition, as `parse` uses it and as completions and man pages show it.
/// A local command gets a hidden `--bundle` of its own, which the global one is not propagated
/// over.
pub(crate) fn command() -> clap::Command {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    for name in LOCAL_COMMANDS {
        cmd = cmd.mut_subcommand(name, |sub| {
            let hidden = clap::Arg::new("bundle")
                .long("bundle")
                .hide(true)
                .value_parser(clap::value_parser!(PathBuf));
            sub.arg(hidden)
        });
    }
    cmd
}

/// Parses the process's arguments (exits with clap's message and code 2 on bad ones).
pub(crate) fn parse() -> Cli {
    let matches = command().get_matches();
    <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}
