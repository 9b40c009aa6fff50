//! When a worker dials its host again: eager dials while the host has only just gone silent,
//! short random pauses when it is busy, and a capped exponential backoff with ±20 % jitter
//! after that, so a rack of Pis does not reconnect in lock-step after a host restart. Pure:
//! the caller dials and sleeps (the worker, and the load generator that simulates a rack).

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(250);
const CAP: Duration = Duration::from_secs(30);
/// After a refusal (bad certificate, revoked, incompatible) retrying quickly cannot help.
const FATAL: Duration = Duration::from_secs(60);

/// For this long after the host stopped answering (or from the start) the worker dials again
/// at once instead of pausing: a host that starts after its workers, or restarts, has them
/// back within tens of milliseconds.
const EAGER_FOR: Duration = Duration::from_secs(5);
/// The first eager dial's wait; each next one waits twice as long up to [`EAGER_LONGEST`], so
/// a link slower than 50 ms (a loaded Wi-Fi) still gets through on a later dial, and a host
/// that starts meanwhile is reached within a dial's retransmissions.
const EAGER_FIRST: Duration = Duration::from_millis(50);
const EAGER_LONGEST: Duration = Duration::from_millis(200);

/// How long a dial waits for its answer once the host said it is busy: it is up, and will
/// answer in turn.
const PATIENT: Duration = Duration::from_secs(2);

/// The waits of eager dials.
#[derive(Debug)]
pub struct Eager {
    next: Duration,
}

impl Default for Eager {
    fn default() -> Self {
        Self { next: EAGER_FIRST }
    }
}

impl Eager {
    pub fn new() -> Self {
        Self::default()
    }

    /// How long the next dial waits while the host has been silent for `silent` (`None`: not
    /// tried yet); `None` once the eager time is over (dial normally, with pauses).
    pub fn dial_wait(&mut self, silent: Option<Duration>) -> Option<Duration> {
        if silent.is_some_and(|s| s >= EAGER_FOR) {
            return None;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(EAGER_LONGEST).max(self.next);
        Some(wait)
    }

    /// The host refused a dial because it is busy: the next dials wait for their answer.
    pub fn busy(&mut self) {
        self.next = PATIENT;
    }

    /// The host answered: its next silence starts from the first wait again.
    pub fn reset(&mut self) {
        self.next = EAGER_FIRST;
    }
}

/// The first pause after the host refused a dial because it was busy with other handshakes;
/// each next one is twice as long, up to [`BUSY_LONGEST`], and spread from half to one and a
/// half times, so a rack refused together comes back spread out.
const BUSY_FIRST: Duration = Duration::from_millis(50);
const BUSY_LONGEST: Duration = Duration::from_millis(800);

/// Backoff state of one worker.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    busy: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(seed: u64) -> Self {
        Self {
            next: FIRST,
            busy: BUSY_FIRST,
            rng: seed | 1,
        }
    }

    /// After a connection that lived long enough: start from the short delay again.
    pub fn reset(&mut self) {
        self.next = FIRST;
    }

    /// The pause before dialling a busy host again (see [`BUSY_FIRST`]).
    pub fn busy_pause(&mut self) -> Duration {
        let base = self.busy;
        self.busy = (self.busy * 2).min(BUSY_LONGEST);
        base * u32::try_from(500 + self.random() % 1001).unwrap_or(1000) / 1000
    }

    /// The host let a dial through: its next refusal pauses briefly again.
    pub fn connected(&mut self) {
        self.busy = BUSY_FIRST;
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self, fatal: bool) -> Duration {
        let base = if fatal { FATAL } else { self.next };
        self.next = (self.next * 2).min(CAP);
        let permille = 800 + self.random() % 401; // 0.8 .. 1.2
        base * u32::try_from(permille).unwrap_or(1000) / 1000
    }

    /// xorshift64: jitter only, no need for more.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eager_dials_wait_longer_each_time_then_stop_and_start_over_once_answered() {
        let mut e = Eager::new();
        let ms = Duration::from_millis;
        let waits: Vec<_> = (0..4).map(|i| e.dial_wait(Some(ms(i * 100)))).collect();
        assert_eq!(
            waits,
            [Some(ms(50)), Some(ms(100)), Some(ms(200)), Some(ms(200))]
        );
        assert_eq!(e.dial_wait(Some(EAGER_FOR)), None);
        e.reset();
        assert_eq!(e.dial_wait(None), Some(ms(50)));
        e.busy();
        assert_eq!(e.dial_wait(None), Some(PATIENT));
        assert_eq!(e.dial_wait(None), Some(PATIENT));
        e.reset();
        assert_eq!(e.dial_wait(None), Some(ms(50)));
    }

    #[test]
    fn busy_pauses_spread_grow_and_start_over_once_through() {
        let mut b = Backoff::new(42);
        let p: Vec<Duration> = (0..8).map(|_| b.busy_pause()).collect();
        assert!(
            p[0] >= BUSY_FIRST / 2 && p[0] <= BUSY_FIRST * 3 / 2,
            "{p:?}"
        );
        assert!(p.iter().all(|x| *x <= BUSY_LONGEST * 3 / 2), "{p:?}");
        assert!(p[7] >= BUSY_LONGEST / 2, "{p:?}");
        let mut other = Backoff::new(7);
        assert_ne!(
            other.busy_pause(),
            p[0],
            "a rack would come back in lock-step"
        );
        b.connected();
        assert!(b.busy_pause() <= BUSY_FIRST * 3 / 2);
    }

    #[test]
    fn grows_caps_jitters_and_resets() {
        let mut b = Backoff::new(42);
        let d: Vec<Duration> = (0..12).map(|_| b.next_delay(false)).collect();
        assert!(d[0] >= Duration::from_millis(200) && d[0] <= Duration::from_millis(300));
        assert!(d[3] > d[0] * 4, "{d:?}");
        assert!(d.iter().all(|x| *x <= CAP * 6 / 5), "{d:?}");
        assert!(d[11] >= CAP * 4 / 5);
        assert!(b.next_delay(true) >= Duration::from_secs(48));
        b.reset();
        assert!(b.next_delay(false) <= Duration::from_millis(300));
        let mut other = Backoff::new(7);
        let jittered: Vec<Duration> = (0..5).map(|_| other.next_delay(false)).collect();
        assert_ne!(jittered, d[..5].to_vec(), "different seeds, same delays");
    }
}
