//! Handing ready messages out: to consumers with credit, in turn, then to
//! waiting basic.get. Consumers come first, as in RabbitMQ, where a message
//! published to a queue with a ready consumer is delivered at once and a
//! later get finds nothing.

use super::{Got, Outcome, Task};
use crate::delivery::ledger::Part;
use crate::delivery::{Delivery, ToConnection};

impl Task {
    /// Hands ready messages to consumers with credit, then to waiting gets.
    pub(super) fn dispatch(&mut self) {
        self.reap();
        self.serve_consumers();
        self.serve_gets();
    }

    fn serve_gets(&mut self) {
        while !self.gets.is_empty() {
            let Some((id, message, redelivered)) = self.take_live(false) else {
                break;
            };
            // What this gateway stored is known without asking RocketMQ: a
            // message queue not read since is counted up to there.
            let written = self.upstream.written_end(&self.topic);
            let remaining = self
                .parts
                .iter()
                .filter(|p| p.leased)
                .map(|p| {
                    let end = written.iter().find(|(q, _)| *q == p.id).map(|(_, e)| *e);
                    p.unread(end.unwrap_or(p.max))
                })
                .sum::<u64>();
            let Some(reply) = self.gets.pop_front() else {
                break;
            };
            let offset = message.offset;
            if let Some(part) = self.parts.iter_mut().find(|p| p.id == id) {
                part.handed_out(offset);
            }
            let got = Got {
                message,
                redelivered,
                remaining: remaining.min(u64::from(u32::MAX)) as u32,
            };
            if let Err(Ok(Some(got))) = reply.send(Ok(Some(got))) {
                // The asking channel went away: put it back.
                self.settle(vec![(id, got.message.offset)], Outcome::Unsent);
            }
        }
    }

    fn serve_consumers(&mut self) {
        if self.consumers.is_empty() {
            return;
        }
        loop {
            if !self.parts.iter().any(Part::has_message) {
                return;
            }
            let Some(index) = self.consumer_with_credit() else {
                return;
            };
            let Some((id, message, redelivered)) = self.take_live(true) else {
                self.consumers[index].credit.release(1);
                return;
            };
            let consumer = &self.consumers[index];
            let offset = message.offset;
            let delivery = Delivery {
                channel: consumer.channel,
                epoch: consumer.epoch,
                consumer_tag: consumer.tag.clone(),
                redelivered,
                message,
                feed: self.feed.clone(),
                credit: consumer.credit.clone(),
            };
            let no_ack = consumer.no_ack;
            let size = delivery.message.footprint();
            let in_transit = consumer.credit.gate.in_transit.clone();
            in_transit.fetch_add(size, std::sync::atomic::Ordering::AcqRel);
            if let Some(part) = self.parts.iter_mut().find(|p| p.id == id) {
                if !no_ack {
                    part.handed_out(offset);
                }
            }
            if let Err(returned) = consumer.sink.send(ToConnection::Deliver(delivery)) {
                // Its connection is gone: drop the consumer, keep the message.
                let ToConnection::Deliver(delivery) = returned.0 else {
                    continue;
                };
                in_transit.fetch_sub(size, std::sync::atomic::Ordering::AcqRel);
                let consumer = self.consumers.remove(index);
                tracing::debug!(tag = %consumer.tag, "Consumer's connection is gone; removed.");
                if let Some(part) = self.parts.iter_mut().find(|p| p.id == id) {
                    part.outstanding.remove(&offset);
                    let at = part
                        .again
                        .partition_point(|(a, _)| a.offset < delivery.message.offset);
                    part.again.insert(at, (delivery.message, redelivered));
                }
            } else if no_ack {
                self.commit_soon();
            }
        }
    }

    /// The next consumer that may take one more message (its credit is
    /// taken): of the highest x-priority that has room, in round-robin
    /// order within it.
    pub(super) fn consumer_with_credit(&mut self) -> Option<usize> {
        let priorities = self.consumers.iter().map(|c| c.priority);
        let (low, high) = (priorities.clone().min()?, priorities.max()?);
        if low == high {
            return self.next_with_credit(None);
        }
        let mut levels: Vec<i64> = self.consumers.iter().map(|c| c.priority).collect();
        levels.sort_unstable_by(|a, b| b.cmp(a));
        levels.dedup();
        levels
            .into_iter()
            .find_map(|level| self.next_with_credit(Some(level)))
    }

    /// Round robin over the consumers (of one priority) for one with credit.
    fn next_with_credit(&mut self, level: Option<i64>) -> Option<usize> {
        let n = self.consumers.len();
        for step in 0..n {
            let index = (self.next_consumer + step) % n;
            let consumer = &self.consumers[index];
            if level.is_none_or(|p| consumer.priority == p) && consumer.credit.try_take() {
                self.next_consumer = (index + 1) % n;
                return Some(index);
            }
        }
        None
    }
}
