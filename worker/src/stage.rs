//! Staged files (`bramble map --stage PATH`): a content-addressed cache (`<cache>/blobs/<sha256>`)
//! filled from the host on demand, each file once per worker however many tasks use it; a fresh
//! working directory per item made from it (per job and worker for a co-process); and the
//! files an item leaves there that match `--fetch` patterns, sent back in its result.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bramble_wire::worker::BLOB_MISSING;
use bramble_wire::{
    FetchedFile, ItemOutput, JobId, Outcome, StagedCommand, StagedFile, TaskResult, TaskSpec,
    is_plain_relative,
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::coproc;
use crate::exec;
use crate::limits::ExecLimits;

/// Bytes of fetched files one task brings back at most (a result is one frame).
pub(crate) const FETCH_BUDGET: usize = 8 << 20;
/// Files below this size are copied into an item's directory; larger ones are hard-linked to
/// the cache (read-only).
const COPY_BELOW: u64 = 64 << 10;

/// Where a wanted file stands: `None` while it is on its way.
type Arrival = watch::Sender<Option<Result<(), String>>>;

/// The worker's staged files. Cloned freely: one cache per worker process.
#[derive(Clone)]
pub(crate) struct Stage {
    inner: Arc<Inner>,
}

struct Inner {
    blobs: PathBuf,
    runs: PathBuf,
    max_bytes: u64,
    /// Files asked of the host and not yet arrived.
    waiting: Mutex<HashMap<[u8; 32], Arrival>>,
    /// To the connection: ask the host for this file.
    ask: mpsc::UnboundedSender<[u8; 32]>,
    next_dir: AtomicU64,
}

impl Stage {
    /// A cache in `dir` of at most `max_bytes`; the receiver yields the files to ask the host
    /// for.
    pub(crate) fn new(dir: &Path, max_bytes: u64) -> (Self, mpsc::UnboundedReceiver<[u8; 32]>) {
        let (ask, asks) = mpsc::unbounded_channel();
        // Workers on one machine may share a cache: each makes its directories under its own
        // process id, and those of processes gone are nobody's now.
        let all_runs = dir.join("run");
        if let Ok(entries) = std::fs::read_dir(&all_runs) {
            for e in entries.filter_map(Result::ok) {
                let pid = e.file_name().to_string_lossy().parse::<u32>().ok();
                if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let runs = all_runs.join(std::process::id().to_string());
        let stage = Self {
            inner: Arc::new(Inner {
                blobs: dir.join("blobs"),
                runs,
                max_bytes,
                waiting: Mutex::default(),
                ask,
                next_dir: AtomicU64::new(0),
            }),
        };
        (stage, asks)
    }

    fn cached(&self, f: &StagedFile) -> PathBuf {
        self.inner.blobs.join(f.hex())
    }

    /// Files asked of the host and not arrived: asked again after a reconnect.
    pub(crate) fn wanted(&self) -> Vec<[u8; 32]> {
        self.inner
            .waiting
            .lock()
            .map(|w| w.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Waits until every file is in the cache, asking the host for the missing ones (each
    /// once, however many tasks wait for it). `Err`: why the job's items cannot run here.
    async fn ensure(
        &self,
        files: &[StagedFile],
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let mut arrivals = Vec::new();
        for f in files {
            let path = self.cached(f);
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == f.size) {
                touch(&path); // most recently used: evicted last
                continue;
            }
            let mut waiting = self.inner.waiting.lock().map_err(|_| "stage poisoned")?;
            let rx = match waiting.get(&f.sha256) {
                Some(tx) => tx.subscribe(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    waiting.insert(f.sha256, tx);
                    debug!("asking the host for staged file {} ({})", f.path, f.hex());
                    let _ = self.inner.ask.send(f.sha256);
                    rx
                }
            };
            arrivals.push((f, rx));
        }
        for (f, mut rx) in arrivals {
            tokio::select! {
                arrived = rx.wait_for(Option::is_some) => match arrived.as_deref() {
                    Ok(Some(Err(why))) => return Err(format!("staged file {}: {why}", f.path)),
                    Ok(_) => {}
                    Err(_) => return Err("worker shutting down".into()),
                },
                _ = cancel.wait_for(|c| *c) => return Err("cancelled".into()),
            }
        }
        Ok(())
    }

    /// Reads one staged file the host sent (hash, size, content) into the cache and tells
    /// whoever waits for it. A stream cut short leaves it wanted: it is asked again after the
    /// reconnect.
    pub(crate) async fn receive(self, mut stream: quinn::RecvStream) {
        let mut head = [0u8; 40];
        if let Err(e) = stream.read_exact(&mut head).await {
            return warn!("a staged file's stream ended early: {e}");
        }
        let mut sha = [0u8; 32];
        sha.copy_from_slice(&head[..32]);
        let size = u64::from_le_bytes(head[32..].try_into().unwrap_or([0; 8]));
        let outcome = if size == BLOB_MISSING {
            Err("the host does not have it".to_owned())
        } else {
            match self.write_blob(&sha, size, &mut stream).await {
                Ok(outcome) => outcome,
                Err(e) => return warn!("receiving staged file {}: {e}", bramble_wire::hex(&sha)),
            }
        };
        if outcome.is_ok() {
            self.evict();
        }
        let tx = self
            .inner
            .waiting
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&sha));
        if let Some(tx) = tx {
            let _ = tx.send(Some(outcome));
        }
    }

    /// Streams a file into the cache. `Ok(Err)`: it arrived with other content; `Err`: the
    /// stream or the disk failed.
    async fn write_blob(
        &self,
        sha: &[u8; 32],
        size: u64,
        stream: &mut quinn::RecvStream,
    ) -> std::io::Result<Result<(), String>> {
        let hex = bramble_wire::hex(sha);
        let done = self.inner.blobs.join(&hex);
        std::fs::create_dir_all(&self.inner.blobs)?;
        let n = self.inner.next_dir.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .inner
            .blobs
            .join(format!(".{hex}.{}.{n}.tmp", std::process::id()));
        let mut file = tokio::fs::File::create(&tmp).await?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0u64;
        let written = async {
            loop {
                let n = stream.read(&mut buf).await?.unwrap_or(0);
                if n == 0 {
                    break;
                }
                ctx.update(&buf[..n]);
                got += n as u64;
                tokio::io::AsyncWriteExt::write_all(&mut file, &buf[..n]).await?;
            }
            tokio::io::AsyncWriteExt::flush(&mut file).await
        }
        .await;
        drop(file);
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if ctx.finish().as_ref() != sha || got != size {
            let _ = std::fs::remove_file(&tmp);
            return Ok(Err(format!(
                "arrived with other content ({got} bytes): not used"
            )));
        }
        read_only(&tmp, false)?;
        std::fs::rename(&tmp, &done)?;
        Ok(Ok(()))
    }

    /// Removes the least recently used files while the cache is over its size.
    fn evict(&self) {
        let Ok(entries) = std::fs::read_dir(&self.inner.blobs) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.inner.max_bytes {
                break;
            }
            debug!("staged file cache full: removing {}", path.display());
            let _ = std::fs::remove_file(&path);
            total -= len;
        }
    }

    /// A fresh directory holding `files` (from the cache: small ones copied, large ones
    /// hard-linked read-only).
    fn make_dir(&self, name: &str, files: &[StagedFile]) -> Result<PathBuf, String> {
        let n = self.inner.next_dir.fetch_add(1, Ordering::Relaxed);
        let dir = self.inner.runs.join(format!("{name}.{n}"));
        let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        for f in files {
            if !is_plain_relative(&f.path) {
                return Err(format!(
                    "staged path {:?} is not a plain relative path",
                    f.path
                ));
            }
            let to = dir.join(&f.path);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            }
            let from = self.cached(f);
            let linked =
                f.size >= COPY_BELOW && !f.executable && std::fs::hard_link(&from, &to).is_ok();
            if !linked {
                std::fs::copy(&from, &to).map_err(|e| io(&from, e))?;
                read_only(&to, f.executable).map_err(|e| io(&to, e))?;
            }
        }
        Ok(dir)
    }
    /// The directory a job's co-processes run in on this worker (made once).
    fn job_dir(&self, job: JobId, files: &[StagedFile]) -> Result<PathBuf, String> {
        let dir = self.inner.runs.join(format!("job-{job}"));
        if dir.is_dir() {
            return Ok(dir);
        }
        let made = self.make_dir(&format!("job-{job}.new"), files)?;
        match std::fs::rename(&made, &dir) {
            Ok(()) => Ok(dir),
            // Another slot made it first.
            Err(_) if dir.is_dir() => {
                let _ = std::fs::remove_dir_all(&made);
                Ok(dir)
            }
            Err(e) => Err(format!("{}: {e}", dir.display())),
        }
    }

    /// The job ended: its co-processes' directory goes.
    pub(crate) fn end_job(&self, job: JobId) {
        let dir = self.inner.runs.join(format!("job-{job}"));
        if dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            warn!("cannot remove {}: {e}", dir.display());
        }
    }
}

/// Runs a staged command's task: the files first (fetched if need be), then every item in a
/// directory of its own (a co-process: in its job's directory), bringing back what matches
/// `fetch`.
pub(crate) async fn run_task(
    spec: TaskSpec,
    staged: &StagedCommand,
    limits: &ExecLimits,
    stage: &Stage,
    pool: &coproc::Pool,
    mut cancel: watch::Receiver<bool>,
) -> TaskResult {
    if let Err(why) = stage.ensure(&staged.files, &mut cancel).await {
        let outcome = if *cancel.borrow() {
            Outcome::Cancelled
        } else {
            Outcome::StartFailed(why)
        };
        return every_item(spec, &outcome);
    }
    if staged.persistent {
        return match stage.job_dir(spec.job, &staged.files) {
            Ok(dir) => {
                let limits = ExecLimits {
                    work_dir: Some(dir),
                    ..limits.clone()
                };
                coproc::run_task(spec, &staged.command, &limits, pool, cancel).await
            }
            Err(why) => {
                let why = format!("cannot prepare the job's directory: {why}");
                every_item(spec, &Outcome::StartFailed(why))
            }
        };
    }
    let mut outputs = Vec::with_capacity(spec.items.len());
    let mut budget = FETCH_BUDGET;
    for item in &spec.items {
        if *cancel.borrow() {
            outputs.push(ItemOutput::ended(item.index, Outcome::Cancelled, 0));
            continue;
        }
        let name = format!("{}-{}-{}", spec.task, spec.attempt, item.index);
        let dir = match stage.make_dir(&name, &staged.files) {
            Ok(dir) => dir,
            Err(why) => {
                let why = format!("cannot prepare the item's directory: {why}");
                outputs.push(ItemOutput::ended(item.index, Outcome::StartFailed(why), 0));
                continue;
            }
        };
        let item_limits = ExecLimits {
            work_dir: Some(dir.clone()),
            ..limits.clone()
        };
        let mut output = exec::run_item(&staged.command, item, &item_limits, &mut cancel).await;
        if !staged.fetch.is_empty() {
            let (files, notes) = collect(&dir, staged, &mut budget);
            output.value = FetchedFile::encode_all(&files);
            output.stderr.extend_from_slice(notes.as_bytes());
        }
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            warn!("cannot remove {}: {e}", dir.display());
        }
        outputs.push(output);
    }
    TaskResult::of(&spec, outputs)
}

/// A task whose every item ended with `outcome` without running.
fn every_item(spec: TaskSpec, outcome: &Outcome) -> TaskResult {
    let outputs = spec
        .items
        .iter()
        .map(|i| ItemOutput::ended(i.index, outcome.clone(), 0))
        .collect();
    TaskResult::of(&spec, outputs)
}

/// The files of an item's directory that match a fetch pattern and were not staged, within
/// what is left of the task's budget; notes for its stderr about what did not fit.
fn collect(dir: &Path, staged: &StagedCommand, budget: &mut usize) -> (Vec<FetchedFile>, String) {
    let mut files = Vec::new();
    let mut notes = String::new();
    let mut found = Vec::new();
    walk(dir, "", &mut found);
    found.sort();
    for (rel, path) in found {
        if !staged.fetch.iter().any(|p| glob_match(p, &rel))
            || staged.files.iter().any(|f| f.path == rel)
        {
            continue;
        }
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        if len > *budget as u64 {
            notes.push_str(&format!(
                "bramble: --fetch: {rel} ({len} bytes) not brought back: a task brings back at \
                 most {} MiB\n",
                FETCH_BUDGET >> 20
            ));
            continue;
        }
        match std::fs::read(&path) {
            Ok(data) => {
                *budget -= data.len();
                files.push(FetchedFile { path: rel, data });
            }
            Err(e) => notes.push_str(&format!("bramble: --fetch: {rel}: {e}\n")),
        }
    }
    (files, notes)
}

/// Regular files under `dir`, with their `/`-separated paths relative to the start.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&e.path(), &rel, out),
            Ok(t) if t.is_file() => out.push((rel, e.path())),
            _ => {}
        }
    }
}

/// Whether `path` matches `pattern`: `/`-separated; `**` is any number of directories, `*`
/// any run of characters within a name, `?` one character.
pub(crate) fn glob_match(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    match_parts(&p, &s)
}

fn match_parts(p: &[&str], s: &[&str]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((&"**", rest)) => (0..=s.len()).any(|skip| match_parts(rest, &s[skip..])),
        Some((first, rest)) => s.split_first().is_some_and(|(name, more)| {
            match_name(first.as_bytes(), name.as_bytes()) && match_parts(rest, more)
        }),
    }
}

fn match_name(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|skip| match_name(rest, &s[skip..])),
        Some((b'?', rest)) => !s.is_empty() && match_name(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && match_name(rest, &s[1..]),
    }
}

/// Sets a file read-only (0444), or read-only and executable (0555).
fn read_only(path: &Path, executable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o555 } else { 0o444 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Marks a cached file as just used (eviction takes the oldest first).
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.out", "a.out"));
        assert!(!glob_match("*.out", "d/a.out"));
        assert!(glob_match("**/*.out", "d/e/a.out"));
        assert!(glob_match("**/*.out", "a.out"));
        assert!(glob_match("out/*", "out/x"));
        assert!(!glob_match("out/*", "out"));
        assert!(glob_match("r?sult-*.png", "result-3.png"));
        assert!(!glob_match("r?sult-*.png", "result-3.jpg"));
        assert!(glob_match("**", "any/thing"));
    }

    fn staged(files: &[(&str, &[u8], bool)], dir: &Path) -> (Stage, Vec<StagedFile>) {
        let (stage, _asks) = Stage::new(dir, 1 << 30);
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        let files = files
            .iter()
            .map(|(path, data, executable)| {
                let mut sha = [0u8; 32];
                sha.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
                let f = StagedFile {
                    path: (*path).into(),
                    sha256: sha,
                    size: data.len() as u64,
                    executable: *executable,
                };
                std::fs::write(stage.cached(&f), data).unwrap();
                f
            })
            .collect();
        (stage, files)
    }

    #[test]
    fn item_directories_hold_the_files_and_fetch_what_matches() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let big = vec![7u8; COPY_BELOW as usize];
        let (stage, files) = staged(
            &[
                ("run.sh", b"#!/bin/sh\necho hi\n", true),
                ("data/big.bin", &big, false),
            ],
            tmp.path(),
        );
        let dir = stage.make_dir("t", &files).unwrap();
        assert_eq!(
            std::fs::read(dir.join("run.sh")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        let mode = std::fs::metadata(dir.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o555);
        assert_eq!(std::fs::read(dir.join("data/big.bin")).unwrap(), big);
        std::fs::write(dir.join("a.out"), b"result").unwrap();
        std::fs::create_dir(dir.join("plots")).unwrap();
        std::fs::write(dir.join("plots/p.out"), vec![1u8; 100]).unwrap();
        let cmd = StagedCommand {
            command: bramble_wire::Command {
                argv: vec!["true".into()],
                shell: false,
                timeout_ms: 0,
            },
            persistent: false,
            files: files.clone(),
            fetch: vec!["**/*.out".into(), "data/*".into()],
        };
        let mut budget = 50;
        let (got, notes) = collect(&dir, &cmd, &mut budget);
        // Staged files are not brought back; over the budget is said, not sent.
        assert_eq!(
            got,
            [FetchedFile {
                path: "a.out".into(),
                data: b"result".to_vec()
            }]
        );
        assert!(
            notes.contains("plots/p.out (100 bytes) not brought back"),
            "{notes}"
        );
        assert_eq!(budget, 44);
    }
}
