//! A minimal hand-driven AMQP client, for sending what real clients never
//! would: bad headers, oversized or broken frames, methods out of order.

use std::net::SocketAddr;
use std::time::Duration;

use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame};
use amq_protocol::protocol::{channel, connection, AMQPClass};
use amq_protocol::types::FieldTable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub async fn tcp(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.expect("tcp connect"),
            buf: Vec::new(),
        }
    }

    /// Handshake as guest on "/" with the given heartbeat; returns an open connection.
    pub async fn open(addr: SocketAddr, heartbeat: u16) -> Raw {
        let mut raw = Raw::tcp(addr).await;
        raw.send_bytes(b"AMQP\x00\x00\x09\x01").await;
        match raw.recv().await {
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(_)))) => {
            }
            other => panic!("expected connection.start, got {other:?}"),
        }
        raw.send(AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: "\0guest\0guest".into(),
                locale: "en_US".into(),
            })),
        ))
        .await;
        let tune = match raw.recv().await {
            Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(t)))) => t,
            other => panic!("expected connection.tune, got {other:?}"),
        };
        raw.send(AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat,
            })),
        ))
        .await;
        raw.send(AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        ))
        .await;
        match raw.recv().await {
            Some(AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)),
            )) => raw,
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
    }

    pub async fn open_channel(&mut self, id: u16) {
        self.send(AMQPFrame::Method(
            id,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ))
        .await;
        match self.recv().await {
            Some(AMQPFrame::Method(ch, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))))
                if ch == id => {}
            other => panic!("expected channel.open-ok, got {other:?}"),
        }
    }

    pub async fn send(&mut self, frame: AMQPFrame) {
        let bytes = cookie_factory::gen_simple(gen_frame(&frame), Vec::new()).expect("encode");
        self.send_bytes(&bytes).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next frame, or None when the server closed the socket (5 s at most).
    pub async fn recv(&mut self) -> Option<AMQPFrame> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if !self.buf.is_empty() {
                    if let Ok((rest, frame)) = parse_frame(self.buf.as_slice()) {
                        let used = self.buf.len() - rest.len();
                        self.buf.drain(..used);
                        return Some(frame);
                    }
                }
                let mut chunk = [0u8; 8192];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .expect("server answered within 5 s")
    }

    /// Reads until a connection.close arrives; returns its reply code.
    pub async fn connection_close_code(&mut self) -> u16 {
        loop {
            match self.recv().await {
                Some(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(c)),
                )) => return c.reply_code,
                Some(_) => continue,
                None => panic!("socket closed without connection.close"),
            }
        }
    }

    /// Reads until a channel.close arrives; returns (channel, reply code).
    pub async fn channel_close_code(&mut self) -> (u16, u16) {
        loop {
            match self.recv().await {
                Some(AMQPFrame::Method(ch, AMQPClass::Channel(channel::AMQPMethod::Close(c)))) => {
                    return (ch, c.reply_code)
                }
                Some(AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(c)),
                )) => {
                    panic!(
                        "connection closed ({}) where a channel close was expected",
                        c.reply_code
                    )
                }
                Some(_) => continue,
                None => panic!("socket closed without channel.close"),
            }
        }
    }
}
