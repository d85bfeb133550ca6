//! The consume path: messages read from a queue's RocketMQ topic and handed
//! to consumers, and the acknowledgements that move the queue's read position.
//!
//! ```text
//!  RocketMQ topic ──pull by offset──► feed (one task per queue, feed.rs)
//!                                       │ round-robin over consumers with credit
//!                                       ▼
//!                       connection task (ToConnection, unbounded: credit bounds it)
//!                                       │ basic.deliver frames, batched per write
//!                                       ▼
//!                                    client ── ack / nack / reject ──► feed (Settle)
//! ```
//!
//! A feed commits its queue group's offset only over the contiguous prefix
//! of settled messages, so what was not acknowledged when a gateway dies is
//! read again by the next one (docs/architecture.md, "Consume path").

pub mod credit;
pub mod dead_letter;
pub mod feed;
mod ledger;
pub mod reply_to;

use std::sync::Arc;

use crate::mapping::properties::{unescape_value, EXCHANGE, ROUTING_KEY};

/// The exchange and routing key a stored message was published with.
pub fn origin(message: &InboundMessage) -> (String, String) {
    let read = |key| {
        message
            .property(key)
            .map(unescape_value)
            .unwrap_or_default()
    };
    (read(EXCHANGE), read(ROUTING_KEY))
}

use dashmap::DashMap;
use tokio::sync::mpsc;

pub use credit::{ConsumerCredit, Credit, Gate};
pub use feed::{Feed, FeedCommand, Outcome};

use crate::topology::Vhost;
use crate::upstream::{InboundMessage, Upstream};

/// What a feed sends to a connection task.
#[derive(Debug)]
pub enum ToConnection {
    Deliver(Delivery),
    /// A direct reply-to reply for a channel's reply consumer.
    Reply(Box<reply_to::Reply>),
    /// The queue went away: the consumer is cancelled by the server.
    Cancelled {
        channel: u16,
        epoch: u64,
        consumer_tag: Arc<str>,
    },
}

/// One message for one consumer.
#[derive(Debug)]
pub struct Delivery {
    pub channel: u16,
    pub epoch: u64,
    pub consumer_tag: Arc<str>,
    pub redelivered: bool,
    pub message: InboundMessage,
    /// Where to settle it.
    pub feed: Arc<Feed>,
    /// The credit taken for it, given back when it is settled (or written, for no-ack).
    pub credit: Arc<ConsumerCredit>,
}

pub type ConnectionSink = mpsc::UnboundedSender<ToConnection>;

/// A consumer as a feed sees it.
#[derive(Debug, Clone)]
pub struct ConsumerSlot {
    /// Unique within the gateway.
    pub id: u64,
    pub tag: Arc<str>,
    pub channel: u16,
    pub epoch: u64,
    pub no_ack: bool,
    pub exclusive: bool,
    /// Its x-priority: served before consumers of a lower one.
    pub priority: i64,
    pub credit: Arc<ConsumerCredit>,
    pub sink: ConnectionSink,
}

/// What every feed of a gateway shares.
#[derive(Clone)]
pub struct FeedContext {
    pub upstream: Arc<dyn Upstream>,
    /// Where read leases are kept (meta::lease).
    pub store: meta::Store,
    /// This gateway, as a lease owner.
    pub owner: String,
    /// The gateway, for dead letters (they go through its publish path).
    pub gateway: std::sync::Weak<crate::Gateway>,
    pub clock: crate::clock::Clock,
}

/// The running feeds of this gateway, one per queue topic.
pub struct Feeds {
    context: FeedContext,
    feeds: DashMap<String, Arc<Feed>>,
}

impl std::fmt::Debug for Feeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feeds")
            .field("owner", &self.context.owner)
            .field("feeds", &self.feeds.len())
            .finish()
    }
}

impl Feeds {
    pub fn new(context: FeedContext) -> Feeds {
        Feeds {
            context,
            feeds: DashMap::new(),
        }
    }

    /// The queue's feed, started on first use.
    pub fn get_or_start(&self, vhost: &Arc<Vhost>, queue: &meta::Queue) -> Arc<Feed> {
        self.feeds
            .entry(queue.topic.clone())
            .or_insert_with(|| Feed::start(self.context.clone(), vhost.clone(), queue))
            .clone()
    }

    /// How many feeds run here.
    pub fn len(&self) -> usize {
        self.feeds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.feeds.is_empty()
    }

    /// The queue's feed if one runs here.
    /// Every running feed.
    pub fn all(&self) -> Vec<Arc<Feed>> {
        self.feeds.iter().map(|f| f.value().clone()).collect()
    }

    pub fn get(&self, topic: &str) -> Option<Arc<Feed>> {
        self.feeds.get(topic).map(|f| f.clone())
    }

    /// The gateway shuts down: every feed commits what is settled and gives
    /// its read leases back; resolves when all have.
    pub async fn drain(&self) {
        let feeds: Vec<Arc<Feed>> = self.feeds.iter().map(|f| f.clone()).collect();
        self.feeds.clear();
        let mut answers = Vec::with_capacity(feeds.len());
        for feed in feeds {
            let (done, answer) = tokio::sync::oneshot::channel();
            feed.send(FeedCommand::Drain(done));
            answers.push(answer);
        }
        for answer in answers {
            let _ = answer.await;
        }
    }

    /// The queue is being deleted: its feed cancels its consumers and ends.
    pub fn stop(&self, topic: &str) {
        if let Some((_, feed)) = self.feeds.remove(topic) {
            feed.send(FeedCommand::Stop);
        }
    }
}
