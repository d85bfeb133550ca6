//! The only module that talks to RocketMQ. It sees no AMQP types: messages
//! arrive as topic + body + string properties, queues as topic + group.
//!
//! `Upstream` is what the channel layer needs from a message store; the real
//! implementation is `rocketmq::RocketMq`. `null::NullUpstream` confirms at
//! once and keeps messages in memory only: it exists to measure the gateway's
//! own ceiling in benches/ and is never a default.

pub mod batch;
mod clients;
mod gate;
pub mod null;
mod queues;
pub mod reader;
pub mod rocketmq;
mod routes;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

/// One message for one RocketMQ topic.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    pub topic: String,
    /// The message queue of the topic to store it in (a priority queue's
    /// level); None lets the producer choose.
    pub queue_id: Option<i32>,
    pub body: Bytes,
    /// User properties; empty values are never sent (RocketMQ refuses them).
    pub properties: Vec<(&'static str, String)>,
}

/// One stored message, as read back from a queue's topic.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    pub queue_id: i32,
    /// Position in its message queue.
    pub offset: i64,
    /// When it was sent to RocketMQ (the sender's clock, milliseconds since
    /// the epoch): where its time to live counts from.
    pub born_ms: i64,
    pub body: Bytes,
    /// User properties (RocketMQ's own are left out).
    pub properties: Vec<(String, String)>,
}

impl InboundMessage {
    /// Roughly the memory it holds: its body, its properties and their
    /// allocations. Buffers of messages count this, not the body alone, so
    /// that a stalled reader of small messages stays within its bound.
    pub fn footprint(&self) -> usize {
        const FIXED: usize = 128;
        const PER_PROPERTY: usize = 64;
        FIXED
            + self.body.len()
            + self
                .properties
                .iter()
                .map(|(k, v)| PER_PROPERTY + k.len() + v.len())
                .sum::<usize>()
    }

    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One message queue of a queue's topic: where its group has read to
/// (committed) and where its log ends (max), both as offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub queue_id: i32,
    pub committed: i64,
    pub max: i64,
}

/// What one read of a message queue returned.
#[derive(Debug, Clone, Default)]
pub struct Pulled {
    /// Messages at or after the offset asked for, in offset order.
    pub messages: Vec<InboundMessage>,
    /// Where the next read should start.
    pub next_offset: i64,
    /// The end of the message queue's log when the broker answered.
    pub max_offset: i64,
    /// The offset asked for is below the log's start (retention removed it)
    /// or past its end.
    pub offset_illegal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// RocketMQ could not be reached or did not answer in time.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// RocketMQ answered, but did not store the message or apply the change.
    #[error("refused: {0}")]
    Refused(String),
    /// The gateway refused the message: its queue is full (x-overflow
    /// reject-publish). A publisher gets a nack; a dead letter is dropped.
    #[error("queue full: {0}")]
    QueueFull(String),
}

impl UpstreamError {
    /// Whether the same request may succeed later: RocketMQ was out of
    /// reach, rather than refusing what was asked or the queue being full.
    pub fn retry_may_help(&self) -> bool {
        matches!(self, UpstreamError::Unavailable(_))
    }
}

pub type UpstreamFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, UpstreamError>> + Send + 'a>>;

/// What the gateway needs from its message store.
pub trait Upstream: Send + Sync + 'static {
    /// Stores one message; resolves once RocketMQ reported it stored.
    /// Many sends may be in flight at once: the future owns what it needs.
    fn send(&self, message: OutboundMessage) -> UpstreamFuture<'static, ()>;

    /// Creates the topic and consumer group that hold one queue, idempotently;
    /// `message_queues` overrides the configured number of message queues
    /// (a priority queue has one per level).
    fn create_queue<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        message_queues: Option<i32>,
    ) -> UpstreamFuture<'a, ()>;

    /// Removes a queue's topic and group (and forgets the topic).
    fn delete_queue<'a>(&'a self, topic: &'a str, group: &'a str) -> UpstreamFuture<'a, ()>;

    /// Drops what this gateway keeps about a topic (routes, send lanes,
    /// stored ends) once its queue is gone, deleted here or elsewhere: no
    /// state grows with every queue ever deleted, and nothing reads it again.
    fn forget_topic(&self, _topic: &str) {}

    /// Messages stored in the topic that the group has not consumed.
    fn backlog<'a>(&'a self, topic: &'a str, group: &'a str) -> UpstreamFuture<'a, u64>;

    /// Moves the group past every stored message; returns how many it skipped.
    fn purge<'a>(&'a self, topic: &'a str, group: &'a str) -> UpstreamFuture<'a, u64>;

    /// Up to `max` messages from the group's read position on the topic,
    /// without moving it.
    fn peek<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        max: u32,
    ) -> UpstreamFuture<'a, Vec<InboundMessage>>;

    /// The topic's message queues with the group's read position on each.
    fn partitions<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> UpstreamFuture<'a, Vec<Partition>>;

    /// Up to `max` messages of one message queue from `offset` on. With
    /// `wait`, an empty read is held by the broker for up to that long and
    /// answered as soon as a message arrives (long polling).
    fn pull<'a>(
        &'a self,
        topic: &'a str,
        queue_id: i32,
        offset: i64,
        max: u32,
        wait: Option<std::time::Duration>,
    ) -> UpstreamFuture<'a, Pulled>;

    /// Moves the group's read position on one message queue to `offset`.
    fn commit<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        queue_id: i32,
        offset: i64,
    ) -> UpstreamFuture<'a, ()>;

    /// Per message queue of the topic, where its log ends as far as this
    /// gateway's own stored sends tell: a message confirmed by RocketMQ is
    /// readable a moment later, and a read or count made in between must
    /// not miss it.
    fn written_end(&self, _topic: &str) -> Vec<(i32, i64)> {
        Vec::new()
    }

    /// The largest message body the store accepts.
    fn max_message_size(&self) -> u64;
}
