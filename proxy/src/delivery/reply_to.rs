//! Direct reply-to (`amq.rabbitmq.reply-to`), as RabbitMQ has it: a channel
//! consumes the pseudo-queue with no-ack; a request it publishes with
//! `reply_to: amq.rabbitmq.reply-to` carries `amq.rabbitmq.reply-to.<token>`
//! instead; a reply published to the default exchange with that routing key
//! goes straight to the consumer, never stored. (Spring AMQP's
//! RabbitTemplate uses it for every RPC call by default.)
//!
//! Tokens name this gateway and a random key: a reply published through
//! another gateway is unroutable (docs/mapping.md).

use std::sync::Arc;

use amq_protocol::protocol::BasicProperties;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use dashmap::DashMap;

use super::{ConnectionSink, ToConnection};

/// The pseudo-queue a requester consumes.
pub const QUEUE: &str = "amq.rabbitmq.reply-to";
/// What a reply's routing key starts with.
pub const PREFIX: &str = "amq.rabbitmq.reply-to.";

/// A reply on its way to its requester's channel.
#[derive(Debug)]
pub struct Reply {
    pub channel: u16,
    pub epoch: u64,
    pub consumer_tag: Arc<str>,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Bytes,
}

#[derive(Debug)]
struct Requester {
    sink: ConnectionSink,
    channel: u16,
    epoch: u64,
    consumer_tag: Arc<str>,
}

/// The reply consumers of this gateway, by token.
#[derive(Debug, Default)]
pub struct Replies {
    requesters: DashMap<String, Requester>,
}

impl Replies {
    /// Registers a channel's reply consumer; returns its token.
    pub fn register(
        &self,
        instance: &str,
        sink: ConnectionSink,
        channel: u16,
        epoch: u64,
        consumer_tag: Arc<str>,
    ) -> String {
        let key: [u8; 16] = rand::random();
        let token = format!("{instance}.{}", URL_SAFE_NO_PAD.encode(key));
        self.requesters.insert(
            token.clone(),
            Requester {
                sink,
                channel,
                epoch,
                consumer_tag,
            },
        );
        token
    }

    pub fn forget(&self, token: &str) {
        self.requesters.remove(token);
    }

    /// Whether `name` (a full reply-to queue name) has its consumer here.
    pub fn exists(&self, name: &str) -> bool {
        name.strip_prefix(PREFIX)
            .is_some_and(|token| self.requesters.contains_key(token))
    }

    /// Hands a reply to its requester; false when there is none (gone, or
    /// never here): the reply is unroutable.
    pub fn send(&self, routing_key: &str, properties: &BasicProperties, body: &Bytes) -> bool {
        let Some(token) = routing_key.strip_prefix(PREFIX) else {
            return false;
        };
        let Some(requester) = self.requesters.get(token) else {
            return false;
        };
        let reply = Reply {
            channel: requester.channel,
            epoch: requester.epoch,
            consumer_tag: requester.consumer_tag.clone(),
            routing_key: routing_key.to_owned(),
            properties: properties.clone(),
            body: body.clone(),
        };
        requester
            .sink
            .send(ToConnection::Reply(Box::new(reply)))
            .is_ok()
    }
}
