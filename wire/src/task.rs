//! What a task is on the wire: the work to run, its items, and what came back.
//!
//! Append only (see the crate docs). [`Work`] is an enum so that a new kind of task is a new
//! variant, not a new protocol: commands, and Python functions called in warm engines.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{Attempt, JobId, TaskId};
use crate::serde_bounded::{bytes, opt_bytes, seq};

/// The payload of a Python job: an envelope of cloudpickle protocol 5 frames (see the
/// `bramble` Python package), opaque to everything but the client and the engines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonWork {
    /// The function, its arguments and keyword arguments. The host sends it with a job's
    /// first task to each worker connection and `None` afterwards; workers keep it per job.
    #[serde(with = "opt_bytes")]
    pub function: Option<Vec<u8>>,
    /// The client's Python `(major, minor)`: cloudpickle needs the same on both sides.
    pub python: (u8, u8),
    /// Interrupt an item after this many milliseconds; 0 means no limit.
    pub timeout_ms: u64,
    /// What to call it in listings (`apply f`, `map f`, `execute`).
    pub name: String,
}

/// A command template, run as argv (never through a shell unless `shell` is set).
///
/// In `argv`, `{}` is replaced by the item and `{#}` by its 0-based index; when no argument
/// contains `{}`, the item is written to the process's stdin instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Program and arguments. Never empty (checked by the host on submit).
    #[serde(with = "seq")]
    pub argv: Vec<String>,
    /// Join `argv` with spaces and run it with `sh -c`; `{}` is shell-quoted.
    pub shell: bool,
    /// Kill the task's process group after this many milliseconds; 0 means no limit.
    pub timeout_ms: u64,
}

/// A file sent with a job (`--stage`), by content: the host keeps it once, and each worker
/// fetches it once (`ToHost::FetchBlob`), keeps it in its cache and places it in the working
/// directory of every item of the job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedFile {
    /// Where, relative to the working directory: `/`-separated words, none empty, `.` or
    /// `..` (checked by the host on submit, and by the worker again).
    pub path: String,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    pub size: u64,
    /// Placed executable (a script).
    pub executable: bool,
}

impl StagedFile {
    /// The content's SHA-256 in lowercase hex: its name in the host's and workers' caches.
    pub fn hex(&self) -> String {
        hex(&self.sha256)
    }
}

/// Bytes in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A command run with files (`--stage`, `--fetch`). Each item runs in a fresh working
/// directory that holds the staged files (a co-process: one directory per slot and job), and
/// afterwards the files there matching `fetch` come back with its result, in
/// [`ItemOutput::value`] (see [`FetchedFile`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedCommand {
    pub command: Command,
    pub persistent: bool,
    #[serde(with = "seq")]
    pub files: Vec<StagedFile>,
    /// Patterns relative to the working directory: `*` and `?` within a name, `**` any number
    /// of directories.
    #[serde(with = "seq")]
    pub fetch: Vec<String>,
}

/// A file an item left in its working directory that matched [`StagedCommand::fetch`]. A
/// staged item's `ItemOutput::value` is its fetched files, a postcard `Vec<FetchedFile>`
/// ([`FetchedFile::encode_all`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedFile {
    pub path: String,
    #[serde(with = "bytes")]
    pub data: Vec<u8>,
}

impl FetchedFile {
    /// `files` as an item's value.
    pub fn encode_all(files: &[Self]) -> Vec<u8> {
        if files.is_empty() {
            return Vec::new();
        }
        postcard::to_extend(files, Vec::new()).unwrap_or_default()
    }

    /// An item's value back as files (empty: none).
    pub fn decode_all(value: &[u8]) -> Result<Vec<Self>, crate::DecodeError> {
        if value.is_empty() {
            return Ok(Vec::new());
        }
        crate::codec::decode_body(value)
    }
}

/// Whether `path` is a plain relative path (`a/b.txt`): `/`-separated words, none empty, `.`
/// or `..`, no NUL. Staged and fetched files must be.
pub fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && path
            .split('/')
            .all(|w| !w.is_empty() && w != "." && w != "..")
}

/// What a job's tasks run. Append only: new kinds of work are new variants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Work {
    /// A command per item. With `persistent`, each worker slot starts the command once per job
    /// and feeds it one item per line on stdin, reading one line of stdout per item (a
    /// co-process).
    Command { command: Command, persistent: bool },
    /// A Python function called once per item in a warm engine, with the item's arguments
    /// appended to its own; the return value comes back in `ItemOutput::value`.
    Python(PythonWork),
    /// A command with files sent along and files brought back. Only to workers with
    /// [`crate::worker::CAP_STAGE`].
    StagedCommand(StagedCommand),
}

/// `word` quoted for POSIX sh, as it would be typed: plain words (letters, digits and
/// `-_./:,+=@%{}`) stay as they are, anything else goes in single quotes (a `'` inside becomes
/// `'\''`). The worker quotes items with it (`--shell`) and listings show commands with it.
pub fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:,+=@%{}".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

impl Work {
    /// The command line, for listings: each word shell-quoted where it needs it, so that
    /// `sh -c 'echo a b'` reads back as typed.
    pub fn describe(&self) -> String {
        let quoted = |command: &Command| {
            command
                .argv
                .iter()
                .map(|w| shell_quote(w))
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self {
            Self::Command { command, .. } => quoted(command),
            Self::Python(p) => format!("python: {}", p.name),
            Self::StagedCommand(s) => {
                let files = s.files.len();
                let plural = if files == 1 { "" } else { "s" };
                format!("{} [{files} staged file{plural}]", quoted(&s.command))
            }
        }
    }

    /// The command and whether it is a co-process, for command work (staged or not).
    pub fn command(&self) -> Option<(&Command, bool)> {
        match self {
            Self::Command {
                command,
                persistent,
            } => Some((command, *persistent)),
            Self::StagedCommand(s) => Some((&s.command, s.persistent)),
            Self::Python(_) => None,
        }
    }

    /// The command's argv, for command work (the host fills templates into it for scatter).
    pub fn argv_mut(&mut self) -> Option<&mut Vec<String>> {
        match self {
            Self::Command { command, .. } => Some(&mut command.argv),
            Self::StagedCommand(s) => Some(&mut s.command.argv),
            Self::Python(_) => None,
        }
    }

    /// Workers keep state per job for this work (co-processes), so the host tells them when
    /// the job ends (`ToWorker::JobEnded`).
    pub fn keeps_job_state(&self) -> bool {
        match self {
            Self::Command { persistent, .. } => *persistent,
            Self::StagedCommand(s) => s.persistent,
            Self::Python(_) => true,
        }
    }

    /// The per-item time limit in milliseconds (0: none).
    pub fn timeout_ms(&self) -> u64 {
        match self {
            Self::Command { command, .. } => command.timeout_ms,
            Self::StagedCommand(s) => s.command.timeout_ms,
            Self::Python(p) => p.timeout_ms,
        }
    }
}

/// One input of a task. A task carries one item per run of its work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Position of the item in its job (`{#}`).
    pub index: u64,
    /// The item (`{}` or stdin for a command, which gets it as UTF-8 text); `None` for
    /// `apply`, which has no input.
    #[serde(with = "opt_bytes")]
    pub value: Option<Vec<u8>>,
}

/// Host → worker: run these items one after the other in one slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task: TaskId,
    pub attempt: Attempt,
    /// The job the task belongs to (co-processes and engines' per-job state are kept by it).
    pub job: JobId,
    pub work: Work,
    #[serde(with = "seq")]
    pub items: Vec<Item>,
    /// The engine (slot) a Python task must run in (DirectView work, pinned to its engine and
    /// run there in the order sent); `None`: any free one.
    pub engine: Option<u16>,
}

/// How one item ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Exited normally with this status code.
    Exited(i32),
    /// Killed by this signal number.
    Signaled(i32),
    /// Could not be started (program missing, not allowed, bad template…).
    StartFailed(String),
    /// Ran past its timeout; its process group was killed.
    TimedOut,
    /// Cancelled before or while running.
    Cancelled,
    /// The worker running it was lost and no retry was left (set by the host).
    Lost,
    /// A Python item returned; what it returned is in `ItemOutput::value`.
    Returned,
    /// A Python item raised; `ItemOutput::value` holds the error (type, message, traceback).
    Raised,
    /// The engine died while running it (exit status and the tail of its stderr); it was
    /// restarted with an empty namespace.
    EngineDied(String),
}

impl Outcome {
    /// True for a clean exit with status 0 and for a Python item that returned.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Exited(0) | Self::Returned)
    }

    /// One word for listings, JSON and the job store: `exited`, `signaled`, `start-failed`,
    /// `timed-out`, `cancelled`, `lost`, `returned`, `raised`, `engine-died`.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Exited(_) => "exited",
            Self::Signaled(_) => "signaled",
            Self::StartFailed(_) => "start-failed",
            Self::TimedOut => "timed-out",
            Self::Cancelled => "cancelled",
            Self::Lost => "lost",
            Self::Returned => "returned",
            Self::Raised => "raised",
            Self::EngineDied(_) => "engine-died",
        }
    }

    /// The message of an outcome that has one (why it could not start, how an engine died).
    pub fn message(&self) -> Option<&str> {
        match self {
            Self::StartFailed(m) | Self::EngineDied(m) => Some(m),
            _ => None,
        }
    }

    /// The exit status or signal number, if the outcome has one.
    pub fn code(&self) -> Option<i32> {
        match self {
            Self::Exited(c) | Self::Signaled(c) => Some(*c),
            _ => None,
        }
    }

    /// Rebuilds an outcome from [`Outcome::word`], its code and its message.
    pub fn from_parts(word: &str, code: Option<i32>, message: Option<String>) -> Self {
        match word {
            "exited" => Self::Exited(code.unwrap_or(-1)),
            "signaled" => Self::Signaled(code.unwrap_or(0)),
            "start-failed" => Self::StartFailed(message.unwrap_or_default()),
            "timed-out" => Self::TimedOut,
            "cancelled" => Self::Cancelled,
            "returned" => Self::Returned,
            "raised" => Self::Raised,
            "engine-died" => Self::EngineDied(message.unwrap_or_default()),
            _ => Self::Lost,
        }
    }
}

/// In words, for messages: `exit status 3`, `could not start: …`.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(c) => write!(f, "exit status {c}"),
            Self::Signaled(s) => write!(f, "killed by signal {s}"),
            Self::StartFailed(why) => write!(f, "could not start: {why}"),
            Self::TimedOut => f.write_str("timed out (process group killed)"),
            Self::Cancelled => f.write_str("cancelled"),
            Self::Lost => f.write_str("lost with its worker"),
            Self::Returned => f.write_str("returned"),
            Self::Raised => f.write_str("raised an exception"),
            Self::EngineDied(why) => write!(f, "engine died: {why}"),
        }
    }
}

/// The result of one item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemOutput {
    pub index: u64,
    pub outcome: Outcome,
    #[serde(with = "bytes")]
    pub stdout: Vec<u8>,
    #[serde(with = "bytes")]
    pub stderr: Vec<u8>,
    /// Bytes of stdout + stderr dropped because of the worker's `max_output_bytes`.
    pub truncated_bytes: u64,
    /// Wall time of the item.
    pub duration_ms: u64,
    /// What the item returned, for kinds of work that return a value (empty for commands).
    #[serde(with = "bytes")]
    pub value: Vec<u8>,
}

impl ItemOutput {
    /// An item that ended with `outcome` and produced nothing.
    pub fn ended(index: u64, outcome: Outcome, duration_ms: u64) -> Self {
        Self {
            index,
            outcome,
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated_bytes: 0,
            duration_ms,
            value: Vec::new(),
        }
    }

    /// An item that failed without running, saying why on its stderr.
    pub fn failed(index: u64, outcome: Outcome, why: &str) -> Self {
        Self {
            stderr: format!("bramble: {why}\n").into_bytes(),
            ..Self::ended(index, outcome, 0)
        }
    }
}

/// Worker → host: everything a task produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task: TaskId,
    pub attempt: Attempt,
    #[serde(with = "seq")]
    pub outputs: Vec<ItemOutput>,
    /// The engine (slot) a Python task ran in.
    pub engine: Option<u16>,
}

impl TaskResult {
    /// The result of `spec` (outside an engine) with these outputs.
    pub fn of(spec: &TaskSpec, outputs: Vec<ItemOutput>) -> Self {
        Self {
            task: spec.task,
            attempt: spec.attempt,
            outputs,
            engine: None,
        }
    }

    /// Every item it reports exited 0.
    pub fn succeeded(&self) -> bool {
        self.outputs.iter().all(|o| o.outcome.is_success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_described_as_they_would_be_typed() {
        let work = |argv: &[&str]| Work::Command {
            command: Command {
                argv: argv.iter().map(|a| (*a).to_owned()).collect(),
                shell: false,
                timeout_ms: 0,
            },
            persistent: false,
        };
        assert_eq!(work(&["echo", "{}"]).describe(), "echo {}");
        assert_eq!(
            work(&["sh", "-c", "echo a b; it's"]).describe(),
            r"sh -c 'echo a b; it'\''s'"
        );
        assert_eq!(work(&["printf", ""]).describe(), "printf ''");
        // A word that starts with `#` would start a comment.
        assert_eq!(work(&["echo", "#x"]).describe(), "echo '#x'");
    }

    #[test]
    fn outcome_words_round_trip() {
        for o in [
            Outcome::Exited(3),
            Outcome::Signaled(9),
            Outcome::StartFailed("no such file".into()),
            Outcome::TimedOut,
            Outcome::Cancelled,
            Outcome::Lost,
            Outcome::Returned,
            Outcome::Raised,
            Outcome::EngineDied("exit status -11".into()),
        ] {
            let message = o.message().map(str::to_owned);
            assert_eq!(Outcome::from_parts(o.word(), o.code(), message), o);
        }
        assert_eq!(Outcome::Exited(3).to_string(), "exit status 3");
        assert_eq!(
            Outcome::StartFailed("x: not found".into()).to_string(),
            "could not start: x: not found"
        );
    }
}
