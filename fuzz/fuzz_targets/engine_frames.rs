//! Frames from a Python engine to its worker. The module is pure and included as it is (the
//! worker is a binary, not a library).
#![no_main]

#[allow(dead_code)]
#[path = "../../worker/src/engine/frames.rs"]
mod frames;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frames::decode(data);
});
