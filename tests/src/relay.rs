//! A lossy UDP relay between workers and the host, for tests of loss, delay and partitions
//! (this kernel has no `netem`). Workers dial the relay; it forwards each datagram to the host
//! from a socket of its own per worker (so the host sees one address per worker) and the
//! answers back, dropping a share of them and delaying the rest, or, while cut, dropping all.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A datagram waiting for its delay: when, from which socket, to where.
type Delayed = (Instant, Arc<UdpSocket>, SocketAddr, Vec<u8>);

#[derive(Default)]
struct Shared {
    /// Dropped datagrams per thousand.
    loss: AtomicU32,
    delay_us: AtomicU64,
    cut: AtomicBool,
    stop: AtomicBool,
    /// xorshift state for the losses: the same run drops the same datagrams.
    dice: AtomicU64,
    line: Mutex<Vec<Delayed>>,
    /// Rung when a datagram joins the line (or the relay stops).
    queued: Condvar,
}

impl Shared {
    /// Drops it, or queues it for its delay.
    fn pass(&self, from: &Arc<UdpSocket>, to: SocketAddr, bytes: &[u8]) {
        if self.cut.load(Ordering::Relaxed) {
            return;
        }
        let mut x = self.dice.load(Ordering::Relaxed) | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.dice.store(x, Ordering::Relaxed);
        if (x % 1000) < u64::from(self.loss.load(Ordering::Relaxed)) {
            return;
        }
        let due = Instant::now() + Duration::from_micros(self.delay_us.load(Ordering::Relaxed));
        if let Ok(mut line) = self.line.lock() {
            line.push((due, from.clone(), to, bytes.to_vec()));
            self.queued.notify_one();
        }
    }
}

/// See the module docs. Stops when dropped.
pub struct Relay {
    /// Where workers dial.
    pub port: u16,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// A relay on a loopback port in front of the host at `host_port`.
    pub fn start(host_port: u16) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("relay socket"));
        front
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let port = front.local_addr().expect("relay address").port();
        let shared = Arc::new(Shared {
            dice: AtomicU64::new(0x2545_F491_4F6C_DD1D),
            ..Shared::default()
        });
        let host: SocketAddr = ([127, 0, 0, 1], host_port).into();
        let forward = {
            let shared = shared.clone();
            std::thread::spawn(move || forward(&front, host, &shared))
        };
        let deliver = {
            let shared = shared.clone();
            std::thread::spawn(move || deliver(&shared))
        };
        Self {
            port,
            shared,
            threads: vec![forward, deliver],
        }
    }

    /// Drops `loss` (0 to 1) of the datagrams each way and delays the rest by `delay`.
    pub fn set(&self, loss: f64, delay: Duration) {
        self.shared
            .loss
            .store((loss * 1000.0) as u32, Ordering::Relaxed);
        self.shared
            .delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cuts the link (every datagram dropped) or restores it.
    pub fn cut(&self, cut: bool) {
        self.shared.cut.store(cut, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.queued.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Workers → host: one upstream socket per worker, with a thread for its answers.
fn forward(front: &Arc<UdpSocket>, host: SocketAddr, shared: &Arc<Shared>) {
    let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut back = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok((n, worker)) = front.recv_from(&mut buf) else {
            continue;
        };
        let up = upstream.entry(worker).or_insert_with(|| {
            let up = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("upstream socket"));
            up.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            let (up2, front, shared) = (up.clone(), front.clone(), shared.clone());
            back.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !shared.stop.load(Ordering::Relaxed) {
                    if let Ok((n, _)) = up2.recv_from(&mut buf) {
                        shared.pass(&front, worker, &buf[..n]);
                    }
                }
            }));
            up
        });
        shared.pass(up, host, &buf[..n]);
    }
    for t in back {
        let _ = t.join();
    }
}

/// Sends each datagram when it is due: waits for the earliest due time, or for one to join.
fn deliver(shared: &Shared) {
    let Ok(mut line) = shared.line.lock() else {
        return;
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let (due, wait): (Vec<Delayed>, Vec<Delayed>) = line.drain(..).partition(|d| d.0 <= now);
        *line = wait;
        for (_, socket, to, bytes) in due {
            let _ = socket.send_to(&bytes, to);
        }
        // The stop flag is looked at every 100 ms at the latest.
        let next = line.iter().map(|d| d.0).min();
        let timeout = next.map_or(Duration::from_millis(100), |t| {
            t.saturating_duration_since(now)
        });
        line = match shared.queued.wait_timeout(line, timeout) {
            Ok((line, _)) => line,
            Err(_) => return,
        };
    }
}
