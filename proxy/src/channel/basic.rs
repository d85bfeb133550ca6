//! basic.publish, with mandatory returns and confirms.
//!
//! The publish path: the method opens content assembly; once the body is
//! complete, the bindings are evaluated (routing is decided now, as in
//! RabbitMQ), one RocketMQ message per destination queue is sent, and the
//! sends join the connection's pipeline. Nothing here waits on RocketMQ.

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{basic, AMQPClass};
use std::future::Future;
use std::pin::Pin;

use futures_util::future::join_all;

use super::{Channel, PublishDone, Session};
use crate::codec::content::Content;
use crate::error::{ConnectionException, HardCode, ProtocolError, SoftCode};
use crate::mapping::properties::{
    escape_value, parse_expiration, properties_to_rocketmq, EXCHANGE, MESSAGE_TTL, PROPERTIES,
    ROUTING_KEY,
};
use crate::topology::{priority_level, Access};
use crate::upstream::{OutboundMessage, UpstreamError};

const CLASS: u16 = 60;
const PUBLISH: u16 = 40;

pub fn handle_basic_publish(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: basic::Publish,
) -> Result<(), ProtocolError> {
    if m.immediate {
        return Err(
            ConnectionException::new(HardCode::NotImplemented, "immediate=true")
                .on_method(CLASS, PUBLISH)
                .into(),
        );
    }
    let name = m.exchange.as_str();
    {
        let topology = s.vhost.read();
        if !topology.has_exchange(name) {
            drop(topology);
            return Err(s.channel_error(
                SoftCode::NotFound,
                format!("no exchange '{name}' in vhost '{}'", s.vhost.name),
                CLASS,
                PUBLISH,
            ));
        }
        if topology
            .exchanges
            .get(name)
            .is_some_and(|e| e.record.internal)
        {
            drop(topology);
            return Err(s.channel_error(
                SoftCode::AccessRefused,
                format!(
                    "cannot publish to internal exchange '{name}' in vhost '{}'",
                    s.vhost.name
                ),
                CLASS,
                PUBLISH,
            ));
        }
    }
    s.check(Access::Write, "exchange", name, CLASS, PUBLISH)?;
    ch.content.start(m);
    Ok(())
}

/// A complete message: route it and hand it to RocketMQ (or hold it until
/// tx.commit on a transactional channel).
pub fn publish_content(
    ch: &mut Channel,
    s: &mut Session<'_>,
    content: Content,
) -> Result<(), ProtocolError> {
    if let Some(tx) = ch.tx.as_mut() {
        if !tx.hold(content) {
            return Err(s.channel_error(
                SoftCode::PreconditionFailed,
                format!(
                    "the transaction holds more than {} MiB of uncommitted messages; commit more often",
                    super::tx::MAX_HELD_BYTES >> 20
                ),
                CLASS,
                PUBLISH,
            ));
        }
        return Ok(());
    }
    let send = route(ch, s, content)?;
    let tag = ch.confirms.as_mut().map(|c| c.publish());
    let Some(send) = send else {
        // An unroutable message is confirmed at once, after its return.
        if let (Some(tag), Some(confirms)) = (tag, ch.confirms.as_mut()) {
            confirms.settle(tag, true);
        }
        return Ok(());
    };
    let (channel, epoch) = (ch.id, ch.epoch);
    s.pipeline.push(Box::pin(async move {
        PublishDone {
            channel,
            epoch,
            tag,
            result: send.await,
        }
    }));
    metrics::counter!(crate::metrics::PUBLISHED).increment(1);
    Ok(())
}

/// Resolves once every copy of one published message is stored.
pub type Stored = Pin<Box<dyn Future<Output = Result<(), UpstreamError>> + Send>>;

/// Routes a message now and starts storing one copy per destination queue;
/// None if it reached no queue (a mandatory one is returned first).
pub fn route(
    ch: &mut Channel,
    s: &mut Session<'_>,
    content: Content,
) -> Result<Option<Stored>, ProtocolError> {
    let Content {
        publish,
        properties,
        body,
    } = content;
    let (exchange, routing_key) = (publish.exchange.as_str(), publish.routing_key.as_str());
    let topics = destinations(s, exchange, routing_key, properties.headers().as_ref());
    if topics.is_empty() {
        metrics::counter!(crate::metrics::UNROUTABLE).increment(1);
        if publish.mandatory {
            let ret = basic::Return {
                reply_code: SoftCode::NoRoute.id(),
                reply_text: "NO_ROUTE".into(),
                exchange: publish.exchange.clone(),
                routing_key: publish.routing_key.clone(),
            };
            s.out
                .method(ch.id, AMQPClass::Basic(basic::AMQPMethod::Return(ret)));
            let header = AMQPContentHeader {
                class_id: CLASS,
                body_size: body.len() as u64,
                properties,
            };
            s.out.content(ch.id, header, &body, s.frame_max);
        }
        return Ok(None);
    }
    let ttl = match properties.expiration() {
        Some(text) => Some(parse_expiration(text.as_str()).map_err(|e| {
            ProtocolError::Channel(
                ch.id,
                crate::error::ChannelException::new(SoftCode::PreconditionFailed, e)
                    .on_method(CLASS, PUBLISH),
            )
        })?),
        None => None,
    };
    let stored = properties_to_rocketmq(&properties).map_err(|e| {
        ProtocolError::Channel(
            ch.id,
            crate::error::ChannelException::new(SoftCode::PreconditionFailed, e.to_string())
                .on_method(CLASS, PUBLISH),
        )
    })?;
    let mut props = vec![
        (ROUTING_KEY, escape_value(routing_key)),
        (EXCHANGE, escape_value(exchange)),
    ];
    if let Some(stored) = stored {
        props.push((PROPERTIES, stored));
    }
    if let Some(ttl) = ttl {
        props.push((MESSAGE_TTL, ttl.to_string()));
    }
    let priority = *properties.priority();
    let start = |target: crate::topology::Target, body: bytes::Bytes, properties| -> Stored {
        let message = OutboundMessage {
            topic: target.topic,
            queue_id: priority_level(target.max_priority, priority),
            body,
            properties,
        };
        match target.limit {
            None => s.gateway.upstream.send(message),
            Some(limited) => {
                super::overflow::send_if_room(s.gateway.clone(), s.vhost.clone(), limited, message)
            }
        }
    };
    // Copies for all destinations but the last, which takes the originals
    // (a body copy is a reference count).
    let mut topics = topics;
    let Some(last) = topics.pop() else {
        return Ok(None);
    };
    let mut sends: Vec<Stored> = topics
        .into_iter()
        .map(|target| start(target, body.clone(), props.clone()))
        .collect();
    sends.push(start(last, body, props));
    if sends.len() == 1 {
        return Ok(sends.pop());
    }
    // Every destination is tried (a full queue does not keep the message
    // from the others); the publish is confirmed if every one stored it.
    Ok(Some(Box::pin(async move {
        join_all(sends)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(drop)
    })))
}

/// The RocketMQ topics of the queues a message reaches.
fn destinations(
    s: &Session<'_>,
    exchange: &str,
    routing_key: &str,
    headers: Option<&amq_protocol::types::FieldTable>,
) -> Vec<crate::topology::Target> {
    s.vhost
        .read()
        .destination_topics(exchange, routing_key, headers)
}
