//! Each worker's telemetry over time (and its board), bounded whatever the uptime: the last ten minutes at up
//! to one sample a second, and before that one sample per ten seconds for fifty minutes more.
//! Kept by name, so a worker that reconnects (or is gone) keeps its past. Sans-IO: the time
//! is an argument.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bramble_wire::{HistorySample, Telemetry};

/// Fine samples: one per second at most (reports a little early still count), for ten
/// minutes.
const FINE: usize = 600;
const FINE_EVERY: Duration = Duration::from_millis(900);
/// Coarse samples, from fine ones that age out: one per ten seconds, for fifty minutes.
const COARSE: usize = 300;
const COARSE_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    report: HistorySample,
}

/// One worker's history, and its board.
#[derive(Debug, Default)]
pub(crate) struct History {
    fine: VecDeque<Sample>,
    coarse: VecDeque<Sample>,
    /// What the worker said it runs on (`ToHost::Board`).
    pub(crate) model: Option<String>,
}

impl History {
    /// Adds a telemetry report received at `now` (reports closer than a second to the last
    /// one are skipped).
    pub(crate) fn record(&mut self, now: Instant, t: &Telemetry) {
        if self
            .fine
            .back()
            .is_some_and(|last| now.saturating_duration_since(last.at) < FINE_EVERY)
        {
            return;
        }
        self.fine.push_back(Sample {
            at: now,
            report: HistorySample {
                ago_ms: 0,
                cpu_temp: t.cpu_temp,
                arm_clock: t.arm_clock,
                arm_max: t.arm_max,
                throttle: t.throttle,
            },
        });
        if self.fine.len() > FINE
            && let Some(old) = self.fine.pop_front()
        {
            if self
                .coarse
                .back()
                .is_none_or(|c| old.at.saturating_duration_since(c.at) >= COARSE_EVERY)
            {
                self.coarse.push_back(old);
            }
            if self.coarse.len() > COARSE {
                self.coarse.pop_front();
            }
        }
    }

    /// The samples taken within `within` of `now`, oldest first, with their age.
    pub(crate) fn samples(&self, now: Instant, within: Duration) -> Vec<HistorySample> {
        self.coarse
            .iter()
            .chain(&self.fine)
            .filter(|s| now.saturating_duration_since(s.at) <= within)
            .map(|s| HistorySample {
                ago_ms: u64::try_from(now.saturating_duration_since(s.at).as_millis())
                    .unwrap_or(u64::MAX),
                ..s.report
            })
            .collect()
    }

    /// How many samples it holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.fine.len() + self.coarse.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_wire::MilliCelsius;

    fn report(temp: i32) -> Telemetry {
        Telemetry {
            seq: 0,
            cpu_temp: Some(MilliCelsius(temp)),
            arm_clock: None,
            arm_max: None,
            throttle: None,
            load_milli: None,
            mem_available_kib: None,
            mem_total_kib: None,
            running: 0,
            startup_error: None,
        }
    }

    #[test]
    fn bounded_over_days_fine_then_coarse() {
        let t0 = crate::test_clock::epoch();
        let mut h = History::default();
        // Two reports a second for two days.
        for half in 0..(2 * 86_400 * 2) {
            let now = t0 + Duration::from_millis(500 * half);
            h.record(now, &report(i32::try_from(half).unwrap()));
        }
        assert_eq!(h.len(), FINE + COARSE, "never more than an hour's worth");
        let now = t0 + Duration::from_secs(2 * 86_400);
        let recent = h.samples(now, Duration::from_secs(60));
        assert_eq!(recent.len(), 60, "one a second");
        assert!(recent.windows(2).all(|w| w[0].ago_ms > w[1].ago_ms));
        let hour = h.samples(now, Duration::from_secs(3_600));
        assert_eq!(hour.len(), FINE + COARSE);
        let oldest = hour[0].ago_ms;
        assert!((3_590_000..=3_600_000).contains(&oldest), "{oldest}");
        // Coarse samples are ten seconds apart.
        assert_eq!(hour[0].ago_ms - hour[1].ago_ms, 10_000);
        // A report a little early (a heartbeat's jitter) is kept, a second one in 0.5 s not.
        let mut jitter = History::default();
        for ms in [0, 980, 1_480, 1_960] {
            jitter.record(t0 + Duration::from_millis(ms), &report(1));
        }
        assert_eq!(jitter.len(), 3);
    }
}
