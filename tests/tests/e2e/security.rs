use std::time::Duration;

use crate::peer::{closed_by_host, connect_from};
use bramble_certs::Bundle;
use bramble_tests::{Cluster, stderr, stdout};
use bramble_wire::{ClientRequest, close};

/// A raw QUIC connection to the cluster's host with the given rustls config.
async fn raw_connect(
    c: &Cluster,
    tls: rustls::ClientConfig,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    connect_from(c, tls, "127.0.0.1:0").await
}

fn enroll(c: &Cluster, name: &str) -> Bundle {
    let out = c.bramble(&["enroll", name]);
    assert!(out.status.success(), "{}", stderr(&out));
    Bundle::load(&c.profile_path(&format!("workers/{name}.json"))).unwrap()
}

fn assert_still_serving(c: &Cluster, n: usize) {
    let out = c.bramble(&["ids"]);
    assert_eq!(
        c.parse_ids(&out).len(),
        n,
        "host stopped serving: {}",
        stderr(&out)
    );
    let out = c.bramble(&["map", "--range", "0..4", "--", "echo", "{}"]);
    assert_eq!(stdout(&out), "0\n1\n2\n3\n", "{}", stderr(&out));
}

#[tokio::test]
async fn garbage_and_oversized_frames_close_only_that_connection() {
    let c = Cluster::start(2);
    let mallory = enroll(&c, "mallory");
    let tls = || bramble_certs::tls::client_config(&mallory).unwrap();

    let conn = raw_connect(&c, tls()).await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let (code, reason) = closed_by_host(&conn).await;
    assert_eq!(code, close::PROTOCOL);
    assert!(reason.contains("bad frame"), "{reason}");

    let conn = raw_connect(&c, tls()).await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&(1u32 << 30).to_le_bytes()).await.unwrap();
    let (code, reason) = closed_by_host(&conn).await;
    assert_eq!(code, close::PROTOCOL);
    assert!(reason.contains("exceeds"), "{reason}");

    assert_still_serving(&c, 2);
    assert!(
        c.log().contains("closing worker \"mallory\""),
        "no log line:\n{}",
        c.log()
    );
}

#[tokio::test]
async fn worker_certificate_cannot_act_as_client() {
    let c = Cluster::start(1);
    let mallory = enroll(&c, "mallory");
    let conn = raw_connect(&c, bramble_certs::tls::client_config(&mallory).unwrap())
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut frame = Vec::new();
    bramble_wire::codec::encode_frame(&ClientRequest::Ids, &mut frame).unwrap();
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    // The host treats it as a worker: a client request is not a Hello.
    let (code, _) = closed_by_host(&conn).await;
    assert_eq!(code, close::PROTOCOL);
    assert!(
        recv.read_to_end(1 << 20).await.is_err(),
        "the host answered a worker certificate's request"
    );

    // The CLI refuses a worker bundle before connecting.
    let path = c.profile_path("workers/mallory.json");
    let out = c.bramble(&["--bundle", path.to_str().unwrap(), "ids"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("clients need one from `bramble client-bundle`"),
        "{}",
        stderr(&out)
    );
    assert_still_serving(&c, 1);
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let c = Cluster::start(1);
    let ca = std::fs::read_to_string(c.profile_path("security/ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in bramble_certs::tls::certs_from_pem(&ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(bramble_certs::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // TLS 1.3: the client may finish its handshake before the server rejects it, so the
    // refusal shows as a handshake error or as an immediate close with a TLS alert.
    let refused = match raw_connect(&c, tls).await {
        Err(e) => e,
        Ok(conn) => tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .unwrap(),
    };
    let text = refused.to_string();
    assert!(
        text.contains("certificate") || text.contains("116"),
        "{text}"
    );
    assert_still_serving(&c, 1);
}

#[test]
fn bundle_from_another_ca_and_bad_bundles_are_refused() {
    let c = Cluster::start(1);
    // Another profile's CA, pointed at this host.
    let other = Cluster::init();
    let stranger = other.home.path().join("stranger.json");
    let out = other.bramble(&[
        "client-bundle",
        "stranger",
        "--out",
        stranger.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let mut b = Bundle::load(&stranger).unwrap();
    b.hosts = vec![format!("127.0.0.1:{}", c.port)];
    b.save(&stranger).unwrap();
    let out = c.bramble(&["--bundle", stranger.to_str().unwrap(), "ids"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the bundle belongs to another bramble"),
        "{}",
        stderr(&out)
    );

    // A bundle cut short in its certificate: the file, the field and what is missing.
    let mut cut = Bundle::load(&stranger).unwrap();
    cut.cert.truncate(cut.cert.len() / 2);
    let cut_path = other.home.path().join("cut.json");
    cut.save(&cut_path).unwrap_or_else(|e| panic!("{e}"));
    let out = c.bramble(&["--bundle", cut_path.to_str().unwrap(), "ids"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{}: not a bramble bundle: field \"cert\": bad PEM (certificate): cut short",
            cut_path.display()
        )),
        "{}",
        stderr(&out)
    );

    let junk = other.home.path().join("junk.json");
    std::fs::write(&junk, "{\"version\": 1, \"role\": \"client\"").unwrap();
    let out = c.bramble(&["--bundle", junk.to_str().unwrap(), "ids"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a bramble bundle"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));

    let out = c
        .command("bramble-worker", &["--bundle", junk.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("bramble-worker: ") && stderr(&out).lines().count() == 1,
        "{}",
        stderr(&out)
    );

    let client = c.profile_path("security/client.json");
    let out = c
        .command("bramble-worker", &["--bundle", client.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot run a worker"),
        "{}",
        stderr(&out)
    );
    assert_still_serving(&c, 1);
}
