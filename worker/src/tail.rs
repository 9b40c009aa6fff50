//! The last bytes a long-lived process (a co-process, a Python engine) wrote to its stderr,
//! kept while it runs so that when it dies the item it failed can say why.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes kept.
const KEEP: usize = 4096;

/// See the module docs.
pub(crate) struct StderrTail {
    tail: Arc<Mutex<Vec<u8>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl StderrTail {
    /// Starts reading `stderr` in the background.
    pub(crate) fn follow(mut stderr: impl AsyncRead + Unpin + Send + 'static) -> Self {
        let tail = Arc::new(Mutex::new(Vec::new()));
        let kept = tail.clone();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                if let Ok(mut t) = kept.lock() {
                    t.extend_from_slice(&buf[..n]);
                    let excess = t.len().saturating_sub(KEEP);
                    t.drain(..excess);
                }
            }
        });
        Self {
            tail,
            reader: Some(reader),
        }
    }

    /// Everything kept, once the process is gone (waits a moment for its last words).
    pub(crate) async fn finish(&mut self) -> Vec<u8> {
        if let Some(reader) = self.reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
        }
        self.tail.lock().map(|t| t.clone()).unwrap_or_default()
    }
}
