//! A minimal AMQP 0-9-1 client for load generation: the handshake and a few
//! methods through amq-protocol (via the gateway's codec), and publishes as
//! pre-encoded frames with only the timestamp patched in. A general client
//! (lapin) costs about as much CPU per message as the servers measured here;
//! this one costs a copy of the frames.

use std::io;
use std::sync::OnceLock;
use std::time::Instant;

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::protocol::{channel, confirm, connection, exchange, queue, AMQPClass};
use amq_protocol::types::{FieldTable, LongString, ShortString};
use bytes::BytesMut;
use proxy::codec::{Frame, FrameDecoder, FrameEncoder, PROTOCOL_HEADER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The one channel every bench connection uses.
pub const CHANNEL: u16 = 1;
const FRAME_MAX: u32 = 131_072;

/// Nanoseconds since the first call in this process: what message bodies
/// carry, so that any task of the bench can compute end-to-end latency.
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The publish time stamped into the first 8 bytes of a body, if any.
pub fn stamp_of(body: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(body.get(..8)?.try_into().ok()?))
}

fn protocol(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

pub struct Wire {
    stream: TcpStream,
    read: BytesMut,
    decoder: FrameDecoder,
    out: FrameEncoder,
}

impl Wire {
    /// Connects as guest/guest to vhost "/" and opens channel 1.
    pub async fn connect(addr: &str) -> io::Result<Wire> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut wire = Wire {
            stream,
            read: BytesMut::with_capacity(256 * 1024),
            decoder: FrameDecoder {
                frame_max: FRAME_MAX as usize,
            },
            out: FrameEncoder::default(),
        };
        wire.stream.write_all(PROTOCOL_HEADER).await?;
        wire.expect_method(0).await?; // connection.start
        wire.out.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: ShortString::from("PLAIN"),
                response: LongString::from("\0guest\0guest"),
                locale: ShortString::from("en_US"),
            })),
        );
        wire.flush().await?;
        let AMQPClass::Connection(connection::AMQPMethod::Tune(tune)) =
            wire.expect_method(0).await?
        else {
            return Err(protocol("expected connection.tune"));
        };
        wire.out.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: FRAME_MAX.min(if tune.frame_max == 0 {
                    FRAME_MAX
                } else {
                    tune.frame_max
                }),
                heartbeat: 0,
            })),
        );
        wire.call(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: ShortString::from("/"),
            })),
        )
        .await?;
        wire.call(
            CHANNEL,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await?;
        Ok(wire)
    }

    pub fn method(&mut self, method: AMQPClass) {
        self.out.method(CHANNEL, method);
    }

    /// Appends raw, already encoded frames.
    pub fn raw(&mut self, frames: &[u8]) {
        self.out.raw(frames);
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(self.out.pending()).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends a method and waits for the answer on the same channel.
    pub async fn call(&mut self, channel: u16, method: AMQPClass) -> io::Result<AMQPClass> {
        self.out.method(channel, method);
        self.flush().await?;
        self.expect_method(channel).await
    }

    async fn expect_method(&mut self, channel: u16) -> io::Result<AMQPClass> {
        loop {
            if let Frame::Method(ch, m) = self.next().await? {
                if ch == channel {
                    return Ok(m);
                }
            }
        }
    }

    /// The next frame, reading as needed.
    pub async fn next(&mut self) -> io::Result<Frame> {
        loop {
            if let Some(frame) = self.try_next()? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// A frame already read, if any: never waits. The server closing the
    /// connection or the channel is an error: a bench run cannot go on.
    pub fn try_next(&mut self) -> io::Result<Option<Frame>> {
        let frame = self
            .decoder
            .decode(&mut self.read)
            .map_err(|e| protocol(format!("{e:?}")))?;
        match &frame {
            Some(Frame::Method(_, AMQPClass::Connection(connection::AMQPMethod::Close(c)))) => {
                Err(protocol(format!(
                    "connection closed by the server: {} {}",
                    c.reply_code, c.reply_text
                )))
            }
            Some(Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(c)))) => {
                Err(protocol(format!(
                    "channel closed by the server: {} {}",
                    c.reply_code, c.reply_text
                )))
            }
            _ => Ok(frame),
        }
    }

    /// Reads whatever the socket has (waits for at least one byte).
    pub async fn fill(&mut self) -> io::Result<()> {
        if self.stream.read_buf(&mut self.read).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    pub async fn declare_queue(&mut self, name: &str) -> io::Result<()> {
        self.call(
            CHANNEL,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: name.into(),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await
        .map(drop)
    }

    pub async fn delete_queue(&mut self, name: &str) -> io::Result<()> {
        self.call(
            CHANNEL,
            AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                queue: name.into(),
                if_unused: false,
                if_empty: false,
                nowait: false,
            })),
        )
        .await
        .map(drop)
    }

    pub async fn declare_fanout(&mut self, name: &str) -> io::Result<()> {
        self.call(
            CHANNEL,
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: name.into(),
                kind: "fanout".into(),
                passive: false,
                durable: true,
                auto_delete: false,
                internal: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await
        .map(drop)
    }

    pub async fn bind(&mut self, queue: &str, exchange: &str) -> io::Result<()> {
        self.call(
            CHANNEL,
            AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: queue.into(),
                exchange: exchange.into(),
                routing_key: "".into(),
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await
        .map(drop)
    }

    pub async fn confirm_select(&mut self) -> io::Result<()> {
        self.call(
            CHANNEL,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
        )
        .await
        .map(drop)
    }

    /// basic.qos then basic.consume with acks.
    pub async fn consume(&mut self, queue: &str, prefetch: u16) -> io::Result<()> {
        self.call(
            CHANNEL,
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: prefetch,
                global: false,
            })),
        )
        .await?;
        self.call(
            CHANNEL,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: queue.into(),
                consumer_tag: "".into(),
                no_local: false,
                no_ack: false,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await
        .map(drop)
    }

    pub fn ack_up_to(&mut self, tag: u64) {
        self.method(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: tag,
            multiple: true,
        })));
    }

    pub async fn close(mut self) -> io::Result<()> {
        self.out.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: 200,
                reply_text: "bench done".into(),
                class_id: 0,
                method_id: 0,
            })),
        );
        self.flush().await?;
        // Deliveries still in flight may come first; close-ok ends it.
        loop {
            match self.next().await {
                Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)))) => {
                    return Ok(())
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The frames of one persistent publish, encoded once; `stamp` writes the
/// send time into the body in place.
pub struct PublishFrames {
    bytes: Vec<u8>,
    stamp_at: usize,
}

impl PublishFrames {
    /// `size` is at least 8, the stamp's room.
    pub fn new(exchange: &str, routing_key: &str, size: usize) -> PublishFrames {
        let size = size.max(8);
        let mut enc = FrameEncoder::default();
        enc.method(
            CHANNEL,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                mandatory: false,
                immediate: false,
            })),
        );
        let header = AMQPContentHeader {
            class_id: 60,
            body_size: size as u64,
            properties: AMQPProperties::default().with_delivery_mode(2),
        };
        enc.content(CHANNEL, header, &vec![b'x'; size], FRAME_MAX as usize);
        let bytes = enc.pending().to_vec();
        // The body frame is last: its payload starts 7 bytes into it.
        let stamp_at = bytes.len() - 1 - size;
        PublishFrames { bytes, stamp_at }
    }

    pub fn stamped(&mut self, now: u64) -> &[u8] {
        self.bytes[self.stamp_at..self.stamp_at + 8].copy_from_slice(&now.to_le_bytes());
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_frames_parse_back_with_the_stamp_in_the_body() {
        let mut frames = PublishFrames::new("ex", "rk", 1024);
        let mut buf = BytesMut::from(frames.stamped(0x0102_0304_0506_0708));
        let decoder = FrameDecoder {
            frame_max: FRAME_MAX as usize,
        };
        let Some(Frame::Method(CHANNEL, AMQPClass::Basic(basic::AMQPMethod::Publish(p)))) =
            decoder.decode(&mut buf).unwrap()
        else {
            panic!("publish first")
        };
        assert_eq!((p.exchange.as_str(), p.routing_key.as_str()), ("ex", "rk"));
        let Some(Frame::Header(CHANNEL, header)) = decoder.decode(&mut buf).unwrap() else {
            panic!("header second")
        };
        assert_eq!(header.body_size, 1024);
        assert_eq!(header.properties.delivery_mode(), &Some(2));
        let Some(Frame::Body(CHANNEL, body)) = decoder.decode(&mut buf).unwrap() else {
            panic!("body third")
        };
        assert_eq!(body.len(), 1024);
        assert_eq!(stamp_of(&body), Some(0x0102_0304_0506_0708));
        assert!(buf.is_empty());
        // Stamping again changes only the stamp.
        let again = frames.stamped(7).to_vec();
        assert_eq!(stamp_of(&again[again.len() - 1 - 1024..]), Some(7));
    }
}
