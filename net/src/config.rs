//! QUIC configs: mutual TLS from the bundle or the profile's PEM, ALPN `bramble/<major>`, and
//! the transport settings of each side.

use std::sync::Arc;
use std::time::Duration;

use bramble_certs::{Bundle, CertsError};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

/// Silence after which either side drops a connection.
const IDLE_TIMEOUT_MS: u32 = 15_000;

/// Which end of a connection a config is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The host: accepts result streams from workers and request streams from clients.
    Host,
    /// A worker: the side behind NAT, so it sends keep-alives; accepts no streams.
    Worker,
    /// A client: keep-alives let one following a job notice a dead or restarted host (a
    /// restarted one answers with a stateless reset) instead of waiting for results.
    Client,
}

/// Bytes a peer may have in flight to the host on one connection, unread.
const HOST_RECEIVE_WINDOW: u32 = 8 << 20;

/// The round trip a dialling side assumes before it has measured one (quinn's default is
/// 333 ms, which makes the first retransmission of a lost or unanswered first packet wait
/// about a second: a worker started before its host joined a second late). Bramble's links
/// are LANs; on a slower one this only costs a spurious retransmission of the first packet.
const DIAL_RTT: Duration = Duration::from_millis(10);

/// The transport settings of `side`.
pub fn transport(side: Side) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        IDLE_TIMEOUT_MS,
    ))));
    match side {
        Side::Host => {
            t.max_concurrent_uni_streams(256u32.into());
            t.max_concurrent_bidi_streams(256u32.into());
            // What a peer may send ahead of the host's reading, over all its streams
            // (quinn's default is unlimited): a peer that sends and sends while the host
            // waits for room in its read budget fills this much and then stalls.
            t.receive_window(HOST_RECEIVE_WINDOW.into());
        }
        Side::Worker => {
            t.initial_rtt(DIAL_RTT);
            t.keep_alive_interval(Some(Duration::from_secs(3)));
            // The host opens streams to a worker only to send it staged files, a few at once.
            t.max_concurrent_uni_streams(4u32.into());
        }
        Side::Client => {
            t.initial_rtt(DIAL_RTT);
            t.keep_alive_interval(Some(Duration::from_secs(2)));
        }
    }
    t
}

/// A worker's or client's config from its bundle.
pub fn client_config(bundle: &Bundle, side: Side) -> Result<quinn::ClientConfig, CertsError> {
    let mut tls = bramble_certs::tls::client_config(bundle)?;
    tls.alpn_protocols = vec![bramble_wire::ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls)
        .map_err(|e| CertsError::Tls(rustls::Error::General(e.to_string())))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport(side)));
    Ok(config)
}

/// The host's config: requires a client certificate from the profile's CA.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<quinn::ServerConfig, CertsError> {
    let mut tls = bramble_certs::tls::server_config(ca_pem, cert_pem, key_pem)?;
    tls.alpn_protocols = vec![bramble_wire::ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls)
        .map_err(|e| CertsError::Tls(rustls::Error::General(e.to_string())))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport(Side::Host)));
    Ok(config)
}
