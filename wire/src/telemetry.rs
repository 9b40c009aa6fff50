//! Worker telemetry: temperature, clocks, the Pi firmware's throttle bits, load and memory.
//!
//! Every sensor is optional: a machine reports what it has, and a missing sensor is `None`,
//! never a made-up zero. Fixed-size (no heap), so the worker's telemetry path does not allocate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A temperature in thousandths of a degree Celsius, as Linux thermal zones report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MilliCelsius(pub i32);

impl MilliCelsius {
    /// Degrees Celsius as a float, for display and models.
    pub fn celsius(self) -> f64 {
        f64::from(self.0) / 1000.0
    }
}

/// A clock frequency in MHz.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Megahertz(pub u32);

/// The raw `get_throttled` bitmask of the Raspberry Pi firmware: the low 16 bits are the live
/// state, the high 16 bits the same conditions "has occurred since boot" (sticky).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleFlags(pub u32);

impl ThrottleFlags {
    /// Under-voltage detected now.
    pub const UNDER_VOLTAGE: u32 = 0x1;
    /// ARM frequency capped now (80–85 °C band).
    pub const FREQ_CAPPED: u32 = 0x2;
    /// Throttled now (≥ 85 °C or under-voltage).
    pub const THROTTLED: u32 = 0x4;
    /// Soft temperature limit active now (Pi 3A+/3B+).
    pub const SOFT_TEMP_LIMIT: u32 = 0x8;
    /// Offset of the sticky copy of each live bit.
    pub const STICKY_SHIFT: u32 = 16;

    const NAMES: [(u32, &'static str); 4] = [
        (Self::UNDER_VOLTAGE, "under-voltage"),
        (Self::FREQ_CAPPED, "freq-capped"),
        (Self::THROTTLED, "throttled"),
        (Self::SOFT_TEMP_LIMIT, "soft-limit"),
    ];

    /// True if `bit` (one of the live constants) is set now.
    pub fn now(self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    /// True if `bit` (one of the live constants) has been set since boot.
    pub fn occurred(self, bit: u32) -> bool {
        self.0 & (bit << Self::STICKY_SHIFT) != 0
    }
}

/// Words for the set bits, live first, e.g. `throttled,freq-capped (was: under-voltage)`;
/// `ok` when nothing is or was set.
impl fmt::Display for ThrottleFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut live = Self::NAMES
            .iter()
            .filter(|(b, _)| self.now(*b))
            .map(|(_, n)| *n);
        let mut past = Self::NAMES
            .iter()
            .filter(|(b, _)| self.occurred(*b) && !self.now(*b))
            .map(|(_, n)| *n);
        let mut wrote = false;
        if let Some(first) = live.next() {
            write!(f, "{first}")?;
            for n in live {
                write!(f, ",{n}")?;
            }
            wrote = true;
        }
        if let Some(first) = past.next() {
            if wrote {
                f.write_str(" ")?;
            }
            write!(f, "(was: {first}")?;
            for n in past {
                write!(f, ",{n}")?;
            }
            f.write_str(")")?;
            wrote = true;
        }
        if !wrote {
            f.write_str("ok")?;
        }
        Ok(())
    }
}

/// One telemetry report. Sent at least every second; doubles as the worker's heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Increases by one per report of one worker process; the host keeps the newest.
    pub seq: u64,
    /// CPU (SoC) temperature.
    pub cpu_temp: Option<MilliCelsius>,
    /// The ARM clock as *measured* (not the kernel's requested frequency).
    pub arm_clock: Option<Megahertz>,
    /// The ARM clock's configured maximum.
    pub arm_max: Option<Megahertz>,
    /// Raw firmware throttle bits (Pi only).
    pub throttle: Option<ThrottleFlags>,
    /// 1-minute load average × 1000.
    pub load_milli: Option<u32>,
    /// Available memory, KiB.
    pub mem_available_kib: Option<u64>,
    /// Total memory, KiB.
    pub mem_total_kib: Option<u64>,
    /// Tasks running right now.
    pub running: u16,
    /// Failure of the startup command, if it failed after the latest connect.
    pub startup_error: Option<heapless::String<120>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_words() {
        assert_eq!(ThrottleFlags(0).to_string(), "ok");
        assert_eq!(
            ThrottleFlags(0x50000).to_string(),
            "(was: under-voltage,throttled)"
        );
        assert_eq!(
            ThrottleFlags(0x50005).to_string(),
            "under-voltage,throttled"
        );
        assert_eq!(ThrottleFlags(0x80008).to_string(), "soft-limit");
        assert_eq!(
            ThrottleFlags(0x60002).to_string(),
            "freq-capped (was: throttled)"
        );
    }

    #[test]
    fn throttle_bits() {
        let f = ThrottleFlags(0x50005);
        assert!(f.now(ThrottleFlags::THROTTLED));
        assert!(f.occurred(ThrottleFlags::UNDER_VOLTAGE));
        assert!(!f.now(ThrottleFlags::FREQ_CAPPED));
    }
}
