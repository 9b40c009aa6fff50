//! One worker connection: reads its Hello, then turns its frames into scheduler events and
//! the driver's commands into frames. Anything malformed closes this connection only.

use std::time::Duration;

use bramble_net::{Budget, FrameReader, ReadError, write_frame};
use bramble_sched::{Event, SessionId};
use bramble_wire::worker::BLOB_MISSING;
use bramble_wire::{ToHost, WorkerId, close};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::driver::{PeerCmd, ToDriver};
use crate::blobs::Blobs;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a worker connection ends.
enum End {
    /// The peer closed or the network failed: nothing to tell it.
    Gone(String),
    /// It broke the protocol: close with a reason it can log.
    Protocol(String),
    /// The scheduler asked us to close.
    Closed,
}

/// Who the connection is.
pub(super) struct Peer {
    /// From its certificate.
    pub name: String,
    pub session: SessionId,
    /// The id its name was given at enrollment (`enrolled.txt`), if it has one.
    pub enrolled: Option<WorkerId>,
    /// Staged files, sent when the worker asks.
    pub blobs: Blobs,
}

pub(super) async fn run(
    conn: quinn::Connection,
    peer: Peer,
    to_driver: mpsc::Sender<ToDriver>,
    budget: Budget,
) {
    let (name, session) = (&peer.name, peer.session);
    let end = match tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok((mut send, recv))) => {
            let end = serve(&conn, &peer, &to_driver, &budget, &mut send, recv).await;
            // Closed before the control stream's send half is dropped: the drop finishes the
            // stream, and that FIN could reach the peer first, as if the host had answered.
            if let End::Protocol(why) = &end {
                conn.close(close::PROTOCOL.into(), why.as_bytes());
            }
            end
        }
        Ok(Err(e)) => End::Gone(e.to_string()),
        Err(_) => End::Protocol("no control stream opened".into()),
    };
    match end {
        End::Gone(why) => info!("worker {name:?} gone: {why}"),
        End::Protocol(why) => {
            warn!("closing worker {name:?}: {why}");
            conn.close(close::PROTOCOL.into(), why.as_bytes());
        }
        End::Closed => {}
    }
    let _ = to_driver
        .send(ToDriver::Event(Event::WorkerDisconnected { session }))
        .await;
}

async fn serve(
    conn: &quinn::Connection,
    peer: &Peer,
    to_driver: &mpsc::Sender<ToDriver>,
    budget: &Budget,
    send: &mut quinn::SendStream,
    recv: quinn::RecvStream,
) -> End {
    let (name, session) = (peer.name.as_str(), peer.session);
    let mut frames = FrameReader::new(recv);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, frames.next::<ToHost>()).await {
        Ok(Ok(Some(ToHost::Hello(hello)))) => hello,
        Ok(Ok(Some(other))) => {
            return End::Protocol(format!("expected Hello, got {}", kind(&other)));
        }
        Ok(Ok(None)) => return End::Gone("control stream finished before Hello".into()),
        Ok(Err(e)) => return ended(e),
        Err(_) => return End::Protocol("no Hello within 10s".into()),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let event = Event::WorkerConnected {
        session,
        name: name.to_owned(),
        hello,
        address: conn.remote_address().to_string(),
        enrolled: peer.enrolled,
    };
    if to_driver
        .send(ToDriver::WorkerOpened { session, tx })
        .await
        .is_err()
        || to_driver.send(ToDriver::Event(event)).await.is_err()
    {
        return End::Gone("host shutting down".into());
    }
    let mut out = Vec::new();
    loop {
        tokio::select! {
            read = frames.next::<ToHost>() => {
                let msg = match read {
                    Ok(Some(msg)) => msg,
                    Ok(None) => return End::Gone("control stream finished".into()),
                    Err(e) => return ended(e),
                };
                if let ToHost::FetchBlob { sha256 } = msg {
                    tokio::spawn(send_blob(conn.clone(), peer.blobs.clone(), sha256));
                    continue;
                }
                if let Some(end) = forward(msg, session, to_driver).await {
                    return end;
                }
            }
            uni = conn.accept_uni() => match uni {
                Ok(stream) => {
                    tokio::spawn(read_result_stream(stream, session, to_driver.clone(), name.to_owned(), budget.clone()));
                }
                Err(e) => return End::Gone(e.to_string()),
            },
            cmd = rx.recv() => match cmd {
                Some(PeerCmd::Send(msg)) => match write_frame(send, &msg, &mut out).await {
                    Ok(()) => {}
                    Err(bramble_net::WriteError::Encode(e)) => {
                        warn!("cannot encode frame for {name:?}: {e}");
                    }
                    Err(e) => return End::Gone(e.to_string()),
                },
                Some(PeerCmd::Close { code, reason }) => {
                    conn.close(code.into(), reason.as_bytes());
                    return End::Closed;
                }
                None => return End::Gone("host shutting down".into()),
            },
        }
    }
}

/// A read failure: a bad frame breaks the protocol; anything else means the peer is gone.
fn ended(e: ReadError) -> End {
    match e {
        ReadError::Decode(e) => End::Protocol(format!("bad frame: {e}")),
        ReadError::Stream(e) => End::Gone(e),
        ReadError::Idle(_) => End::Gone(e.to_string()),
    }
}

/// Passes a control-stream message on; `Some` ends the connection.
async fn forward(
    msg: ToHost,
    session: SessionId,
    to_driver: &mpsc::Sender<ToDriver>,
) -> Option<End> {
    let event = match msg {
        ToHost::Telemetry(telemetry) => Event::TelemetryReceived { session, telemetry },
        ToHost::TaskFinished(result) => Event::TaskFinished { session, result },
        ToHost::TaskRefused { task, attempt } => Event::TaskRefused {
            session,
            task,
            attempt,
        },
        ToHost::Python(report) => Event::PythonReported { session, report },
        ToHost::Board { model } => Event::BoardReported { session, model },
        ToHost::Output(chunk) => Event::OutputReceived { session, chunk },
        ToHost::Goodbye => return Some(End::Gone("worker said goodbye".into())),
        ToHost::FetchBlob { .. } => return None, // answered by the connection (`send_blob`)
        ToHost::Hello(_) => return Some(End::Protocol("second Hello".into())),
    };
    to_driver
        .send(ToDriver::Event(event))
        .await
        .err()
        .map(|_| End::Gone("host shutting down".into()))
}

/// A result too large for the control stream arrives on its own stream: exactly one frame.
async fn read_result_stream(
    mut stream: quinn::RecvStream,
    session: SessionId,
    to_driver: mpsc::Sender<ToDriver>,
    name: String,
    budget: Budget,
) {
    match bramble_net::read_one::<ToHost>(&mut stream, &budget, HELLO_TIMEOUT).await {
        Ok(ToHost::TaskFinished(result)) => {
            let _ = to_driver
                .send(ToDriver::Event(Event::TaskFinished { session, result }))
                .await;
        }
        Ok(other) => warn!("result stream of {name:?} carried {}", kind(&other)),
        Err(e) => warn!("bad result stream from {name:?}: {e}"),
    }
}

fn kind(msg: &ToHost) -> &'static str {
    match msg {
        ToHost::Hello(_) => "Hello",
        ToHost::Telemetry(_) => "Telemetry",
        ToHost::TaskFinished(_) => "TaskFinished",
        ToHost::Goodbye => "Goodbye",
        ToHost::TaskRefused { .. } => "TaskRefused",
        ToHost::Python(_) => "Python",
        ToHost::Output(_) => "Output",
        ToHost::FetchBlob { .. } => "FetchBlob",
        ToHost::Board { .. } => "Board",
    }
}

/// Sends a staged file on a stream of its own: hash, size (`BLOB_MISSING` if the host does
/// not have it), content. A failure is the worker's to notice (its stream ends short).
async fn send_blob(conn: quinn::Connection, blobs: Blobs, sha256: [u8; 32]) {
    let sent = async {
        let mut stream = conn.open_uni().await?;
        let file = tokio::fs::File::open(blobs.path(&sha256)).await;
        let size = match &file {
            Ok(f) => f.metadata().await?.len(),
            Err(_) => BLOB_MISSING,
        };
        stream.write_all(&sha256).await?;
        stream.write_all(&size.to_le_bytes()).await?;
        if let Ok(mut file) = file {
            tokio::io::copy(&mut file, &mut stream).await?;
        }
        stream.finish()?;
        anyhow::Ok(())
    };
    if let Err(e) = sent.await {
        warn!(
            "sending staged file {} failed: {e}",
            crate::blobs::hex(&sha256)
        );
    }
}
