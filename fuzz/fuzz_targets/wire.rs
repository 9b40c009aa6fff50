//! Every wire message, from one frame body and from a stream of frames split anywhere.
#![no_main]

use bramble_wire::codec::decode_body;
use bramble_wire::{ClientRequest, FrameDecoder, ToClient, ToHost, ToWorker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_body::<ToHost>(data);
    let _ = decode_body::<ToWorker>(data);
    let _ = decode_body::<ClientRequest>(data);
    let _ = decode_body::<ToClient>(data);
    let (a, b) = data.split_at(data.first().map_or(0, |n| usize::from(*n)).min(data.len()));
    let mut frames = FrameDecoder::default();
    frames.push(a);
    while let Ok(Some(_)) = frames.next_msg::<ToHost>() {}
    frames.push(b);
    while let Ok(Some(_)) = frames.next_msg::<ToHost>() {}
    let _ = frames.finish();
});
