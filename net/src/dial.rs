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
    /// The host is up but busy with other handshakes: dial again after a short random pause.
    pub busy: bool,
}

impl DialError {
    /// A failure that retrying may cure.
    fn blip(message: String) -> Self {
        Self {
            message,
            refused: false,
            busy: false,
        }
    }

    fn from_connection(e: &quinn::ConnectionError) -> Self {
        let busy = matches!(e, quinn::ConnectionError::ConnectionClosed(c)
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED);
        Self {
            message: if busy {
                "the host is busy with other handshakes".into()
            } else {
                explain(e)
            },
            refused: is_refusal(e),
            busy,
        }
    }
}

/// Connects to the first host of `bundle` that answers within `timeout`. The endpoint is
/// bound to a fresh local port and lives as long as the connection.
pub async fn connect(
    bundle: &Bundle,
    config: &quinn::ClientConfig,
    timeout: Duration,
) -> Result<(quinn::Connection, quinn::Endpoint), DialError> {
    let mut last = DialError::blip("no hosts in bundle".into());
    for host in &bundle.hosts {
        let addrs = match tokio::net::lookup_host(host.as_str()).await {
            Ok(a) => a.collect::<Vec<_>>(),
            Err(e) => {
                last = DialError::blip(format!("{host}: {e}"));
                continue;
            }
        };
        for addr in addrs {
            match dial(addr, &bundle.server_name, config, timeout).await {
                Ok(pair) => return Ok(pair),
                Err(e) => {
                    last = DialError {
                        message: format!("{host}: {}", e.message),
                        ..e
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
) -> Result<(quinn::Connection, quinn::Endpoint), DialError> {
    let bind: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let endpoint =
        quinn::Endpoint::client(bind).map_err(|e| DialError::blip(format!("bind {bind}: {e}")))?;
    let mut connecting = endpoint
        .connect_with(config.clone(), addr, server_name)
        .map_err(|e| DialError::blip(e.to_string()))?;
    // `timeout` bounds the wait for the host's first answer (its hello). A host that answered
    // is alive but may be busy (a rack of workers dialling at once): abandoning its handshake
    // to dial again would only make it do the work twice.
    let answered = tokio::time::timeout(timeout, async {
        connecting.handshake_data().await.map(drop)
    })
    .await;
    let finish = match answered {
        Err(_) => {
            return Err(DialError::blip(format!(
                "no answer within {timeout:?} (is `bramble serve` running?)"
            )));
        }
        Ok(Err(e)) => return Err(DialError::from_connection(&e)),
        Ok(Ok(_)) => timeout.max(ANSWERED_GRACE),
    };
    match tokio::time::timeout(finish, connecting).await {
        Ok(Ok(conn)) => Ok((conn, endpoint)),
        Ok(Err(e)) => Err(DialError::from_connection(&e)),
        Err(_) => Err(DialError::blip(format!(
            "the handshake did not finish within {finish:?} of the host's answer"
        ))),
    }
}

/// How long a handshake the host has answered may take to finish.
const ANSWERED_GRACE: Duration = Duration::from_secs(10);

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

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_certs::ca::Ca;
    use bramble_certs::{HOST_SERVER_NAME, Role};

    /// A real host endpoint on loopback and a worker bundle that dials it.
    fn pair() -> (quinn::Endpoint, Bundle) {
        let ca = Ca::generate("test").unwrap();
        let host = ca.issue_host(&[]).unwrap();
        let server = crate::server_config(ca.cert_pem(), &host.cert_pem, &host.key_pem).unwrap();
        let socket = crate::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            std::sync::Arc::new(quinn::TokioRuntime),
        )
        .unwrap();
        let peer = ca.issue_peer(Role::Worker, "pi-01").unwrap();
        let bundle = Bundle {
            version: 1,
            role: Role::Worker,
            name: "pi-01".into(),
            hosts: vec![endpoint.local_addr().unwrap().to_string()],
            server_name: HOST_SERVER_NAME.into(),
            ca: ca.cert_pem().into(),
            cert: peer.cert_pem,
            key: peer.key_pem,
        };
        (endpoint, bundle)
    }

    #[tokio::test]
    async fn a_busy_host_is_told_apart_from_a_refusal_and_from_silence() {
        let (host, bundle) = pair();
        let config = crate::client_config(&bundle, crate::Side::Worker).unwrap();
        let refuser = host.clone();
        tokio::spawn(async move {
            if let Some(incoming) = refuser.accept().await {
                incoming.refuse();
            }
        });
        let e = connect(&bundle, &config, Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert!(e.busy && !e.refused, "{e:?}");
        assert!(e.message.contains("busy"), "{}", e.message);

        // Nobody answers: a timeout, neither busy nor refused.
        let e = connect(&bundle, &config, Duration::from_millis(100))
            .await
            .err()
            .unwrap();
        assert!(!e.busy && !e.refused, "{e:?}");
        assert!(e.message.contains("no answer"), "{}", e.message);
    }
}
