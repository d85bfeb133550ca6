//! Message TTL: a message expires when it reaches the head of its queue
//! (as in RabbitMQ), by the queue's x-message-ttl or its own expiration,
//! and is dead-lettered or dropped.

use std::time::Duration;

use tokio::time::Instant;

use super::{gateway_gone, Event, Task};
use crate::delivery::dead_letter;
use crate::mapping::properties::MESSAGE_TTL;
use crate::upstream::InboundMessage;

/// How a queue's messages expire (x-message-ttl, per-message expiration).
#[derive(Debug, Clone, Copy, Default)]
pub struct Expiry {
    /// The queue's x-message-ttl in milliseconds.
    pub queue_ttl: Option<i64>,
    /// The feed reads even without consumers, to expire messages when they
    /// reach the head (and dead-letter them): queues with x-message-ttl or
    /// a dead-letter exchange.
    pub reaps: bool,
    /// x-max-length with drop-head: ready messages above this many leave
    /// from the head.
    pub drop_head_above: Option<u64>,
}

impl Expiry {
    pub fn of(state: &crate::topology::QueueState) -> Expiry {
        Expiry {
            queue_ttl: state.arguments.message_ttl,
            reaps: state.arguments.reaps(),
            drop_head_above: state.arguments.drops_head_above(),
        }
    }

    /// When the message expires (milliseconds since the epoch), if it does.
    pub(super) fn deadline(&self, m: &InboundMessage) -> Option<i64> {
        Some(m.born_ms.saturating_add(self.ttl(m)?))
    }

    /// The message's TTL: the smaller of the queue's and its own.
    fn ttl(&self, m: &InboundMessage) -> Option<i64> {
        let own = m.property(MESSAGE_TTL).and_then(|t| t.parse::<i64>().ok());
        match (self.queue_ttl, own) {
            (Some(q), Some(o)) => Some(q.min(o)),
            (q, o) => q.or(o),
        }
    }

    /// A TTL of 0 means "deliver now to a ready consumer, or drop", as in
    /// RabbitMQ: such a message seen for the first time goes to a consumer
    /// with room; requeued, it expires.
    fn deliverable_now(&self, m: &InboundMessage, redelivered: bool) -> bool {
        !redelivered && self.ttl(m) == Some(0)
    }
}

impl Task {
    /// A ready message that has not expired; expired ones met on the way are
    /// dead-lettered or dropped. For a consumer, a zero-TTL message is live.
    pub(super) fn take_live(&mut self, for_consumer: bool) -> Option<(i32, InboundMessage, bool)> {
        let now = self.clock.now_ms();
        loop {
            let (id, message, redelivered) = self.take_ready()?;
            let zero_ttl_taken = for_consumer && self.expiry.deliverable_now(&message, redelivered);
            match self.expiry.deadline(&message) {
                Some(at) if at <= now && !zero_ttl_taken => self.expire(id, message),
                _ => return Some((id, message, redelivered)),
            }
        }
    }

    /// Expires the messages at the head of each message queue read here
    /// (RabbitMQ expires a message when it reaches the head), and sets the
    /// timer for the next head to expire.
    pub(super) fn reap(&mut self) {
        let now = self.clock.now_ms();
        let mut next: Option<i64> = None;
        let consumer_ready = self.consumers.iter().any(|c| c.credit.has_room());
        for index in 0..self.parts.len() {
            loop {
                let part = &self.parts[index];
                let deadline = match part.head() {
                    // Left for the ready consumer (dispatch runs next).
                    Some((head, redelivered))
                        if consumer_ready && self.expiry.deliverable_now(head, redelivered) =>
                    {
                        None
                    }
                    Some((head, _)) if part.leased => self.expiry.deadline(head),
                    _ => None,
                };
                match deadline {
                    Some(at) if at <= now => {
                        let id = self.parts[index].id;
                        if let Some((message, _)) = self.parts[index].take() {
                            self.expire(id, message);
                        }
                    }
                    Some(at) => {
                        next = Some(next.map_or(at, |n| n.min(at)));
                        break;
                    }
                    None => break,
                }
            }
        }
        self.expire_at =
            next.map(|at| Instant::now() + Duration::from_millis((at - now).max(0) as u64));
        self.drop_head();
    }

    /// x-max-length with drop-head: while more messages are ready (read or
    /// not, in the message queues read here) than the limit, the oldest
    /// one read leaves, dead-lettered with reason maxlen or dropped.
    fn drop_head(&mut self) {
        let Some(max) = self.expiry.drop_head_above else {
            return;
        };
        let written = self.upstream.written_end(&self.topic);
        loop {
            let ready: u64 = self
                .parts
                .iter()
                .filter(|p| p.leased)
                .map(|p| {
                    let end = written.iter().find(|(q, _)| *q == p.id).map(|(_, e)| *e);
                    p.unread(end.unwrap_or(p.max))
                })
                .sum();
            if ready <= max {
                return;
            }
            let oldest = self
                .parts
                .iter()
                .enumerate()
                .filter(|(_, p)| p.leased)
                .filter_map(|(i, p)| p.head().map(|(m, _)| (i, m.born_ms, m.offset)))
                .min_by_key(|(_, born, offset)| (*born, *offset));
            // The oldest are not read yet: the next reads bring them.
            let Some((index, _, _)) = oldest else { return };
            let id = self.parts[index].id;
            let Some((message, _)) = self.parts[index].take() else {
                return;
            };
            self.die(id, message, dead_letter::Reason::MaxLen);
        }
    }

    /// An expired message: dead-lettered (it stays outstanding until the
    /// copy is stored) or dropped.
    pub(super) fn expire(&mut self, id: i32, message: InboundMessage) {
        crate::metrics::EXPIRED.increment(1);
        self.die(id, message, dead_letter::Reason::Expired);
    }

    /// A message leaving without delivery (expired, or dropped from the
    /// head of a full queue): dead-lettered with `reason` (it stays
    /// outstanding until the copy is stored) or dropped.
    fn die(&mut self, id: i32, message: InboundMessage, reason: dead_letter::Reason) {
        if let Some(target) = dead_letter::target(&self.vhost, &self.feed.queue) {
            if let Some(part) = self.parts.iter_mut().find(|p| p.id == id) {
                part.handed_out(message.offset);
            }
            let (gateway, vhost, queue) = (
                self.gateway.clone(),
                self.vhost.clone(),
                self.feed.queue.clone(),
            );
            self.pending.push(Box::pin(async move {
                let result = match gateway.upgrade() {
                    Some(gateway) => {
                        dead_letter::republish(&gateway, &vhost, &queue, &message, &target, reason)
                            .await
                    }
                    None => Err(gateway_gone()),
                };
                Event::DeadLettered(id, message.offset, result)
            }));
        }
        self.commit_soon();
    }
}
