//! Arbitrary bytes through the frame decoder (method, header and body
//! parsing with the nesting-depth guard), before and after tune-ok's
//! frame_max: it answers a frame or an error, never panics or overreads.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proxy::codec::{FrameDecoder, FRAME_MIN_SIZE};

fuzz_target!(|data: &[u8]| {
    for frame_max in [FRAME_MIN_SIZE, 131_072] {
        let decoder = FrameDecoder { frame_max };
        let mut buf = BytesMut::from(data);
        while let Ok(Some(_frame)) = decoder.decode(&mut buf) {}
    }
});
