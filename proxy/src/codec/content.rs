//! basic.publish -> content header -> body frames, as a small state machine
//! per channel, with the spec's error for each wrong step.

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::basic::{AMQPProperties, Publish};
use bytes::{Bytes, BytesMut};

use crate::error::{ChannelException, ConnectionException, HardCode, ProtocolError, SoftCode};

const BASIC_CLASS: u16 = 60;
const BASIC_PUBLISH: u16 = 40;

/// A message whose content has fully arrived.
#[derive(Debug)]
pub struct Content {
    pub publish: Publish,
    pub properties: AMQPProperties,
    pub body: Bytes,
}

#[derive(Debug)]
struct Body {
    publish: Publish,
    properties: AMQPProperties,
    expected: usize,
    parts: Vec<Bytes>,
    received: usize,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    AwaitHeader(Publish),
    // Boxed: with the properties it is several times larger than the others.
    AwaitBody(Box<Body>),
}

#[derive(Debug, Default)]
pub struct ContentAssembler {
    state: State,
}

impl ContentAssembler {
    /// Whether a method frame may arrive now (not in the middle of content).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    pub fn start(&mut self, publish: Publish) {
        self.state = State::AwaitHeader(publish);
    }

    /// Body bytes held for content still arriving.
    pub fn pending(&self) -> usize {
        match &self.state {
            State::AwaitBody(body) => body.received,
            _ => 0,
        }
    }

    /// Drops any half-received content (channel closed).
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    pub fn header(
        &mut self,
        channel: u16,
        header: AMQPContentHeader,
        max_body: u64,
    ) -> Result<Option<Content>, ProtocolError> {
        let State::AwaitHeader(publish) = std::mem::take(&mut self.state) else {
            return Err(unexpected(
                "content header frame without a preceding basic.publish",
            ));
        };
        if header.class_id != BASIC_CLASS {
            return Err(unexpected(&format!(
                "content header for class {} after basic.publish",
                header.class_id
            )));
        }
        if header.body_size > max_body {
            return Err(ProtocolError::Channel(
                channel,
                ChannelException::new(
                    SoftCode::PreconditionFailed,
                    format!(
                        "message size {} is larger than configured max size {max_body}",
                        header.body_size
                    ),
                )
                .on_method(BASIC_CLASS, BASIC_PUBLISH),
            ));
        }
        let expected = header.body_size as usize;
        if expected == 0 {
            return Ok(Some(Content {
                publish,
                properties: header.properties,
                body: Bytes::new(),
            }));
        }
        let body = Body {
            publish,
            properties: header.properties,
            expected,
            parts: Vec::new(),
            received: 0,
        };
        self.state = State::AwaitBody(Box::new(body));
        Ok(None)
    }

    pub fn body(&mut self, part: Bytes) -> Result<Option<Content>, ProtocolError> {
        let State::AwaitBody(body) = &mut self.state else {
            return Err(unexpected("content body frame without a content header"));
        };
        body.received += part.len();
        if body.received > body.expected {
            return Err(ProtocolError::Connection(ConnectionException::new(
                HardCode::FrameError,
                format!(
                    "content body of {} bytes exceeds the {} declared in its header",
                    body.received, body.expected
                ),
            )));
        }
        body.parts.push(part);
        if body.received < body.expected {
            return Ok(None);
        }
        let State::AwaitBody(body) = std::mem::take(&mut self.state) else {
            return Ok(None);
        };
        let Body {
            publish,
            properties,
            parts,
            expected,
            ..
        } = *body;
        Ok(Some(Content {
            publish,
            properties,
            body: join(parts, expected),
        }))
    }
}

/// One frame's body is passed on as is; several are joined once.
fn join(mut parts: Vec<Bytes>, total: usize) -> Bytes {
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut body = BytesMut::with_capacity(total);
    for part in parts {
        body.extend_from_slice(&part);
    }
    body.freeze()
}

fn unexpected(text: &str) -> ProtocolError {
    ProtocolError::Connection(ConnectionException::new(
        HardCode::UnexpectedFrame,
        text.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish() -> Publish {
        Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            mandatory: false,
            immediate: false,
        }
    }

    fn header(size: u64) -> AMQPContentHeader {
        AMQPContentHeader {
            class_id: 60,
            body_size: size,
            properties: AMQPProperties::default(),
        }
    }

    #[test]
    fn assembles_a_body_split_over_frames() {
        let mut a = ContentAssembler::default();
        a.start(publish());
        assert!(a.header(1, header(6), 100).unwrap().is_none());
        assert!(a.body(Bytes::from_static(b"abc")).unwrap().is_none());
        let content = a.body(Bytes::from_static(b"def")).unwrap().unwrap();
        assert_eq!(&content.body[..], b"abcdef");
        assert!(a.is_idle());
    }

    #[test]
    fn empty_body_completes_at_the_header() {
        let mut a = ContentAssembler::default();
        a.start(publish());
        assert!(a.header(1, header(0), 100).unwrap().is_some());
    }

    #[test]
    fn wrong_steps_get_spec_codes() {
        let mut a = ContentAssembler::default();
        match a.body(Bytes::from_static(b"x")) {
            Err(ProtocolError::Connection(e)) => assert_eq!(e.code, HardCode::UnexpectedFrame),
            other => panic!("{other:?}"),
        }
        a.start(publish());
        match a.header(1, header(101), 100) {
            Err(ProtocolError::Channel(1, e)) => assert_eq!(e.code, SoftCode::PreconditionFailed),
            other => panic!("{other:?}"),
        }
        a.start(publish());
        a.header(1, header(2), 100).unwrap();
        match a.body(Bytes::from_static(b"xyz")) {
            Err(ProtocolError::Connection(e)) => assert_eq!(e.code, HardCode::FrameError),
            other => panic!("{other:?}"),
        }
    }
}
