//! Dialing: the first reachable host of a bundle, each address in turn, with a timeout; and
//! telling a refusal (retrying fast cannot help) from a blip.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bramble_certs::Bundle;

/// Why no host of the bundle could be reached.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DialError {
    /// The last host's failure, e.g. `127.0.0.1:7707: timed out`.
    pub message: String,
    /// The host refused us (bad or revoked certificate, wrong protocol version).
    pub refused: bool,
}

/// Connects to the first host of `bundle` that answers within `timeout`. The endpoint is
/// bound to a fresh local port and lives as long as the connection.
pub async fn connect(
    bundle: &Bundle,
    config: &quinn::ClientConfig,
    timeout: Duration,
) -> Result<(quinn::Connection, quinn::Endpoint), DialError> {
    let mut last = DialError {
        message: "no hosts in bundle".into(),
        refused: false,
    };
    for host in &bundle.hosts {
        let addrs = match tokio::net::lookup_host(host.as_str()).await {
            Ok(a) => a.collect::<Vec<_>>(),
            Err(e) => {
                last.message = format!("{host}: {e}");
                last.refused = false;
                continue;
            }
        };
        for addr in addrs {
            match dial(addr, &bundle.server_name, config, timeout).await {
                Ok(pair) => return Ok(pair),
                Err((message, refused)) => {
                    last = DialError {
                        message: format!("{host}: {message}"),
                        refused,
                    }
                }
            }
        }
    }
    Err(last)
}

async fn dial(
    addr: SocketAddr,
    server_name: &str,
    config: &quinn::ClientConfig,
    timeout: Duration,
) -> Result<(quinn::Connection, quinn::Endpoint), (String, bool)> {
    let bind: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let endpoint =
        quinn::Endpoint::client(bind).map_err(|e| (format!("bind {bind}: {e}"), false))?;
    let connecting = endpoint
        .connect_with(config.clone(), addr, server_name)
        .map_err(|e| (e.to_string(), false))?;
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => Ok((conn, endpoint)),
        Ok(Err(e)) => Err((explain(&e), is_refusal(&e))),
        Err(_) => Err((
            format!("no answer within {timeout:?} (is `bramble serve` running?)"),
            false,
        )),
    }
}

/// A failed handshake in words: a host whose certificate the bundle's CA did not sign is
/// another bramble (or this one before its profile was re-created).
fn explain(e: &quinn::ConnectionError) -> String {
    let text = e.to_string();
    if text.contains("invalid peer certificate") {
        return format!(
            "this host is not the bramble the bundle was made for ({text}): the bundle \
             belongs to another bramble, or to this one before `bramble init --force`; get a \
             new bundle from this host (`bramble enroll NAME`, `bramble client-bundle NAME`)"
        );
    }
    text
}

/// A TLS alert (bad or unknown certificate, no common protocol version) or the host's
/// explicit rejection.
pub fn is_refusal(e: &quinn::ConnectionError) -> bool {
    let crypto = |code: u64| (0x100..0x200).contains(&code);
    match e {
        quinn::ConnectionError::ConnectionClosed(c) => crypto(u64::from(c.error_code)),
        quinn::ConnectionError::TransportError(t) => crypto(u64::from(t.code)),
        quinn::ConnectionError::ApplicationClosed(c) => {
            c.error_code == quinn::VarInt::from_u32(bramble_wire::close::REJECTED)
        }
        _ => false,
    }
}
