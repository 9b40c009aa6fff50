//! One client connection: every bidirectional stream is one request. Queries are answered
//! from the driver; a submitted job streams its results back until it finishes. A client
//! that goes away cancels its job.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bramble_wire::codec::encode_frame;
use bramble_wire::{ClientRequest, FrameDecoder, MAX_FRAME_LEN, ToClient};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::driver::{Query, ToDriver};
use crate::sched::{ClientId, Event};

pub(super) async fn run(
    conn: quinn::Connection,
    name: String,
    ids: Arc<AtomicU64>,
    to_driver: mpsc::Sender<ToDriver>,
) {
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let client = ClientId(ids.fetch_add(1, Ordering::Relaxed));
                tokio::spawn(request(send, recv, client, to_driver.clone(), name.clone()));
            }
            Err(e) => {
                debug!("client {name:?} gone: {e}");
                return;
            }
        }
    }
}

async fn request(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    client: ClientId,
    to_driver: mpsc::Sender<ToDriver>,
    name: String,
) {
    let req = match read_request(&mut recv).await {
        Ok(req) => req,
        Err(why) => {
            warn!("bad request from client {name:?}: {why}");
            let _ = write(&mut send, &ToClient::Error { message: why }).await;
            let _ = send.finish();
            return;
        }
    };
    match req {
        ClientRequest::Ids => answer(send, Query::Ids, &to_driver).await,
        ClientRequest::Status => answer(send, Query::Status, &to_driver).await,
        ClientRequest::Submit(spec) => {
            let (tx, mut rx) = mpsc::unbounded_channel();
            if to_driver
                .send(ToDriver::ClientOpened { client, tx })
                .await
                .is_err()
                || to_driver
                    .send(ToDriver::Event(Event::JobSubmitted { client, spec }))
                    .await
                    .is_err()
            {
                return;
            }
            let gone = loop {
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(msg) => {
                            if write(&mut send, &msg).await.is_err() {
                                break true;
                            }
                        }
                        None => break false,
                    },
                    _ = send.stopped() => break true,
                }
            };
            if gone {
                debug!("client {name:?} left before its job finished: cancelling it");
                let _ = to_driver
                    .send(ToDriver::Event(Event::ClientGone { client }))
                    .await;
            } else {
                let _ = send.finish();
            }
        }
    }
}

async fn answer(mut send: quinn::SendStream, query: Query, to_driver: &mpsc::Sender<ToDriver>) {
    let (reply, rx) = oneshot::channel();
    if to_driver
        .send(ToDriver::Query { query, reply })
        .await
        .is_err()
    {
        return;
    }
    if let Ok(msg) = rx.await {
        let _ = write(&mut send, &msg).await;
        let _ = send.finish();
    }
}

/// A request is one frame; the client finishes its side after it.
async fn read_request(recv: &mut quinn::RecvStream) -> Result<ClientRequest, String> {
    let bytes = recv
        .read_to_end(MAX_FRAME_LEN + bramble_wire::codec::HEADER_LEN)
        .await
        .map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::default();
    decoder.push(&bytes);
    let req = decoder
        .next_msg()
        .map_err(|e| e.to_string())?
        .ok_or("empty request")?;
    decoder.finish().map_err(|e| e.to_string())?;
    Ok(req)
}

async fn write(send: &mut quinn::SendStream, msg: &ToClient) -> Result<(), String> {
    let mut frame = Vec::new();
    encode_frame(msg, &mut frame).map_err(|e| e.to_string())?;
    send.write_all(&frame).await.map_err(|e| e.to_string())
}
