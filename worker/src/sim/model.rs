//! The thermal model of a simulated Pi (`pi-deploy-wire.md` §A7): a two-pole RC heating
//! model driven by slot utilisation and clock, and each model's firmware frequency rules with
//! the live and sticky `get_throttled` bits. Pure: `advance(dt, utilisation)` in, readings out.

use bramble_wire::ThrottleFlags;

/// Which firmware frequency rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Firmware {
    /// 3B: full clock below 80 °C, linear to 600 MHz by 85 °C.
    Pi3B,
    /// 3B+: soft limit at 60 °C (1.2 GHz), then like the 3B.
    Pi3BPlus,
    /// 4: DVFS steps 1500 → 1000 → 750 → 600 MHz from 80 °C.
    Pi4,
    /// 5: linear 2400 → 1500 MHz between 80 and 85 °C.
    Pi5,
}

/// One preset: a board with its cooling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Preset {
    pub(crate) name: &'static str,
    pub(crate) firmware: Firmware,
    pub(crate) f_max: f64,
    /// Rise above ambient when idle, and added at full load and full clock (°C).
    pub(crate) dt_idle: f64,
    pub(crate) dt_load: f64,
    /// Time constant of the slow (board, heatsink, case) pole, seconds.
    pub(crate) tau_slow: f64,
    /// Speed at full clock relative to a Pi 5.
    pub(crate) speed: f64,
}

/// The presets of §A7 (ΔT and τ values chosen there to reproduce published observations).
pub(crate) const PRESETS: [Preset; 7] = [
    Preset {
        name: "pi3b-bare",
        firmware: Firmware::Pi3B,
        f_max: 1200.0,
        dt_idle: 20.0,
        dt_load: 70.0,
        tau_slow: 90.0,
        speed: 0.30,
    },
    Preset {
        name: "pi3b-plus-bare",
        firmware: Firmware::Pi3BPlus,
        f_max: 1400.0,
        dt_idle: 20.0,
        dt_load: 60.0,
        tau_slow: 150.0,
        speed: 0.35,
    },
    Preset {
        name: "pi4-bare",
        firmware: Firmware::Pi4,
        f_max: 1500.0,
        dt_idle: 20.0,
        dt_load: 45.0,
        tau_slow: 150.0,
        speed: 0.45,
    },
    Preset {
        name: "pi4-case",
        firmware: Firmware::Pi4,
        f_max: 1500.0,
        dt_idle: 30.0,
        dt_load: 55.0,
        tau_slow: 300.0,
        speed: 0.45,
    },
    Preset {
        name: "pi4-fan",
        firmware: Firmware::Pi4,
        f_max: 1500.0,
        dt_idle: 15.0,
        dt_load: 30.0,
        tau_slow: 600.0,
        speed: 0.45,
    },
    Preset {
        name: "pi5-bare",
        firmware: Firmware::Pi5,
        f_max: 2400.0,
        dt_idle: 25.0,
        dt_load: 70.0,
        tau_slow: 90.0,
        speed: 1.0,
    },
    Preset {
        name: "pi5-cooler",
        firmware: Firmware::Pi5,
        f_max: 2400.0,
        dt_idle: 15.0,
        dt_load: 35.0,
        tau_slow: 60.0,
        speed: 1.0,
    },
];

/// Looks a preset up by name.
pub(crate) fn preset(name: &str) -> Option<Preset> {
    PRESETS.iter().find(|p| p.name == name).copied()
}

const TAU_FAST: f64 = 10.0;
/// Power ∝ f·V², and V falls with f: heat grows about with the square of the clock.
const CLOCK_EXPONENT: f64 = 2.0;
/// The firmware re-evaluates the clock about once a second.
const FIRMWARE_PERIOD: f64 = 1.0;
/// Degrees below a threshold before the firmware raises the clock again.
const HYSTERESIS: f64 = 1.5;

/// A simulated board's thermal state.
#[derive(Clone, Debug)]
pub(crate) struct Model {
    preset: Preset,
    ambient: f64,
    x_fast: f64,
    x_slow: f64,
    /// Current ARM clock, MHz.
    f: f64,
    live: u32,
    sticky: u32,
    /// Seconds since the firmware last chose a clock.
    since_firmware: f64,
}

impl Model {
    /// A board that has been idle for a long time at `ambient` °C.
    pub(crate) fn new(preset: Preset, ambient: f64) -> Self {
        Self {
            preset,
            ambient,
            x_fast: 0.3 * preset.dt_idle,
            x_slow: 0.7 * preset.dt_idle,
            f: preset.f_max,
            live: 0,
            sticky: 0,
            since_firmware: 0.0,
        }
    }

    pub(crate) fn temperature(&self) -> f64 {
        self.ambient + self.x_fast + self.x_slow
    }

    pub(crate) fn clock(&self) -> f64 {
        self.f
    }

    pub(crate) fn f_max(&self) -> f64 {
        self.preset.f_max
    }

    pub(crate) fn throttle(&self) -> ThrottleFlags {
        ThrottleFlags(self.live | self.sticky << ThrottleFlags::STICKY_SHIFT)
    }

    /// Current speed relative to a Pi 5 at full clock.
    pub(crate) fn speed(&self) -> f64 {
        self.preset.speed * self.f / self.preset.f_max
    }

    /// Advances `dt` seconds of simulated time at `utilisation` (busy slots / slots).
    pub(crate) fn advance(&mut self, dt: f64, utilisation: f64) {
        // Euler steps short against the fast pole.
        let mut left = dt;
        while left > 0.0 {
            let h = left.min(0.25);
            left -= h;
            let p = self.preset;
            let ss = p.dt_idle
                + utilisation.clamp(0.0, 1.0) * p.dt_load * (self.f / p.f_max).powf(CLOCK_EXPONENT);
            self.x_fast += h * (0.3 * ss - self.x_fast) / TAU_FAST;
            self.x_slow += h * (0.7 * ss - self.x_slow) / p.tau_slow;
            self.since_firmware += h;
            if self.since_firmware >= FIRMWARE_PERIOD {
                self.since_firmware = 0.0;
                self.firmware();
            }
        }
    }

    /// The firmware's choice of clock: down at once, up only as far as the rules allow at a
    /// temperature HYSTERESIS degrees hotter (so the clock does not flap at a threshold).
    fn firmware(&mut self) {
        let t = self.temperature();
        let (target, bits) = self.rules(t);
        let (cautious, _) = self.rules(t + HYSTERESIS);
        self.f = if target < self.f {
            target
        } else {
            self.f.max(cautious)
        };
        self.live = if self.f >= self.preset.f_max {
            0
        } else if bits != 0 {
            bits
        } else if self.preset.firmware == Firmware::Pi3BPlus && self.f >= 1200.0 {
            ThrottleFlags::SOFT_TEMP_LIMIT
        } else {
            ThrottleFlags::FREQ_CAPPED
        };
        self.sticky |= self.live;
    }

    /// The clock the firmware wants at `t` °C, and the live bits that go with it.
    fn rules(&self, t: f64) -> (f64, u32) {
        let max = self.preset.f_max;
        let capped = ThrottleFlags::FREQ_CAPPED;
        let throttled = ThrottleFlags::FREQ_CAPPED | ThrottleFlags::THROTTLED;
        // Linear from `top` at 80 °C to `floor` at 85 °C.
        let ramp = |top: f64, floor: f64| top - (top - floor) * ((t - 80.0) / 5.0).clamp(0.0, 1.0);
        match self.preset.firmware {
            _ if t >= 85.0 => (self.floor(), throttled),
            Firmware::Pi3BPlus if t < 60.0 => (max, 0),
            Firmware::Pi3BPlus if t < 80.0 => (1200.0, ThrottleFlags::SOFT_TEMP_LIMIT),
            Firmware::Pi3BPlus => (ramp(1200.0, 600.0), capped | ThrottleFlags::SOFT_TEMP_LIMIT),
            _ if t < 80.0 => (max, 0),
            Firmware::Pi3B => (ramp(max, 600.0), capped),
            Firmware::Pi5 => (ramp(max, 1500.0), capped),
            Firmware::Pi4 if t < 82.0 => (1000.0, capped),
            Firmware::Pi4 if t < 83.5 => (750.0, capped),
            Firmware::Pi4 => (600.0, capped),
        }
    }

    /// The clock at and above 85 °C.
    fn floor(&self) -> f64 {
        if self.preset.firmware == Firmware::Pi5 {
            1500.0
        } else {
            600.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a preset at full load for `secs`, returning (°C, MHz) every 10 s.
    fn run(name: &str, ambient: f64, secs: u32) -> Vec<(f64, f64)> {
        let mut m = Model::new(preset(name).unwrap(), ambient);
        (0..secs / 10)
            .map(|_| {
                m.advance(10.0, 1.0);
                (m.temperature(), m.clock())
            })
            .collect()
    }

    #[test]
    fn a_bare_pi4_throttles_within_minutes_and_settles_near_80() {
        let trace = run("pi4-bare", 25.0, 900);
        let first_throttle = trace
            .iter()
            .position(|(_, f)| *f < 1500.0)
            .expect("never throttled");
        assert!(
            (6..=30).contains(&first_throttle),
            "throttled after {}0 s",
            first_throttle
        );
        let (t, _) = trace[trace.len() - 1];
        assert!((78.0..86.0).contains(&t), "settled at {t} °C");
        let avg_f: f64 =
            trace[30..].iter().map(|(_, f)| f).sum::<f64>() / (trace.len() - 30) as f64;
        assert!((1000.0..1500.0).contains(&avg_f), "average clock {avg_f}");
    }

    #[test]
    fn cooled_boards_never_throttle() {
        for name in ["pi5-cooler", "pi4-fan"] {
            let trace = run(name, 25.0, 900);
            assert!(
                trace.iter().all(|(_, f)| *f == preset(name).unwrap().f_max),
                "{name}: {trace:?}"
            );
        }
    }

    #[test]
    fn a_bare_pi5_throttles_but_stays_faster_than_a_pi4() {
        let mut m = Model::new(preset("pi5-bare").unwrap(), 25.0);
        m.advance(600.0, 1.0);
        assert!(m.clock() < 2400.0 && m.clock() >= 1500.0, "{}", m.clock());
        assert!(m.throttle().occurred(ThrottleFlags::FREQ_CAPPED));
        assert!(m.speed() > preset("pi4-bare").unwrap().speed);
    }

    #[test]
    fn the_3b_plus_soft_limit_and_sticky_bits() {
        let mut m = Model::new(preset("pi3b-plus-bare").unwrap(), 25.0);
        m.advance(120.0, 1.0);
        assert_eq!(m.clock(), 1200.0);
        assert!(m.throttle().now(ThrottleFlags::SOFT_TEMP_LIMIT));
        // Idle for a long time: live bits clear, sticky ones stay.
        m.advance(3600.0, 0.0);
        assert_eq!(m.clock(), 1400.0);
        assert!(!m.throttle().now(ThrottleFlags::SOFT_TEMP_LIMIT));
        assert!(m.throttle().occurred(ThrottleFlags::SOFT_TEMP_LIMIT));
    }

    #[test]
    fn ambient_matters() {
        let cool = run("pi4-bare", 20.0, 900);
        let hot = run("pi4-bare", 35.0, 900);
        let avg =
            |t: &[(f64, f64)]| t[30..].iter().map(|(_, f)| f).sum::<f64>() / (t.len() - 30) as f64;
        assert!(
            avg(&hot) < avg(&cool),
            "hot {} vs cool {}",
            avg(&hot),
            avg(&cool)
        );
    }
}
