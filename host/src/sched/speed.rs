//! Each worker's *current effective speed*, as the `thermal` policy sees it: observed time per
//! item (an EWMA, normalised to full clock), corrected by the measured clock against its
//! maximum, discounted when the temperature trend predicts throttling soon, and penalised for
//! under-voltage (unstable, not just slow). Pure: telemetry and results in, estimates out.

use std::time::Instant;

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

/// What the scheduler knows about one worker's speed.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpeedEstimate {
    /// EWMA of milliseconds per successful item, scaled to full clock.
    full_clock_ms: Option<f64>,
    /// Latest measured clock / maximum clock (1.0 when the worker has no clock sensor).
    clock_ratio: Option<f64>,
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

    /// A successful item took `ms` on this worker.
    pub(crate) fn observe_item(&mut self, ms: u64) {
        // Normalise to full clock, so a change of clock later is not counted twice.
        let full = ms.max(1) as f64 * self.clock_ratio.unwrap_or(1.0);
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
        let now = crate::sched::tests::epoch();
        let mut s = SpeedEstimate::default();
        s.observe_telemetry(now, &telemetry(1500, 1500, 50.0, 0));
        s.observe_item(100);
        assert!((s.expected_ms(1.0) - 100.0).abs() < 1e-9);
        // The firmware halves the clock: twice the time, before any slow result arrives.
        s.observe_telemetry(
            now + Duration::from_secs(1),
            &telemetry(750, 1500, 50.0, 0x6),
        );
        assert!((s.expected_ms(1.0) - 200.0).abs() < 1e-9);
        // A result taken at half clock does not move the full-clock estimate.
        s.observe_item(200);
        assert!((s.full_clock_ms().unwrap() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn a_rising_temperature_predicts_throttling() {
        let now = crate::sched::tests::epoch();
        let mut s = SpeedEstimate::default();
        s.observe_item(100);
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
        cool.observe_item(100);
        cool.observe_telemetry(now, &telemetry(1500, 1500, 45.0, 0));
        assert_eq!(cool.seconds_to_throttle(), None);
    }

    #[test]
    fn under_voltage_is_penalised_even_when_past() {
        let mut s = SpeedEstimate::default();
        s.observe_item(100);
        s.observe_telemetry(
            crate::sched::tests::epoch(),
            &telemetry(1500, 1500, 50.0, 0x10000),
        );
        assert!((s.expected_ms(1.0) - 150.0).abs() < 1e-9);
    }

    #[test]
    fn machines_without_sensors_use_observations_only() {
        let mut s = SpeedEstimate::default();
        s.observe_telemetry(crate::sched::tests::epoch(), &Telemetry::default());
        assert!((s.expected_ms(42.0) - 42.0).abs() < 1e-9);
        s.observe_item(300);
        assert!((s.expected_ms(42.0) - 300.0).abs() < 1e-9);
    }
}
