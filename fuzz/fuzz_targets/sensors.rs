//! Sensor text and firmware mailbox answers. The module is pure and included as it is (the
//! worker is a binary, not a library).
#![no_main]

#[allow(dead_code)]
#[path = "../../worker/src/sensors/parse.rs"]
mod parse;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let _ = parse::millidegrees(&s);
    let _ = parse::khz_to_mhz(&s);
    let _ = parse::vcgencmd_throttled(&s);
    let _ = parse::vcgencmd_clock(&s);
    let _ = parse::undervolt_alarm(&s);
    let mut buf = [0u32; parse::MBOX_WORDS];
    for (word, chunk) in buf.iter_mut().zip(data.chunks(4)) {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        *word = u32::from_le_bytes(w);
    }
    let _ = parse::mailbox_response(&buf, buf[2]);
});
