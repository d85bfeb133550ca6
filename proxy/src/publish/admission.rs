//! x-max-length with x-overflow reject-publish / reject-publish-dlx: a
//! message for a full queue is not stored there; the publisher gets a nack
//! (in confirm mode) and, with reject-publish-dlx, the queue's dead-letter
//! exchange gets the message with reason `maxlen`. Other queues the message
//! was routed to still get it, as in RabbitMQ.
//!
//! RabbitMQ's queue process counts exactly; here the count is RocketMQ's
//! (what is stored and not yet read, as for message_count) plus what this
//! gateway admitted and is still storing. It is read again at most every
//! `LOOK_EVERY`, and always before a refusal, so a queue that has room is
//! never refused; publishes through several gateways at once may overshoot
//! the limit by what they store within one look (docs/mapping.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::delivery::dead_letter;
use crate::topology::{Limited, Vhost};
use crate::upstream::{InboundMessage, OutboundMessage, UpstreamError};
use crate::Gateway;

/// How long a count read from RocketMQ is trusted for admissions.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Per topic of a limited queue: what this gateway knows of its length.
#[derive(Debug, Default)]
pub struct Admissions {
    queues: DashMap<String, Arc<Mutex<Tally>>>,
}

#[derive(Debug, Default)]
struct Tally {
    /// Ready messages at the last look.
    counted: u64,
    /// Admitted since the last look.
    admitted: u64,
    looked_at: Option<Instant>,
    /// Admitted and not yet stored (or failed).
    storing: Arc<AtomicU64>,
}

/// An admission: dropping it says the send finished.
#[derive(Debug)]
pub struct Admitted(Arc<AtomicU64>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admissions {
    /// Admits one message to the queue stored in `topic`/`group`, or None if
    /// the queue is full. Admissions to one queue are decided in order.
    pub async fn admit(
        &self,
        gateway: &Gateway,
        topic: &str,
        group: &str,
        max_length: u64,
    ) -> Result<Option<Admitted>, UpstreamError> {
        let tally = match self.queues.get(topic) {
            Some(t) => t.clone(),
            None => self.queues.entry(topic.to_owned()).or_default().clone(),
        };
        let mut t = tally.lock().await;
        let stale = t.looked_at.is_none_or(|at| at.elapsed() >= LOOK_EVERY);
        if stale || t.counted + t.admitted >= max_length {
            let ready = crate::registry::queues::ready_messages(gateway, topic, group).await?;
            // What is still on its way to RocketMQ is not in its count.
            t.counted = ready + t.storing.load(Ordering::Acquire);
            t.admitted = 0;
            t.looked_at = Some(Instant::now());
        }
        if t.counted + t.admitted >= max_length {
            return Ok(None);
        }
        t.admitted += 1;
        t.storing.fetch_add(1, Ordering::AcqRel);
        Ok(Some(Admitted(t.storing.clone())))
    }

    /// Forgets a deleted queue.
    pub fn forget(&self, topic: &str) {
        self.queues.remove(topic);
    }
}

/// Stores `message` in a queue with a length limit if it has room; else
/// refuses it (the publish is nacked) and, with reject-publish-dlx,
/// dead-letters it with reason `maxlen`.
pub fn send_if_room(
    gateway: Arc<Gateway>,
    vhost: Arc<Vhost>,
    limited: Limited,
    message: OutboundMessage,
) -> super::Stored {
    Box::pin(async move {
        let (topic, group) = (message.topic.as_str(), limited.group.as_str());
        let admitted = gateway
            .admissions
            .admit(&gateway, topic, group, limited.rule.max_length)
            .await?;
        let Some(_admitted) = admitted else {
            crate::metrics::REJECTED_FULL.increment(1);
            tracing::debug!(vhost = %vhost.name, queue = %limited.queue, max_length = limited.rule.max_length, "Queue full (x-overflow reject-publish): message refused.");
            if limited.rule.dead_letter {
                dead_letter_refused(&gateway, &vhost, &limited.queue, message).await;
            }
            return Err(UpstreamError::QueueFull(format!(
                "queue '{}' is full (x-max-length {})",
                limited.queue, limited.rule.max_length
            )));
        };
        gateway.upstream.send(message).await
    })
}

async fn dead_letter_refused(
    gateway: &Arc<Gateway>,
    vhost: &Arc<Vhost>,
    queue: &str,
    message: OutboundMessage,
) {
    let Some(target) = dead_letter::target(vhost, queue) else {
        return;
    };
    let refused = InboundMessage {
        queue_id: 0,
        offset: 0,
        born_ms: gateway.clock.now_ms(),
        body: message.body,
        properties: message
            .properties
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
    };
    let reason = dead_letter::Reason::MaxLen;
    if let Err(error) =
        dead_letter::republish(gateway, vhost, queue, &refused, &target, reason).await
    {
        tracing::warn!(vhost = %vhost.name, %queue, %error, "Dead-lettering a message refused by a full queue failed.");
    }
}
