//! The driver: the one task that owns the [`Scheduler`]. It turns peer messages and deadlines
//! into `handle*` calls, and the scheduler's actions into frames for peers.

use std::collections::BTreeMap;
use std::time::Instant;

use bramble_wire::{ToClient, ToWorker, close};
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use crate::sched::{Action, ClientId, DisconnectReason, Event, Scheduler, SessionId};

/// What a worker connection task is told to do.
#[derive(Debug)]
pub(crate) enum PeerCmd {
    Send(ToWorker),
    Close { code: u32, reason: String },
}

/// A read-only question answered from the scheduler's state.
#[derive(Debug)]
pub(crate) enum Query {
    Ids,
    Status,
}

/// Messages to the driver.
// Events are most of the traffic and move once through the channel; boxing the large one
// would allocate per message for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum ToDriver {
    /// A scheduler event.
    Event(Event),
    /// A worker session's outbound channel; sent before its `WorkerConnected`.
    WorkerOpened {
        session: SessionId,
        tx: mpsc::UnboundedSender<PeerCmd>,
    },
    /// A client request's outbound channel; sent before its `JobSubmitted`.
    ClientOpened {
        client: ClientId,
        tx: mpsc::UnboundedSender<ToClient>,
    },
    Query {
        query: Query,
        reply: oneshot::Sender<ToClient>,
    },
}

/// Runs until every sender is gone.
pub(crate) async fn run(
    mut sched: Scheduler,
    mut rx: mpsc::Receiver<ToDriver>,
    mut on_new_id: super::OnNewId,
) {
    // Unbounded channels: what goes to a worker is bounded by its slots (the scheduler never
    // places more); what goes to a client is bounded by its job's items.
    let mut workers: BTreeMap<SessionId, mpsc::UnboundedSender<PeerCmd>> = BTreeMap::new();
    let mut clients: BTreeMap<ClientId, mpsc::UnboundedSender<ToClient>> = BTreeMap::new();
    loop {
        let deadline = sched.poll_timeout();
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(ToDriver::Event(ev)) => {
                    if let Event::WorkerDisconnected { session } = &ev {
                        workers.remove(session);
                    }
                    sched.handle(now(), ev);
                }
                Some(ToDriver::WorkerOpened { session, tx }) => { workers.insert(session, tx); }
                Some(ToDriver::ClientOpened { client, tx }) => { clients.insert(client, tx); }
                Some(ToDriver::Query { query, reply }) => {
                    let answer = match query {
                        Query::Ids => ToClient::Ids(sched.ids()),
                        Query::Status => ToClient::Status(sched.status(now())),
                    };
                    let _ = reply.send(answer);
                }
                None => return,
            },
            () = sleep_until(deadline) => sched.handle_timeout(now()),
        }
        while let Some(action) = sched.poll_action() {
            match action {
                Action::Send { session, msg } => {
                    if let Some(tx) = workers.get(&session) {
                        let _ = tx.send(PeerCmd::Send(msg));
                    }
                }
                Action::Disconnect { session, reason } => {
                    if let Some(tx) = workers.remove(&session) {
                        info!("disconnecting session {}: {reason}", session.0);
                        let code = match reason {
                            DisconnectReason::Rejected(_) => close::REJECTED,
                            DisconnectReason::HeartbeatTimeout(_) => close::TIMEOUT,
                            DisconnectReason::Superseded => close::SUPERSEDED,
                        };
                        let _ = tx.send(PeerCmd::Close {
                            code,
                            reason: reason.to_string(),
                        });
                    }
                }
                Action::Reply { client, msg } => {
                    if let Some(tx) = clients.get(&client) {
                        let _ = tx.send(msg);
                    }
                }
                Action::CloseClient { client } => {
                    clients.remove(&client);
                }
                Action::IdAssigned { worker, name } => {
                    info!("worker {name:?} is id {worker}");
                    on_new_id(&name, worker);
                }
            }
        }
    }
}

/// The driver's clock. Only here and in other IO code; the scheduler gets `now` passed in.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
