//! One worker connection: reads its Hello, then turns its frames into scheduler events and
//! the driver's commands into frames. Anything malformed closes this connection only.

use std::time::Duration;

use bramble_wire::codec::encode_frame;
use bramble_wire::{FrameDecoder, MAX_FRAME_LEN, ToHost, close};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::driver::{PeerCmd, ToDriver};
use crate::sched::{Event, SessionId};

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

pub(super) async fn run(
    conn: quinn::Connection,
    name: String,
    id: u64,
    to_driver: mpsc::Sender<ToDriver>,
) {
    let session = SessionId(id);
    let address = conn.remote_address().to_string();
    let end = serve(&conn, &name, session, address, &to_driver).await;
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
    name: &str,
    session: SessionId,
    address: String,
    to_driver: &mpsc::Sender<ToDriver>,
) -> End {
    let (mut send, mut recv) = match tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi()).await {
        Ok(Ok(streams)) => streams,
        Ok(Err(e)) => return End::Gone(e.to_string()),
        Err(_) => return End::Protocol("no control stream opened".into()),
    };
    let mut decoder = FrameDecoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    let hello = match tokio::time::timeout(
        HELLO_TIMEOUT,
        first_frame(&mut recv, &mut decoder, &mut buf),
    )
    .await
    {
        Ok(Ok(ToHost::Hello(hello))) => hello,
        Ok(Ok(other)) => return End::Protocol(format!("expected Hello, got {}", kind(&other))),
        Ok(Err(end)) => return end,
        Err(_) => return End::Protocol("no Hello within 10s".into()),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let event = Event::WorkerConnected {
        session,
        name: name.to_owned(),
        hello,
        address,
    };
    if to_driver
        .send(ToDriver::WorkerOpened { session, tx })
        .await
        .is_err()
        || to_driver.send(ToDriver::Event(event)).await.is_err()
    {
        return End::Gone("host shutting down".into());
    }
    // Frames that arrived together with the Hello are already in the decoder.
    if let Some(end) = drain(&mut decoder, session, to_driver).await {
        return end;
    }
    let mut out = Vec::new();
    loop {
        tokio::select! {
            read = recv.read(&mut buf) => {
                let n = match read {
                    Ok(Some(n)) => n,
                    Ok(None) => return End::Gone("control stream finished".into()),
                    Err(e) => return End::Gone(e.to_string()),
                };
                decoder.push(&buf[..n]);
                if let Some(end) = drain(&mut decoder, session, to_driver).await {
                    return end;
                }
            }
            uni = conn.accept_uni() => match uni {
                Ok(stream) => {
                    tokio::spawn(read_result_stream(stream, session, to_driver.clone(), name.to_owned()));
                }
                Err(e) => return End::Gone(e.to_string()),
            },
            cmd = rx.recv() => match cmd {
                Some(PeerCmd::Send(msg)) => {
                    out.clear();
                    if let Err(e) = encode_frame(&msg, &mut out) {
                        warn!("cannot encode frame for {name:?}: {e}");
                        continue;
                    }
                    if let Err(e) = send.write_all(&out).await {
                        return End::Gone(e.to_string());
                    }
                }
                Some(PeerCmd::Close { code, reason }) => {
                    conn.close(code.into(), reason.as_bytes());
                    return End::Closed;
                }
                None => return End::Gone("host shutting down".into()),
            },
        }
    }
}

/// Forwards every whole frame in the decoder; `Some` ends the connection.
async fn drain(
    decoder: &mut FrameDecoder,
    session: SessionId,
    to_driver: &mpsc::Sender<ToDriver>,
) -> Option<End> {
    loop {
        match decoder.next_msg::<ToHost>() {
            Ok(Some(msg)) => {
                if let Some(end) = forward(msg, session, to_driver).await {
                    return Some(end);
                }
            }
            Ok(None) => return None,
            Err(e) => return Some(End::Protocol(format!("bad frame: {e}"))),
        }
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
        ToHost::Goodbye => return Some(End::Gone("worker said goodbye".into())),
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
) {
    let bytes = match stream
        .read_to_end(MAX_FRAME_LEN + bramble_wire::codec::HEADER_LEN)
        .await
    {
        Ok(b) => b,
        Err(e) => {
            warn!("result stream of {name:?} failed: {e}");
            return;
        }
    };
    let mut decoder = FrameDecoder::default();
    decoder.push(&bytes);
    match (decoder.next_msg::<ToHost>(), decoder.finish()) {
        (Ok(Some(ToHost::TaskFinished(result))), Ok(())) => {
            let _ = to_driver
                .send(ToDriver::Event(Event::TaskFinished { session, result }))
                .await;
        }
        (Ok(Some(other)), _) => warn!("result stream of {name:?} carried {}", kind(&other)),
        (Err(e), _) | (_, Err(e)) => warn!("bad result stream from {name:?}: {e}"),
        (Ok(None), _) => warn!("empty result stream from {name:?}"),
    }
}

async fn first_frame(
    recv: &mut quinn::RecvStream,
    decoder: &mut FrameDecoder,
    buf: &mut [u8],
) -> Result<ToHost, End> {
    loop {
        match decoder.next_msg() {
            Ok(Some(msg)) => return Ok(msg),
            Ok(None) => {}
            Err(e) => return Err(End::Protocol(format!("bad frame: {e}"))),
        }
        match recv.read(buf).await {
            Ok(Some(n)) => decoder.push(&buf[..n]),
            Ok(None) => return Err(End::Gone("control stream finished before Hello".into())),
            Err(e) => return Err(End::Gone(e.to_string())),
        }
    }
}

fn kind(msg: &ToHost) -> &'static str {
    match msg {
        ToHost::Hello(_) => "Hello",
        ToHost::Telemetry(_) => "Telemetry",
        ToHost::TaskFinished(_) => "TaskFinished",
        ToHost::Goodbye => "Goodbye",
        ToHost::TaskRefused { .. } => "TaskRefused",
    }
}
