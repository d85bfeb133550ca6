//! The one publish path: a message is routed through its vhost's bindings
//! now (as RabbitMQ decides routing at publish time), encoded for RocketMQ
//! once, admitted to queues that refuse publishes when full, and stored as
//! one RocketMQ message per destination queue. basic.publish, tx.commit and
//! dead-lettering all publish through `publish`; nothing here waits on
//! RocketMQ (the caller awaits the returned `Stored`).

pub mod admission;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use futures_util::future::join_all;

use crate::mapping::properties::{
    escape_value, parse_expiration, properties_to_rocketmq, without_headers, EXCHANGE, MESSAGE_TTL,
    PROPERTIES, ROUTING_KEY,
};
use crate::metrics::queue_stats::count;
use crate::topology::{priority_level, Target, Vhost};
use crate::upstream::{OutboundMessage, UpstreamError};
use crate::Gateway;

/// Headers of sender-selected distribution.
const CC: &str = "CC";
const BCC: &str = "BCC";

/// Resolves once every copy of one published message is stored.
pub type Stored = Pin<Box<dyn Future<Output = Result<(), UpstreamError>> + Send>>;

/// A message as published: where to, and what.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub properties: &'a BasicProperties,
    pub body: &'a Bytes,
}

/// A message that cannot be stored as it is (406 to a publisher).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unpublishable(pub String);

/// Routes `message` and starts storing one copy per destination queue;
/// None if it reached no queue. Every destination is tried (a full queue
/// does not keep the message from the others); the message is stored when
/// every copy is.
pub fn publish(
    gateway: &Arc<Gateway>,
    vhost: &Arc<Vhost>,
    message: Message<'_>,
) -> Result<Option<Stored>, Unpublishable> {
    publish_except(gateway, vhost, message, &[])
}

/// `publish`, leaving out destination queues whose topic is in `skip`
/// (dead-letter cycles).
pub fn publish_except(
    gateway: &Arc<Gateway>,
    vhost: &Arc<Vhost>,
    message: Message<'_>,
    skip: &[String],
) -> Result<Option<Stored>, Unpublishable> {
    let headers = message.properties.headers().as_ref();
    let extra_keys = sender_selected(headers)?;
    let mut targets = {
        // One key (the common case) is routed without building a list.
        let mut targets = if extra_keys.is_empty() {
            vhost
                .read()
                .destination_topics(message.exchange, &[message.routing_key], headers)
        } else {
            let mut keys = vec![message.routing_key];
            keys.extend(extra_keys.iter().map(String::as_str));
            vhost
                .read()
                .destination_topics(message.exchange, &keys, headers)
        };
        if !skip.is_empty() {
            targets.retain(|t| !skip.contains(&t.topic));
        }
        targets
    };
    if targets.is_empty() {
        return Ok(None);
    }
    // BCC routes but is not delivered (RabbitMQ strips it).
    let without_bcc;
    let message = match headers.filter(|h| h.inner().contains_key(BCC)) {
        Some(_) => {
            without_bcc = without_headers(message.properties, &[BCC]);
            Message {
                properties: &without_bcc,
                ..message
            }
        }
        None => message,
    };
    let properties = encode(&message)?;
    let priority = *message.properties.priority();
    let start = |target: Target, body: Bytes, properties| -> Stored {
        let outbound = OutboundMessage {
            topic: target.topic,
            queue_id: priority_level(target.max_priority, priority),
            body,
            properties,
        };
        match target.limit {
            None => {
                count(&target.stats.publish, 1);
                gateway.upstream.send(outbound)
            }
            Some(limited) => {
                // Counted into the queue only when it took the message.
                let admitted =
                    admission::send_if_room(gateway.clone(), vhost.clone(), limited, outbound);
                Box::pin(async move {
                    let stored = admitted.await;
                    if stored.is_ok() {
                        count(&target.stats.publish, 1);
                    }
                    stored
                })
            }
        }
    };
    // Copies for all destinations but the last, which takes the originals
    // (a body copy is a reference count).
    let Some(last) = targets.pop() else {
        return Ok(None);
    };
    let mut sends: Vec<Stored> = targets
        .into_iter()
        .map(|target| start(target, message.body.clone(), properties.clone()))
        .collect();
    sends.push(start(last, message.body.clone(), properties));
    if sends.len() == 1 {
        return Ok(sends.pop());
    }
    Ok(Some(Box::pin(async move {
        join_all(sends)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(drop)
    })))
}

/// Sender-selected distribution: the routing keys a message's `CC` and
/// `BCC` headers add (arrays of strings; another type is refused, as
/// RabbitMQ refuses it).
fn sender_selected(headers: Option<&FieldTable>) -> Result<Vec<String>, Unpublishable> {
    let Some(headers) = headers else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for name in [CC, BCC] {
        match headers.inner().get(name) {
            None => {}
            Some(AMQPValue::FieldArray(routes)) => {
                keys.extend(routes.as_slice().iter().filter_map(|route| match route {
                    AMQPValue::LongString(key) => Some(key.to_string()),
                    _ => None,
                }))
            }
            Some(other) => {
                return Err(Unpublishable(format!(
                    "invalid message: the {name} header must be an array of strings, not {:?}",
                    other.get_type()
                )))
            }
        }
    }
    Ok(keys)
}

/// The RocketMQ properties of a message: where it was published, its AMQP
/// properties, and its expiration as a TTL.
fn encode(message: &Message<'_>) -> Result<Vec<(&'static str, String)>, Unpublishable> {
    let ttl = match message.properties.expiration() {
        Some(text) => Some(parse_expiration(text.as_str()).map_err(Unpublishable)?),
        None => None,
    };
    let stored =
        properties_to_rocketmq(message.properties).map_err(|e| Unpublishable(e.to_string()))?;
    let mut properties = vec![
        (ROUTING_KEY, escape_value(message.routing_key)),
        (EXCHANGE, escape_value(message.exchange)),
    ];
    if let Some(stored) = stored {
        properties.push((PROPERTIES, stored));
    }
    if let Some(ttl) = ttl {
        properties.push((MESSAGE_TTL, ttl.to_string()));
    }
    Ok(properties)
}
