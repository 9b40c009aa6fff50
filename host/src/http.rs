//! The little HTTP/1.1 that `serve --metrics` and `bramble dashboard` speak: one GET per
//! connection, a bounded request head, a response that closes the connection (or an event
//! stream that stays open). Enough for Prometheus and a browser; nothing else is served.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request head larger than this is refused.
const MAX_HEAD: usize = 8 << 10;
/// A client that sends no whole head within this is dropped.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads a request head; returns the path of a `GET`, `None` for anything else (the
/// connection is answered and should be dropped).
pub async fn read_get(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(HEAD_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 || head.len() + n > MAX_HEAD {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Some(())
    })
    .await;
    if !matches!(read, Ok(Some(()))) {
        return None;
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.lines().next()?.split_whitespace();
    match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => Some(path.to_owned()),
        _ => {
            respond(
                stream,
                "405 Method Not Allowed",
                "text/plain",
                b"GET only\n",
            )
            .await;
            None
        }
    }
}

/// Writes a whole response and closes the connection's write side.
pub async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}
