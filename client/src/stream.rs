//! [`JobStream`]: following one job over the network. The ordering and deduplication are
//! [`Follow`]'s; this shell opens the results request, feeds the answers in, and after a lost
//! connection redials and asks again from the cursor.

use bramble_wire::{ClientRequest, JobId};

use crate::client::{Client, Replies};
use crate::{ClientError, Follow, JobEvent, Order};

/// The results of one job, as a stream of [`JobEvent`]s.
pub struct JobStream {
    client: Client,
    job: JobId,
    follow: bool,
    core: Follow,
    open: Option<(Replies, quinn::Connection)>,
}

impl JobStream {
    pub(crate) fn new(client: Client, job: JobId, order: Order, follow: bool) -> Self {
        Self {
            client,
            job,
            follow,
            core: Follow::new(order),
            open: None,
        }
    }

    /// Follows a job whose `SubmitAndFollow` request (`replies` on `conn`) was answered with
    /// `accepted`.
    pub(crate) fn accepted(
        client: Client,
        order: Order,
        accepted: bramble_wire::ToClient,
        replies: Replies,
        conn: quinn::Connection,
    ) -> Result<Self, ClientError> {
        let bramble_wire::ToClient::JobAccepted { job, .. } = accepted else {
            return Err(ClientError::Protocol(format!(
                "expected JobAccepted, got {accepted:?}"
            )));
        };
        let mut stream = Self::new(client, job, order, true);
        stream
            .core
            .handle(accepted)
            .map_err(ClientError::Protocol)?;
        stream.open = Some((replies, conn));
        Ok(stream)
    }

    pub fn job(&self) -> JobId {
        self.job
    }

    /// The job's number of results, once the host said it.
    pub fn total(&self) -> Option<u64> {
        self.core.total()
    }

    /// The next event; `None` after the job's end (or, not following, after the stored
    /// results of a job still running).
    pub async fn next(&mut self) -> Result<Option<JobEvent>, ClientError> {
        loop {
            if let Some(event) = self.core.poll_event() {
                return Ok(Some(event));
            }
            if self.core.is_done() {
                return Ok(None);
            }
            let lost = match self.read().await {
                Ok(()) => continue,
                Err((e, conn)) if self.follow && e.is_connection() => (e, conn),
                Err((e, _)) => return Err(e),
            };
            let (why, conn) = lost;
            self.open = None;
            self.core.reconnecting(why.to_string());
            if let Some(conn) = conn.or_else(|| self.client.connection()) {
                self.client.reconnect(&conn).await?;
            }
        }
    }

    /// Reads one answer into the core (opening the request first if needed). On failure,
    /// returns the connection it used, to redial.
    async fn read(&mut self) -> Result<(), (ClientError, Option<quinn::Connection>)> {
        if self.open.is_none() {
            let req = ClientRequest::Results {
                job: self.job,
                after: self.core.cursor(),
                follow: self.follow,
            };
            self.open = Some(self.client.request(&req).await.map_err(|e| (e, None))?);
        }
        let Some((replies, conn)) = self.open.as_mut() else {
            return Ok(());
        };
        match replies.next().await {
            Ok(Some(msg)) => self
                .core
                .handle(msg)
                .map_err(|e| (ClientError::Protocol(e), None)),
            Ok(None) if self.follow => Err((
                ClientError::Protocol("the results stream ended early".into()),
                Some(conn.clone()),
            )),
            Ok(None) => {
                self.core.stream_ended();
                Ok(())
            }
            Err(e) => Err((e, Some(conn.clone()))),
        }
    }
}
