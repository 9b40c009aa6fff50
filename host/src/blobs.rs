//! Staged files on the host (`<profile>/blobs/<sha256 hex>`): put by clients in pieces
//! (`PutBlob`), kept only when the content has the SHA-256 it was named by, sent to workers
//! that ask (`FetchBlob`). Content-addressed, so a file staged by many jobs is kept once.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The largest staged file.
pub const MAX_BLOB: u64 = 1 << 30;

/// The blob directory.
#[derive(Clone, Debug)]
pub struct Blobs {
    dir: PathBuf,
}

pub use bramble_wire::hex;

/// SHA-256 of what `read` gives, and how many bytes that was.
pub fn sha256_of(mut read: impl Read) -> std::io::Result<([u8; 32], u64)> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 256 << 10];
    let mut len = 0u64;
    loop {
        let n = read.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        len += n as u64;
    }
    let mut sha = [0u8; 32];
    sha.copy_from_slice(ctx.finish().as_ref());
    Ok((sha, len))
}

impl Blobs {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    /// Where the blob is kept once complete.
    pub fn path(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join(hex(sha256))
    }

    pub fn has(&self, sha256: &[u8; 32]) -> bool {
        self.path(sha256).is_file()
    }

    /// Stores a piece of a blob. Pieces come in order (`offset` is what was stored so far; 0
    /// starts over); the last one is checked against the hash and the blob kept only if it
    /// matches. Errors are one line for the client.
    pub fn put(
        &self,
        sha256: &[u8; 32],
        offset: u64,
        total: u64,
        data: &[u8],
    ) -> Result<(), String> {
        if total > MAX_BLOB {
            return Err(format!(
                "a staged file is at most {} MiB; this one is {} MiB",
                MAX_BLOB >> 20,
                total >> 20
            ));
        }
        let end = offset + data.len() as u64;
        if end > total {
            return Err(format!(
                "piece ends at {end}, past the file's {total} bytes"
            ));
        }
        if self.has(sha256) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let part = self.dir.join(format!("{}.part", hex(sha256)));
        let io = |e: std::io::Error| format!("cannot write {}: {e}", part.display());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(offset == 0)
            .open(&part)
            .map_err(io)?;
        let have = f.seek(SeekFrom::End(0)).map_err(io)?;
        if have != offset {
            return Err(format!(
                "piece at {offset} of {}, but {have} bytes are there: start over at 0",
                hex(sha256)
            ));
        }
        f.write_all(data).map_err(io)?;
        if end < total {
            return Ok(());
        }
        f.sync_all().map_err(io)?;
        drop(f);
        let (got, len) = std::fs::File::open(&part).and_then(sha256_of).map_err(io)?;
        if got != *sha256 || len != total {
            let _ = std::fs::remove_file(&part);
            return Err(format!(
                "staged file {} arrived with other content (SHA-256 {}): not kept",
                hex(sha256),
                hex(&got)
            ));
        }
        std::fs::rename(&part, self.path(sha256)).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_kept_only_whole_and_with_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(&dir.path().join("blobs"));
        let data = b"hello staged world".to_vec();
        let (sha, len) = sha256_of(&data[..]).unwrap();
        assert_eq!(len, data.len() as u64);
        assert_eq!(
            hex(&sha),
            hex(ring::digest::digest(&ring::digest::SHA256, &data).as_ref())
        );
        blobs.put(&sha, 0, len, &data[..5]).unwrap();
        assert!(!blobs.has(&sha));
        // Out of order: refused, the client starts over.
        let err = blobs.put(&sha, 9, len, &data[9..]).unwrap_err();
        assert!(err.contains("start over at 0"), "{err}");
        blobs.put(&sha, 5, len, &data[5..]).unwrap();
        assert!(blobs.has(&sha));
        assert_eq!(std::fs::read(blobs.path(&sha)).unwrap(), data);
        // Wrong content under a name: not kept.
        let mut other = sha;
        other[0] ^= 1;
        let err = blobs.put(&other, 0, len, &data).unwrap_err();
        assert!(err.contains("other content"), "{err}");
        assert!(!blobs.has(&other));
        assert!(
            blobs
                .put(&other, 0, MAX_BLOB + 1, b"")
                .unwrap_err()
                .contains("at most")
        );
    }
}
