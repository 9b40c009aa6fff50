//! Raw sensor text and mailbox buffers → typed readings. Pure; tested on real sample contents
//! (`pi-deploy-wire.md` §A). The IO lives in `pi.rs` and `mailbox.rs`.

use bramble_wire::{Megahertz, MilliCelsius, ThrottleFlags};

/// `/sys/class/thermal/thermal_zone*/temp`: millidegrees, e.g. `"48312\n"`.
pub(crate) fn millidegrees(s: &str) -> Option<MilliCelsius> {
    s.trim().parse().ok().map(MilliCelsius)
}

/// cpufreq files (`cpuinfo_max_freq`, …): kHz, e.g. `"1800000\n"`.
pub(crate) fn khz_to_mhz(s: &str) -> Option<Megahertz> {
    s.trim()
        .parse::<u32>()
        .ok()
        .map(|khz| Megahertz(khz / 1000))
}

/// `vcgencmd get_throttled`: `"throttled=0x50005\n"`.
pub(crate) fn vcgencmd_throttled(s: &str) -> Option<ThrottleFlags> {
    let hex = s.trim().strip_prefix("throttled=0x")?;
    u32::from_str_radix(hex, 16).ok().map(ThrottleFlags)
}

/// `vcgencmd measure_clock arm`: `"frequency(48)=1500398464\n"` (Hz; the id is 48 on
/// Pi 4, 0 on Pi 5).
pub(crate) fn vcgencmd_clock(s: &str) -> Option<Megahertz> {
    let (_, hz) = s.trim().split_once(")=")?;
    hz_to_mhz(hz.parse().ok()?)
}

/// hwmon `rpi_volt/in0_lcrit_alarm`: `"1\n"` when under-voltage was seen in the driver's
/// last poll (about 2 s). Only under-voltage is known this way: report it live and sticky.
pub(crate) fn undervolt_alarm(s: &str) -> Option<ThrottleFlags> {
    match s.trim() {
        "0" => Some(ThrottleFlags(0)),
        "1" => Some(ThrottleFlags(
            ThrottleFlags::UNDER_VOLTAGE
                | ThrottleFlags::UNDER_VOLTAGE << ThrottleFlags::STICKY_SHIFT,
        )),
        _ => None,
    }
}

pub(crate) fn hz_to_mhz(hz: u64) -> Option<Megahertz> {
    u32::try_from(hz / 1_000_000)
        .ok()
        .filter(|m| *m > 0)
        .map(Megahertz)
}

/// Firmware property tags (include/soc/bcm2835/raspberrypi-firmware.h).
pub(crate) const TAG_GET_THROTTLED: u32 = 0x0003_0046;
pub(crate) const TAG_GET_CLOCK_MEASURED: u32 = 0x0003_0047;
/// Clock id of the ARM cores.
pub(crate) const CLOCK_ARM: u32 = 3;

/// Words in a mailbox buffer; one tag with up to 8 value words fits easily.
pub(crate) const MBOX_WORDS: usize = 16;

/// A property-interface request: `[size, 0 (request), tag, value size, 0, value…, 0 (end)]`.
pub(crate) fn mailbox_request(tag: u32, value: &[u32]) -> [u32; MBOX_WORDS] {
    let mut buf = [0u32; MBOX_WORDS];
    let n = value.len().min(MBOX_WORDS - 6);
    buf[0] = (MBOX_WORDS * 4) as u32;
    buf[2] = tag;
    buf[3] = (n * 4) as u32;
    buf[5..5 + n].copy_from_slice(&value[..n]);
    buf
}

/// The response values of a tag, if the firmware answered it (bit 31 of the buffer code and
/// of the tag's length word set).
pub(crate) fn mailbox_response(buf: &[u32; MBOX_WORDS], tag: u32) -> Option<&[u32]> {
    const RESPONSE: u32 = 0x8000_0000;
    if buf[1] != RESPONSE || buf[2] != tag || buf[4] & RESPONSE == 0 {
        return None;
    }
    let len = usize::try_from((buf[4] & !RESPONSE) / 4).ok()?;
    buf.get(5..5 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_and_vcgencmd_samples() {
        assert_eq!(millidegrees("48312\n"), Some(MilliCelsius(48_312)));
        assert_eq!(millidegrees("garbage"), None);
        assert_eq!(khz_to_mhz("1800000\n"), Some(Megahertz(1800)));
        assert_eq!(
            vcgencmd_throttled("throttled=0x50005\n"),
            Some(ThrottleFlags(0x50005))
        );
        assert_eq!(
            vcgencmd_throttled("throttled=0x0\n"),
            Some(ThrottleFlags(0))
        );
        assert_eq!(
            vcgencmd_throttled("error=1 error_msg=\"Command not registered\""),
            None
        );
        assert_eq!(
            vcgencmd_clock("frequency(48)=1500398464\n"),
            Some(Megahertz(1500))
        );
        assert_eq!(
            vcgencmd_clock("frequency(0)=2400002048\n"),
            Some(Megahertz(2400))
        );
        assert_eq!(vcgencmd_clock("frequency(48)=0\n"), None);
        assert_eq!(undervolt_alarm("1\n"), Some(ThrottleFlags(0x10001)));
        assert_eq!(undervolt_alarm("0\n"), Some(ThrottleFlags(0)));
    }

    #[test]
    fn mailbox_buffers() {
        let req = mailbox_request(TAG_GET_CLOCK_MEASURED, &[CLOCK_ARM, 0]);
        assert_eq!(&req[..8], &[64, 0, 0x0003_0047, 8, 0, 3, 0, 0]);
        // What the firmware writes back: response code, tag length with bit 31, the values.
        let mut resp = req;
        resp[1] = 0x8000_0000;
        resp[4] = 0x8000_0008;
        resp[6] = 1_500_398_464;
        assert_eq!(
            mailbox_response(&resp, TAG_GET_CLOCK_MEASURED),
            Some(&[3, 1_500_398_464][..])
        );
        assert_eq!(
            mailbox_response(&req, TAG_GET_CLOCK_MEASURED),
            None,
            "not answered"
        );
        let mut err = resp;
        err[1] = 0x8000_0001;
        assert_eq!(
            mailbox_response(&err, TAG_GET_CLOCK_MEASURED),
            None,
            "firmware error"
        );
    }

    /// Bounded fuzz run (CI): every parser, on random text and on mangled real samples.
    #[test]
    fn parsers_never_panic_on_any_text() {
        let samples: [&[u8]; 4] = [
            b"48312\n",
            b"throttled=0x50005\n",
            b"frequency(48)=1500398464\n",
            b"1800000\n",
        ];
        bramble_wire::fuzz::run(&samples, 64, |input| {
            let s = String::from_utf8_lossy(input);
            let _ = millidegrees(&s);
            let _ = khz_to_mhz(&s);
            let _ = vcgencmd_throttled(&s);
            let _ = vcgencmd_clock(&s);
            let _ = undervolt_alarm(&s);
            let mut buf = [0u32; MBOX_WORDS];
            for (word, chunk) in buf.iter_mut().zip(input.chunks(4)) {
                let mut w = [0u8; 4];
                w[..chunk.len()].copy_from_slice(chunk);
                *word = u32::from_le_bytes(w);
            }
            let _ = mailbox_response(&buf, buf[2]);
        });
    }
}
