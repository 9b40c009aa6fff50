//! Each worker's *current effective speed*, as the `thermal` policy sees it: observed time per
//! item (an EWMA, normalised to full clock by the clock the item actually ran at, averaged
//! over its run), corrected by the measured clock against its maximum, discounted when the
//! temperature trend predicts throttling soon, and penalised for under-voltage (unstable, not
//! just slow). Pure: telemetry and results in, estimates out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bramble_wire::{Telemetry, ThrottleFlags};

/// Weight of a new observation in the EWMAs.
const ALPHA: f64 = 0.3;
/// The firmware starts throttling at 80 °C (`pi-deploy-wire.md` §A6).
const THROTTLE_C: f64 = 80.0;
/// Throttling predicted further ahead than this is ignored.
const HORIZON_S: f64 = 30.0;
/// Speed expected once throttling starts (a Pi 4 settles around 0.75–0.9 of f_max).
const THROTTLED_RATIO: f64 = 0.8;
/// Under-voltage makes a Pi unreliable as well as slow.
const UNDERVOLT_PENALTY: f64 = 1.5;
/// Clock changes remembered per worker; an item that started before the oldest one is
/// assumed to have run at the oldest clock until then.
const CLOCK_MARKS: usize = 64;

/// From `at` on, the clock ran at `ratio` of its maximum; `integral` is the clock ratio
/// integrated over time (ratio-seconds) from the first mark to `at`.
#[derive(Clone, Copy, Debug)]
struct ClockMark {
    at: Instant,
    integral: f64,
    ratio: f64,
}

/// What the scheduler knows about one worker's speed.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpeedEstimate {
    /// EWMA of milliseconds per successful item, scaled to full clock.
    full_clock_ms: Option<f64>,
    /// Latest measured clock / maximum clock (1.0 when the worker has no clock sensor).
    clock_ratio: Option<f64>,
    /// When the clock ratio changed, for the mean clock over an item's run.
    clock_marks: VecDeque<ClockMark>,
    /// Latest temperature and when it came.
    temp: Option<(Instant, f64)>,
    /// EWMA of the temperature slope, °C per second.
    slope: f64,
    undervolt: bool,
}

impl SpeedEstimate {
    pub(crate) fn observe_telemetry(&mut self, now: Instant, t: &Telemetry) {
        self.clock_ratio = match (t.arm_clock, t.arm_max) {
            (Some(f), Some(max)) if max.0 > 0 => {
                Some((f64::from(f.0) / f64::from(max.0)).clamp(0.05, 1.5))
            }
            _ => None,
        };
        self.mark_clock(now);
        if let Some(c) = t.cpu_temp.map(|m| m.celsius()) {
            if let Some((at, prev)) = self.temp {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                if dt > 0.05 {
                    self.slope = (1.0 - ALPHA) * self.slope + ALPHA * (c - prev) / dt;
                }
            }
            self.temp = Some((now, c));
        }
        self.undervolt = t.throttle.is_some_and(|f| {
            f.now(ThrottleFlags::UNDER_VOLTAGE) || f.occurred(ThrottleFlags::UNDER_VOLTAGE)
        });
    }

    /// Notes a change of the clock ratio at `now` (nothing when it did not change).
    fn mark_clock(&mut self, now: Instant) {
        let ratio = self.clock_ratio.unwrap_or(1.0);
        let integral = match self.clock_marks.back() {
            Some(m) if (m.ratio - ratio).abs() < 1e-9 => return,
            Some(m) => m.integral + m.ratio * now.saturating_duration_since(m.at).as_secs_f64(),
            None => 0.0,
        };
        if self.clock_marks.len() == CLOCK_MARKS {
            self.clock_marks.pop_front();
        }
        self.clock_marks.push_back(ClockMark {
            at: now,
            integral,
            ratio,
        });
    }

    /// The clock ratio integrated from the first mark to `t` (negative before it).
    fn clock_integral(&self, t: Instant) -> Option<f64> {
        let i = self.clock_marks.partition_point(|m| m.at <= t);
        let m = self.clock_marks.get(i.saturating_sub(1))?;
        Some(if t >= m.at {
            m.integral + m.ratio * (t - m.at).as_secs_f64()
        } else {
            m.integral - m.ratio * (m.at - t).as_secs_f64()
        })
    }

    /// The mean clock ratio over `from..to`; the latest one for an instant or without marks.
    fn mean_clock_ratio(&self, from: Instant, to: Instant) -> f64 {
        let latest = self.clock_ratio.unwrap_or(1.0);
        let span = to.saturating_duration_since(from).as_secs_f64();
        match (self.clock_integral(from), self.clock_integral(to)) {
            (Some(a), Some(b)) if span > 1e-3 => ((b - a) / span).clamp(0.05, 1.5),
            _ => latest,
        }
    }

    /// A successful item took `ms` on this worker and ended at `ended`.
    pub(crate) fn observe_item(&mut self, ms: u64, ended: Instant) {
        // Normalise to full clock by the clock it ran at (a change of clock while it ran
        // counts for the part of the run it covered), so it is not counted twice later.
        let started = ended
            .checked_sub(Duration::from_millis(ms))
            .unwrap_or(ended);
        let full = ms.max(1) as f64 * self.mean_clock_ratio(started, ended);
        self.full_clock_ms = Some(match self.full_clock_ms {
            Some(old) => (1.0 - ALPHA) * old + ALPHA * full,
            None => full,
        });
    }

    /// Milliseconds per item at full clock, if any item was observed.
    pub(crate) fn full_clock_ms(&self) -> Option<f64> {
        self.full_clock_ms
    }

    /// Expected milliseconds for the next item; `fallback` (full-clock ms) stands in while
    /// nothing was observed here.
    pub(crate) fn expected_ms(&self, fallback: f64) -> f64 {
        let base = self.full_clock_ms.unwrap_or(fallback);
        let mut ratio = self.clock_ratio.unwrap_or(1.0);
        if let Some(t) = self.seconds_to_throttle() {
            // The closer throttling is, the more of its slowdown to expect.
            let near = 1.0 - (t / HORIZON_S).clamp(0.0, 1.0);
            ratio *= 1.0 - near * (1.0 - THROTTLED_RATIO);
        }
        let ms = base / ratio.max(0.05);
        if self.undervolt {
            ms * UNDERVOLT_PENALTY
        } else {
            ms
        }
    }

    /// Seconds until the temperature reaches the throttle point at the current trend, if it
    /// is below it and rising.
    pub(crate) fn seconds_to_throttle(&self) -> Option<f64> {
        let (_, c) = self.temp?;
        (c < THROTTLE_C && self.slope > 0.01).then(|| (THROTTLE_C - c) / self.slope)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bramble_wire::{Megahertz, MilliCelsius};

    use super::*;

    fn telemetry(mhz: u32, max: u32, temp_c: f64, throttle: u32) -> Telemetry {
        Telemetry {
            arm_clock: Some(Megahertz(mhz)),
            arm_max: Some(Megahertz(max)),
            cpu_temp: Some(MilliCelsius((temp_c * 1000.0) as i32)),
            throttle: Some(ThrottleFlags(throttle)),
            ..Telemetry::default()
        }
    }

    #[test]
    fn observed_time_scales_with_the_measured_clock() {
        let now = crate::test_clock::epoch();
        let mut s = SpeedEstimate::default();
        s.observe_telemetry(now, &telemetry(1500, 1500, 50.0, 0));
        s.observe_item(100, now + Duration::from_millis(100));
        assert!((s.expected_ms(1.0) - 100.0).abs() < 1e-9);
        // The firmware halves the clock: twice the time, before any slow result arrives.
        s.observe_telemetry(
            now + Duration::from_secs(1),
            &telemetry(750, 1500, 50.0, 0x6),
        );
        assert!((s.expected_ms(1.0) - 200.0).abs() < 1e-9);
        // A result taken at half clock does not move the full-clock estimate.
        s.observe_item(200, now + Duration::from_secs(3));
        assert!((s.full_clock_ms().unwrap() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn an_item_is_normalised_by_the_clock_over_its_whole_run() {
        let now = crate::test_clock::epoch();
        let mut s = SpeedEstimate::default();
        s.observe_telemetry(now, &telemetry(1500, 1500, 70.0, 0));
        for i in 1..10 {
            // Unchanged clock: no new mark.
            s.observe_telemetry(
                now + Duration::from_secs(i),
                &telemetry(1500, 1500, 75.0, 0),
            );
        }
        assert_eq!(s.clock_marks.len(), 1);
        s.observe_telemetry(
            now + Duration::from_secs(10),
            &telemetry(750, 1500, 81.0, 0x6),
        );
        // 15 s from 0: 10 s at full clock and 5 s at half, 12.5 s of full-clock work. The
        // clock at the end alone would say 7.5 s.
        s.observe_item(15_000, now + Duration::from_secs(15));
        let full = s.full_clock_ms().unwrap();
        assert!((full - 12_500.0).abs() < 1.0, "{full}");
        // The next item, at half clock all along, is expected to take twice that.
        assert!((s.expected_ms(1.0) - 25_000.0).abs() < 2.0);
        // An item older than every mark counts the oldest clock before it.
        let mut t = SpeedEstimate::default();
        t.observe_telemetry(
            now + Duration::from_secs(10),
            &telemetry(750, 1500, 81.0, 0x6),
        );
        t.observe_item(4_000, now + Duration::from_secs(12));
        assert!((t.full_clock_ms().unwrap() - 2_000.0).abs() < 1.0);
    }

    #[test]
    fn a_rising_temperature_predicts_throttling() {
        let now = crate::test_clock::epoch();
        let mut s = SpeedEstimate::default();
        s.observe_item(100, now);
        for i in 0..10 {
            s.observe_telemetry(
                now + Duration::from_secs(i),
                &telemetry(1500, 1500, 70.0 + i as f64, 0),
            );
        }
        let t = s.seconds_to_throttle().unwrap();
        assert!(t > 0.5 && t < 10.0, "{t}");
        assert!(s.expected_ms(1.0) > 110.0, "{}", s.expected_ms(1.0));
        let mut cool = SpeedEstimate::default();
        cool.observe_item(100, now);
        cool.observe_telemetry(now, &telemetry(1500, 1500, 45.0, 0));
        assert_eq!(cool.seconds_to_throttle(), None);
    }

    #[test]
    fn under_voltage_is_penalised_even_when_past() {
        let mut s = SpeedEstimate::default();
        s.observe_item(100, crate::test_clock::epoch());
        s.observe_telemetry(
            crate::test_clock::epoch(),
            &telemetry(1500, 1500, 50.0, 0x10000),
        );
        assert!((s.expected_ms(1.0) - 150.0).abs() < 1e-9);
    }

    #[test]
    fn machines_without_sensors_use_observations_only() {
        let mut s = SpeedEstimate::default();
        s.observe_telemetry(crate::test_clock::epoch(), &Telemetry::default());
        assert!((s.expected_ms(42.0) - 42.0).abs() < 1e-9);
        s.observe_item(300, crate::test_clock::epoch() + Duration::from_secs(1));
        assert!((s.expected_ms(42.0) - 300.0).abs() < 1e-9);
    }
}
