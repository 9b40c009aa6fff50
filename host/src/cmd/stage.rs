//! `--stage PATH...` and `--fetch PATTERN`: the files a job takes along (walked, hashed, put on
//! the host unless it has them already) and the files its items bring back (written under
//! `--fetch-dir`).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bramble_client::Client;
use bramble_host::blobs::{MAX_BLOB, sha256_of};
use bramble_wire::{FetchedFile, StagedFile, is_plain_relative};

/// Pieces of a staged file sent per request.
const PIECE: usize = 4 << 20;
/// Files staged with one job at most (the host's limit too).
const MAX_FILES: usize = 10_000;

/// A staged file and where it is here.
pub(super) struct Source {
    pub(super) file: StagedFile,
    pub(super) local: PathBuf,
}

/// The files of `paths`: a file as its name, a directory as its name and everything under it
/// (`.` as what is in it). Symbolic links are followed; anything but files and directories is
/// an error.
pub(super) fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<Source>> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("--stage {}: cannot read it", path.display()))?;
        let name = path.file_name().and_then(|n| n.to_str()).map(str::to_owned);
        if meta.is_dir() {
            add_dir(path, name.as_deref().unwrap_or(""), &mut out)?;
        } else {
            let name = name.with_context(|| format!("--stage {}: no file name", path.display()))?;
            add_file(path, name, &mut out)?;
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = out.iter().find(|s| !seen.insert(s.file.path.clone())) {
        bail!("--stage: {} is given twice", dup.file.path);
    }
    Ok(out)
}

fn add_dir(dir: &Path, prefix: &str, out: &mut Vec<Source>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("--stage {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let Ok(name) = e.file_name().into_string() else {
            bail!(
                "--stage {}: a file name that is not UTF-8",
                e.path().display()
            );
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = e.path();
        let meta =
            std::fs::metadata(&path).with_context(|| format!("--stage {}", path.display()))?;
        if meta.is_dir() {
            add_dir(&path, &rel, out)?;
        } else {
            add_file(&path, rel, out)?;
        }
    }
    Ok(())
}

fn add_file(path: &Path, rel: String, out: &mut Vec<Source>) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        bail!("--stage {}: not a file or directory", path.display());
    }
    if meta.len() > MAX_BLOB {
        bail!(
            "--stage {}: {} MiB; a staged file is at most {} MiB",
            path.display(),
            meta.len() >> 20,
            MAX_BLOB >> 20
        );
    }
    if !is_plain_relative(&rel) {
        bail!("--stage {}: cannot place it as {rel:?}", path.display());
    }
    if out.len() == MAX_FILES {
        bail!("--stage: more than {MAX_FILES} files");
    }
    let (sha256, size) = std::fs::File::open(path)
        .and_then(sha256_of)
        .with_context(|| format!("--stage {}", path.display()))?;
    out.push(Source {
        file: StagedFile {
            path: rel,
            sha256,
            size,
            executable: meta.permissions().mode() & 0o111 != 0,
        },
        local: path.to_owned(),
    });
    Ok(())
}

/// Puts the files the host does not have yet; returns how many bytes were sent.
pub(super) async fn upload(client: &Client, sources: &[Source]) -> anyhow::Result<u64> {
    let missing = client
        .missing_blobs(sources.iter().map(|s| s.file.sha256).collect())
        .await?;
    let mut sent = 0;
    for sha in missing {
        let Some(s) = sources.iter().find(|s| s.file.sha256 == sha) else {
            continue;
        };
        let mut f = std::fs::File::open(&s.local)
            .with_context(|| format!("--stage {}", s.local.display()))?;
        let mut offset = 0u64;
        loop {
            let mut piece = Vec::with_capacity(PIECE);
            (&mut f).take(PIECE as u64).read_to_end(&mut piece)?;
            let len = piece.len() as u64;
            client
                .put_blob(sha, offset, s.file.size, piece)
                .await
                .with_context(|| format!("--stage {}", s.local.display()))?;
            offset += len;
            if offset >= s.file.size {
                break;
            }
            if len == 0 {
                bail!("--stage {}: it shrank while being sent", s.local.display());
            }
        }
        sent += offset;
    }
    Ok(sent)
}

/// Writes an item's fetched files under `dir`; returns their paths.
pub(super) fn write_fetched(dir: &Path, value: &[u8]) -> anyhow::Result<Vec<String>> {
    let files = FetchedFile::decode_all(value).context("fetched files")?;
    let mut paths = Vec::with_capacity(files.len());
    for f in files {
        // A worker names the files; only plain relative paths land, under `dir`.
        if !is_plain_relative(&f.path) {
            bail!("a worker sent back a file named {:?}: not written", f.path);
        }
        let to = dir.join(&f.path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("--fetch-dir: {}", parent.display()))?;
        }
        std::fs::write(&to, &f.data).with_context(|| format!("--fetch: {}", to.display()))?;
        paths.push(f.path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_keep_their_name_and_files_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("a.csv"), "1,2\n").unwrap();
        std::fs::write(data.join("sub/b.csv"), "3\n").unwrap();
        let script = tmp.path().join("run.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let got = collect(&[script.clone(), data.clone()]).unwrap();
        let paths: Vec<(&str, bool)> = got
            .iter()
            .map(|s| (s.file.path.as_str(), s.file.executable))
            .collect();
        assert_eq!(
            paths,
            [
                ("run.sh", true),
                ("data/a.csv", false),
                ("data/sub/b.csv", false)
            ]
        );
        assert_eq!(got[1].file.size, 4);
        let err = collect(&[script.clone(), script])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("given twice"), "{err}");
        let err = collect(&[tmp.path().join("nope")])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot read it"), "{err}");
    }

    #[test]
    fn fetched_files_land_under_the_directory_only() {
        let tmp = tempfile::tempdir().unwrap();
        let value = FetchedFile::encode_all(&[FetchedFile {
            path: "out/a.txt".into(),
            data: b"x".to_vec(),
        }]);
        assert_eq!(write_fetched(tmp.path(), &value).unwrap(), ["out/a.txt"]);
        assert_eq!(std::fs::read(tmp.path().join("out/a.txt")).unwrap(), b"x");
        let evil = FetchedFile::encode_all(&[FetchedFile {
            path: "../escape".into(),
            data: b"x".to_vec(),
        }]);
        assert!(write_fetched(tmp.path(), &evil).is_err());
        assert!(!tmp.path().parent().unwrap().join("escape").exists());
    }
}
