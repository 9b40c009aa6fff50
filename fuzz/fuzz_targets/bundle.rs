//! Bundle files (JSON with PEM inside).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bramble_certs::Bundle::parse(&String::from_utf8_lossy(data));
});
