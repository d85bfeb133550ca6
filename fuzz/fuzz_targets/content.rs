//! Frames decoded from arbitrary bytes driven through the content
//! assembler the way a channel drives it (basic.publish, then a header,
//! then bodies): every order and size mistake is an error, never a panic,
//! and no body grows past what its header declared.
#![no_main]

use amq_protocol::protocol::{basic, AMQPClass};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proxy::codec::content::ContentAssembler;
use proxy::codec::{Frame, FrameDecoder};

const MAX_BODY: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let decoder = FrameDecoder { frame_max: 131_072 };
    let mut buf = BytesMut::from(data);
    let mut assembler = ContentAssembler::default();
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        let step = match frame {
            Frame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Publish(p))) => {
                assembler.start(p);
                Ok(None)
            }
            Frame::Header(channel, header) => assembler.header(channel, header, MAX_BODY),
            Frame::Body(_, part) => assembler.body(part),
            _ => Ok(None),
        };
        match step {
            Ok(Some(content)) => assert!(content.body.len() as u64 <= MAX_BODY),
            Ok(None) => {}
            Err(_) => assembler.reset(),
        }
    }
});
