//! Raw QUIC peers for the tests that play a worker or client by hand: a connection with any
//! rustls config from any local address, and the host's reason for closing it.

use std::sync::Arc;
use std::time::Duration;

use bramble_tests::Cluster;
use quinn::crypto::rustls::QuicClientConfig;

/// A QUIC connection to the cluster's host with `tls`, from the local address `from` (a second
/// loopback address stands for a second machine).
pub(crate) async fn connect_from(
    c: &Cluster,
    mut tls: rustls::ClientConfig,
    from: &str,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    tls.alpn_protocols = vec![bramble_wire::ALPN.to_vec()];
    let endpoint = quinn::Endpoint::client(from.parse().unwrap()).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    let addr = format!("127.0.0.1:{}", c.port).parse().unwrap();
    endpoint
        .connect_with(config, addr, bramble_certs::HOST_SERVER_NAME)
        .unwrap()
        .await
}

/// Waits for the host to close `conn`; returns its application close code and reason.
pub(crate) async fn closed_by_host(conn: &quinn::Connection) -> (u32, String) {
    let err = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("host never closed");
    match err {
        quinn::ConnectionError::ApplicationClosed(a) => (
            a.error_code.into_inner() as u32,
            String::from_utf8_lossy(&a.reason).into_owned(),
        ),
        other => panic!("unexpected close: {other}"),
    }
}
