//! The channel from the driver to one request following a job. Bounded in bytes, not in
//! messages: a client that stops reading (or reads slower than its job makes results) would
//! otherwise make the host buffer every result for it. Once more than [`LIMIT`] waits for it,
//! the driver lets it go, and the request catches up from the job store, which holds
//! everything it missed, then follows again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bramble_wire::ToClient;
use tokio::sync::mpsc;

/// Bytes of results waiting for one follower at most.
const LIMIT: usize = 8 << 20;

/// The driver's end.
#[derive(Debug)]
pub(crate) struct FollowTx {
    tx: mpsc::UnboundedSender<ToClient>,
    queued: Arc<AtomicUsize>,
}

/// The request's end.
#[derive(Debug)]
pub(crate) struct FollowRx {
    rx: mpsc::UnboundedReceiver<ToClient>,
    queued: Arc<AtomicUsize>,
}

pub(crate) fn channel() -> (FollowTx, FollowRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        FollowTx {
            tx,
            queued: queued.clone(),
        },
        FollowRx { rx, queued },
    )
}

impl FollowTx {
    /// Queues `msg`; false if the follower is gone or too far behind (drop this end then).
    pub(crate) fn send(&self, msg: ToClient) -> bool {
        let n = weight(&msg);
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > LIMIT {
            return false;
        }
        self.tx.send(msg).is_ok()
    }
}

impl FollowRx {
    /// The next message; `None` once the driver let go (the job ended without telling this
    /// follower, it fell behind, or the host is stopping).
    pub(crate) async fn recv(&mut self) -> Option<ToClient> {
        let msg = self.rx.recv().await?;
        self.queued.fetch_sub(weight(&msg), Ordering::Relaxed);
        Some(msg)
    }
}

/// About what a message holds in memory.
fn weight(msg: &ToClient) -> usize {
    64 + match msg {
        ToClient::ItemDone { output, .. } => {
            output.stdout.len() + output.stderr.len() + output.value.len()
        }
        ToClient::Output { data, .. } => data.len(),
        ToClient::HostNote { message } => message.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use bramble_wire::{ItemOutput, JobId, Outcome, WorkerId};

    use super::*;

    fn item(index: u64, bytes: usize) -> ToClient {
        let mut output = ItemOutput::ended(index, Outcome::Exited(0), 1);
        output.stdout = vec![b'x'; bytes];
        ToClient::ItemDone {
            job: JobId(1),
            seq: index + 1,
            worker: WorkerId(0),
            engine: None,
            output,
        }
    }

    #[tokio::test]
    async fn a_follower_that_does_not_read_is_let_go_at_the_limit_and_reading_makes_room() {
        let (tx, mut rx) = channel();
        let mut sent = 0;
        while tx.send(item(sent, 1 << 20)) {
            sent += 1;
        }
        assert_eq!(sent, 7, "7 MiB and change fit, the 8th MiB does not");
        let (tx, mut rx2) = channel();
        for i in 0..7 {
            assert!(tx.send(item(i, 1 << 20)));
        }
        assert!(rx2.recv().await.is_some());
        assert!(
            tx.send(item(7, 1 << 20)),
            "one read makes room for one more"
        );
        drop(tx);
        let mut left = 0;
        while rx2.recv().await.is_some() {
            left += 1;
        }
        assert_eq!(left, 7);
        assert!(
            rx.recv().await.is_some(),
            "what was queued is still delivered"
        );
    }
}
