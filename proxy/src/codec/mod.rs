//! Bytes <-> AMQP frames.
//!
//! Frames are cut here (type, channel, size, payload, frame-end) so that
//! frame_max and the frame-end octet are checked with the spec's reply codes
//! and so that body payloads stay `Bytes` slices of the read buffer, never
//! copied. Method and content-header payloads are parsed by amq-protocol.

pub mod content;
pub mod depth;

use amq_protocol::frame::parsing::parse_content_header;
use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{parse_class, AMQPClass};
use bytes::{Buf, Bytes, BytesMut};

use crate::error::{ConnectionException, HardCode};

/// The 8 bytes a client sends first, and the ones we answer a wrong one with.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// type (1) + channel (2) + size (4)
const FRAME_HEADER_SIZE: usize = 7;
/// header + frame-end octet
pub const FRAME_OVERHEAD: usize = 8;
/// The largest frame before tune-ok (the spec's frame-min-size).
pub const FRAME_MIN_SIZE: usize = 4096;

/// A frame as the gateway receives it.
#[derive(Debug)]
pub enum Frame {
    Method(u16, AMQPClass),
    Header(u16, AMQPContentHeader),
    Body(u16, Bytes),
    Heartbeat(u16),
    /// A content header frame that does not parse: 505 where no content
    /// was expected (RabbitMQ looks at the channel's state first), 501
    /// where it was.
    BadHeader(u16),
}

/// Cuts frames out of the read buffer.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Largest frame accepted, overhead included (negotiated in tune).
    pub frame_max: usize,
}

impl FrameDecoder {
    /// Returns the next whole frame, or None when more bytes are needed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, ConnectionException> {
        if buf.len() < FRAME_HEADER_SIZE {
            return Ok(None);
        }
        let kind = buf[0];
        let channel = u16::from_be_bytes([buf[1], buf[2]]);
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
        if size + FRAME_OVERHEAD > self.frame_max {
            return Err(ConnectionException::new(
                HardCode::FrameError,
                format!(
                    "frame of {} bytes exceeds the negotiated frame_max {}",
                    size + FRAME_OVERHEAD,
                    self.frame_max
                ),
            ));
        }
        if buf.len() < size + FRAME_OVERHEAD {
            buf.reserve(size + FRAME_OVERHEAD - buf.len());
            return Ok(None);
        }
        if buf[FRAME_HEADER_SIZE + size] != FRAME_END {
            return Err(ConnectionException::new(
                HardCode::FrameError,
                "frame does not end with 0xCE",
            ));
        }
        buf.advance(FRAME_HEADER_SIZE);
        let payload = buf.split_to(size).freeze();
        buf.advance(1);
        let frame = match kind {
            FRAME_METHOD => Frame::Method(channel, parse_method(&payload)?),
            FRAME_HEADER if depth::header_depth(&payload) > depth::MAX_DEPTH => {
                return Err(too_deep(&payload, "content header"));
            }
            FRAME_HEADER => match parse_content_header(&payload[..]) {
                Ok(([], header)) => Frame::Header(channel, header),
                _ => Frame::BadHeader(channel),
            },
            FRAME_BODY => Frame::Body(channel, payload),
            FRAME_HEARTBEAT => Frame::Heartbeat(channel),
            other => {
                return Err(ConnectionException::new(
                    HardCode::FrameError,
                    format!("unknown frame type {other}"),
                ));
            }
        };
        Ok(Some(frame))
    }
}

/// A payload whose field tables nest deeper than the parser may recurse:
/// 502, as for any malformed argument (depth.rs says why).
fn too_deep(payload: &[u8], what: &str) -> ConnectionException {
    let error = ConnectionException::new(
        HardCode::SyntaxError,
        format!(
            "{what} has field tables nested deeper than {} levels",
            depth::MAX_DEPTH
        ),
    );
    match (payload.get(0..2), payload.get(2..4)) {
        (Some(c), Some(m)) if what == "method" => error.on_method(
            u16::from_be_bytes([c[0], c[1]]),
            u16::from_be_bytes([m[0], m[1]]),
        ),
        _ => error,
    }
}

/// Parses a method payload: unknown class/method ids are 540 NOT_IMPLEMENTED
/// (as RabbitMQ answers them), malformed arguments of a known method 502.
fn parse_method(payload: &[u8]) -> Result<AMQPClass, ConnectionException> {
    if depth::method_depth(payload) > depth::MAX_DEPTH {
        return Err(too_deep(payload, "method"));
    }
    match parse_class(payload) {
        Ok(([], class)) => refuse_prefetch_size(payload, class),
        Ok(_) => Err(ConnectionException::new(
            HardCode::SyntaxError,
            "method frame has trailing bytes",
        )),
        Err(_) if payload.len() < 4 => Err(ConnectionException::new(
            HardCode::FrameError,
            "method frame too short",
        )),
        Err(_) => {
            let class_id = u16::from_be_bytes([payload[0], payload[1]]);
            let method_id = u16::from_be_bytes([payload[2], payload[3]]);
            if is_known_method(class_id, method_id) {
                Err(ConnectionException::new(
                    HardCode::SyntaxError,
                    format!("malformed arguments for method {class_id}.{method_id}"),
                )
                .on_method(class_id, method_id))
            } else {
                Err(ConnectionException::new(
                    HardCode::NotImplemented,
                    format!("unknown method {class_id}.{method_id}"),
                )
                .on_method(class_id, method_id))
            }
        }
    }
}

/// basic.qos with a prefetch_size is 540 NOT_IMPLEMENTED, as in RabbitMQ
/// (amq-protocol's parser drops the field, so it is read off the payload:
/// class, method, then prefetch_size as the first argument).
fn refuse_prefetch_size(
    payload: &[u8],
    class: AMQPClass,
) -> Result<AMQPClass, ConnectionException> {
    const BASIC_QOS: [u8; 4] = [0, 60, 0, 10];
    let size = match (payload.get(..4), payload.get(4..8)) {
        (Some(ids), Some(size)) if ids == BASIC_QOS => {
            u32::from_be_bytes([size[0], size[1], size[2], size[3]])
        }
        _ => 0,
    };
    if size == 0 {
        return Ok(class);
    }
    Err(ConnectionException::new(
        HardCode::NotImplemented,
        format!("prefetch_size!=0 ({size})"),
    )
    .on_method(60, 10))
}

fn is_known_method(class_id: u16, method_id: u16) -> bool {
    let methods: &[u16] = match class_id {
        10 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71],
        20 => &[10, 11, 20, 21, 40, 41],
        30 => &[10, 11],
        40 => &[10, 11, 20, 21, 30, 31, 40, 51],
        50 => &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51],
        60 => &[
            10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
        ],
        85 => &[10, 11],
        90 => &[10, 11, 20, 21, 30, 31],
        _ => &[],
    };
    methods.contains(&method_id)
}

/// Appends frames to a connection's output buffer. The socket takes what
/// it can; `written` marks how far, so a slow reader never blocks encoding.
#[derive(Debug, Default)]
pub struct FrameEncoder {
    out: Vec<u8>,
    written: usize,
}

impl FrameEncoder {
    pub fn method(&mut self, channel: u16, method: AMQPClass) {
        self.frame(&AMQPFrame::Method(channel, method));
    }

    pub fn heartbeat(&mut self) {
        self.out
            .extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
    }

    /// A content header then the body cut into frames of at most `frame_max`.
    pub fn content(
        &mut self,
        channel: u16,
        header: AMQPContentHeader,
        body: &[u8],
        frame_max: usize,
    ) {
        self.frame(&AMQPFrame::Header(channel, header));
        self.body(channel, body, frame_max);
    }

    /// A content header whose property flags and list are already encoded
    /// (as stored in RocketMQ), then the body: no parsing per delivery.
    pub fn content_raw(
        &mut self,
        channel: u16,
        class_id: u16,
        properties_wire: &[u8],
        body: &[u8],
        frame_max: usize,
    ) {
        let size = 2 + 2 + 8 + properties_wire.len();
        self.out.push(FRAME_HEADER);
        self.out.extend_from_slice(&channel.to_be_bytes());
        self.out.extend_from_slice(&(size as u32).to_be_bytes());
        self.out.extend_from_slice(&class_id.to_be_bytes());
        self.out.extend_from_slice(&0u16.to_be_bytes());
        self.out
            .extend_from_slice(&(body.len() as u64).to_be_bytes());
        self.out.extend_from_slice(properties_wire);
        self.out.push(FRAME_END);
        self.body(channel, body, frame_max);
    }

    fn body(&mut self, channel: u16, body: &[u8], frame_max: usize) {
        let chunk = frame_max.saturating_sub(FRAME_OVERHEAD).max(1);
        for part in body.chunks(chunk) {
            self.out.push(FRAME_BODY);
            self.out.extend_from_slice(&channel.to_be_bytes());
            self.out
                .extend_from_slice(&(part.len() as u32).to_be_bytes());
            self.out.extend_from_slice(part);
            self.out.push(FRAME_END);
        }
    }

    /// Appends bytes that already are whole frames.
    pub fn raw(&mut self, frames: &[u8]) {
        self.out.extend_from_slice(frames);
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.out.len() - self.written
    }

    /// The socket took `n` more of the pending bytes.
    pub fn advance(&mut self, n: usize) {
        self.written = (self.written + n).min(self.out.len());
        if self.written == self.out.len() {
            self.clear();
        }
    }

    fn frame(&mut self, frame: &AMQPFrame) {
        let out = std::mem::take(&mut self.out);
        // Writing into a Vec cannot fail; keep the buffer if it somehow does.
        self.out = match cookie_factory::gen_simple(gen_frame(frame), out) {
            Ok(out) => out,
            Err(error) => {
                tracing::error!(?error, "Frame encoding failed.");
                Vec::new()
            }
        };
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes not yet written.
    pub fn pending(&self) -> &[u8] {
        &self.out[self.written..]
    }

    pub fn clear(&mut self) {
        self.out.clear();
        self.written = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::channel;

    fn encoded(method: AMQPClass) -> Vec<u8> {
        let mut e = FrameEncoder::default();
        e.method(3, method);
        e.pending().to_vec()
    }

    #[test]
    fn round_trips_a_method_and_waits_for_partial_frames() {
        let bytes = encoded(AMQPClass::Channel(channel::AMQPMethod::Open(
            channel::Open {},
        )));
        let decoder = FrameDecoder { frame_max: 4096 };
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert!(decoder.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&bytes[bytes.len() - 1..]);
        match decoder.decode(&mut buf).unwrap() {
            Some(Frame::Method(3, AMQPClass::Channel(channel::AMQPMethod::Open(_)))) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn raw_content_parses_back_as_the_same_header_and_body() {
        use amq_protocol::protocol::basic::{gen_properties, AMQPProperties};
        let properties = AMQPProperties::default()
            .with_content_type("text/plain".into())
            .with_priority(3);
        let wire = cookie_factory::gen_simple(gen_properties(&properties), Vec::new()).unwrap();
        let mut e = FrameEncoder::default();
        e.content_raw(7, 60, &wire, &[9u8; 10], 12);
        let decoder = FrameDecoder { frame_max: 4096 };
        let mut buf = BytesMut::from(e.pending());
        match decoder.decode(&mut buf).unwrap() {
            Some(Frame::Header(7, h)) => {
                assert_eq!((h.class_id, h.body_size), (60, 10));
                assert_eq!(h.properties, properties);
            }
            other => panic!("unexpected {other:?}"),
        }
        // frame_max 12 leaves 4 body bytes per frame: 4 + 4 + 2.
        let mut sizes = Vec::new();
        while let Some(frame) = decoder.decode(&mut buf).unwrap() {
            match frame {
                Frame::Body(7, b) => sizes.push(b.len()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(sizes, [4, 4, 2]);
    }

    #[test]
    fn bad_frames_get_the_spec_codes() {
        let decoder = FrameDecoder { frame_max: 4096 };
        let mut bad_end = BytesMut::from(
            &encoded(AMQPClass::Channel(channel::AMQPMethod::Open(
                channel::Open {},
            )))[..],
        );
        let last = bad_end.len() - 1;
        bad_end[last] = 0;
        assert_eq!(
            decoder.decode(&mut bad_end).unwrap_err().code,
            HardCode::FrameError
        );

        let mut too_big = BytesMut::from(&[FRAME_BODY, 0, 1, 0, 1, 0, 0][..]);
        assert_eq!(
            decoder.decode(&mut too_big).unwrap_err().code,
            HardCode::FrameError
        );

        let mut unknown =
            BytesMut::from(&[FRAME_METHOD, 0, 1, 0, 0, 0, 4, 0, 99, 0, 1, FRAME_END][..]);
        assert_eq!(
            decoder.decode(&mut unknown).unwrap_err().code,
            HardCode::NotImplemented
        );

        // queue.declare (50.10) cut short: known method, bad arguments.
        let mut short =
            BytesMut::from(&[FRAME_METHOD, 0, 1, 0, 0, 0, 5, 0, 50, 0, 10, 0, FRAME_END][..]);
        assert_eq!(
            decoder.decode(&mut short).unwrap_err().code,
            HardCode::SyntaxError
        );
    }

    #[test]
    fn body_frames_are_slices_of_the_read_buffer() {
        let decoder = FrameDecoder { frame_max: 4096 };
        let mut buf =
            BytesMut::from(&[FRAME_BODY, 0, 1, 0, 0, 0, 3, b'a', b'b', b'c', FRAME_END][..]);
        match decoder.decode(&mut buf).unwrap() {
            Some(Frame::Body(1, body)) => assert_eq!(&body[..], b"abc"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[cfg(test)]
mod robustness {
    use super::content::ContentAssembler;
    use super::*;
    use proptest::prelude::*;

    /// Feeds bytes to the decoder and content assembler like a connection
    /// does; any outcome but a panic is acceptable.
    fn feed(bytes: &[u8], split: usize) {
        let decoder = FrameDecoder { frame_max: 4096 };
        let mut assembler = ContentAssembler::default();
        let mut buf = BytesMut::new();
        for chunk in [
            &bytes[..split.min(bytes.len())],
            &bytes[split.min(bytes.len())..],
        ] {
            buf.extend_from_slice(chunk);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(Frame::Method(
                        _,
                        AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Publish(p)),
                    ))) => assembler.start(p),
                    Ok(Some(Frame::Header(ch, h))) => {
                        let _ = assembler.header(ch, h, 1 << 20);
                    }
                    Ok(Some(Frame::Body(_, b))) => {
                        let _ = assembler.body(b);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    fn valid_frames() -> Vec<u8> {
        let mut e = FrameEncoder::default();
        e.method(
            1,
            AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Publish(
                amq_protocol::protocol::basic::Publish {
                    exchange: "ex".into(),
                    routing_key: "k".into(),
                    mandatory: true,
                    immediate: false,
                },
            )),
        );
        let header = AMQPContentHeader {
            class_id: 60,
            body_size: 5,
            properties: Default::default(),
        };
        e.content(1, header, b"hello", 4096);
        e.pending().to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), split in 0usize..512) {
            feed(&bytes, split);
        }

        #[test]
        fn mutated_valid_frames_never_panic(flips in proptest::collection::vec((0usize..64, any::<u8>()), 1..6), split in 0usize..64) {
            let mut bytes = valid_frames();
            for (at, value) in flips {
                let i = at % bytes.len();
                bytes[i] = value;
            }
            feed(&bytes, split);
        }
    }
}
