//! `bramble dashboard`: a client of the host that serves one live page (loopback by default):
//! a card per Pi with its temperature and clock over the last ten minutes, throttle flags in
//! words, tasks, engines and speed; the jobs with progress. The page gets a snapshot a second
//! by server-sent events (`/events`); `/snapshot` is one of them, for scripts. The page and its
//! script are in the binary (no CDN, no build step).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bramble_client::Client;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::output::{jobs_values, status_values};
use bramble_host::http::{read_get, respond};

const PAGE: &str = include_str!("dashboard.html");

/// History the page gets on connecting, and with each later snapshot.
const FIRST_HISTORY: Duration = Duration::from_secs(600);
const LATER_HISTORY: Duration = Duration::from_secs(5);

pub(super) async fn run(
    client: Client,
    listen: SocketAddr,
    open: bool,
) -> anyhow::Result<ExitCode> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}/");
    println!("dashboard on {url} (Ctrl-C stops it)");
    let public = !addr.ip().is_loopback();
    if public {
        println!(
            "  served on {addr}: anyone who reaches it can see the cluster (read-only; an SSH \
             tunnel to 127.0.0.1 keeps it private)"
        );
    }
    if open {
        // Best effort: a desktop opens it; elsewhere the URL above is all there is.
        let _ = std::process::Command::new("xdg-open").arg(&url).spawn();
    }
    let serving = async {
        loop {
            let (stream, _) = listener.accept().await?;
            let client = client.clone();
            tokio::spawn(async move { page(stream, client, public).await });
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    tokio::select! {
        r = serving => r.map(|()| ExitCode::SUCCESS),
        _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
    }
}

async fn page(mut stream: TcpStream, client: Client, public: bool) {
    let Some(path) = read_get(&mut stream).await else {
        return;
    };
    match path.as_str() {
        "/" | "/index.html" => {
            // The first snapshot comes with the page, so it shows the cluster as it loads;
            // the event stream keeps it current.
            let first = snapshot(&client, FIRST_HISTORY, public).await;
            let first = first.to_string().replace("</", "<\\/");
            let page = PAGE.replace("/*FIRST*/null", &first);
            respond(
                &mut stream,
                "200 OK",
                "text/html; charset=utf-8",
                page.as_bytes(),
            )
            .await;
        }
        "/snapshot" => {
            let snap = snapshot(&client, FIRST_HISTORY, public).await;
            let body = serde_json::to_vec(&snap).unwrap_or_default();
            respond(&mut stream, "200 OK", "application/json", &body).await;
        }
        "/events" => events(stream, client, public).await,
        _ => respond(&mut stream, "404 Not Found", "text/plain", b"not here\n").await,
    }
}

/// A snapshot a second until the browser goes away.
async fn events(mut stream: TcpStream, client: Client, public: bool) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
                Connection: keep-alive\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut within = FIRST_HISTORY;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let snap = snapshot(&client, within, public).await;
        within = LATER_HISTORY;
        let event = format!("data: {snap}\n\n");
        if stream.write_all(event.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// What the page shows: workers with their history, jobs, and whether the host answers.
async fn snapshot(client: &Client, within: Duration, public: bool) -> Value {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let within_ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
    let answers = tokio::time::timeout(Duration::from_secs(3), async {
        tokio::join!(
            client.status(),
            client.history(within_ms),
            client.jobs(),
            client.job_names()
        )
    })
    .await;
    let (status, history, jobs, names) = match answers {
        Ok((Ok(s), Ok(h), Ok(j), Ok(n))) => (s, h, j, n),
        Ok((s, h, j, n)) => {
            let why = [s.err(), h.err(), j.err(), n.err()]
                .into_iter()
                .flatten()
                .map(|e| e.to_string())
                .next()
                .unwrap_or_default();
            return json!({ "time_ms": now_ms, "host": format!("unreachable: {why}"), "public": public });
        }
        Err(_) => {
            return json!({ "time_ms": now_ms, "host": "unreachable: no answer within 3 s", "public": public });
        }
    };
    let names = names.into_iter().collect();
    let history: Vec<Value> = history
        .iter()
        .map(|h| {
            let points: Vec<Value> = h
                .samples
                .iter()
                .map(|s| {
                    json!([
                        now_ms.saturating_sub(s.ago_ms),
                        s.cpu_temp.map(|t| t.celsius()),
                        s.arm_clock.map(|m| m.0),
                        s.arm_max.map(|m| m.0),
                        s.throttle.map(|f| f.0),
                    ])
                })
                .collect();
            json!({ "name": h.name, "id": h.id.map(|i| i.0), "model": h.model, "points": points })
        })
        .collect();
    json!({
        "time_ms": now_ms,
        "host": "ok",
        "public": public,
        "workers": status_values(&status),
        "history": history,
        "jobs": jobs_values(&jobs, &names),
    })
}
