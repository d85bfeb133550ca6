//! Reading the topic: which message queue is read next (in turn, or by
//! priority level), when reads start (fresh messages, requeued ones read
//! back, probes for gets), and what a read brings.

use tokio::time::Instant;

use super::{Event, Task, LONG_POLL, PULL_BATCH, READ_AHEAD, REAP_BATCH, RETRY_AFTER};
use crate::delivery::ledger::Part;
use crate::upstream::{InboundMessage, Pulled, UpstreamError};

impl Task {
    /// A ready message, taking message queues in turn; in a priority queue,
    /// the highest level first, and none while a higher level may hold one
    /// (not read yet, or a requeued message being read back).
    pub(super) fn take_ready(&mut self) -> Option<(i32, InboundMessage, bool)> {
        if self.priority {
            for part in &mut self.parts {
                if let Some((message, redelivered)) = part.take() {
                    return Some((part.id, message, redelivered));
                }
                if part.leased && (!part.looked || !part.redeliver.is_empty()) {
                    return None;
                }
            }
            return None;
        }
        let n = self.parts.len();
        for step in 0..n {
            let index = (self.next_part + step) % n;
            if let Some((message, redelivered)) = self.parts[index].take() {
                self.next_part = (index + 1) % n;
                return Some((self.parts[index].id, message, redelivered));
            }
        }
        None
    }

    /// Starts the reads that are wanted and not yet running.
    pub(super) fn schedule(&mut self) {
        let now = Instant::now();
        let wanted = self.consumers.iter().any(|c| c.credit.has_room());
        let reaps = self.expiry.reaps;
        let (priority, getting) = (self.priority, !self.gets.is_empty());
        for part in self.parts.iter_mut().filter(|p| p.leased) {
            if part.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            part.retry_at = None;
            if !part.redeliver.is_empty() && !part.pulling_again {
                let Some((&from, _)) = part.redeliver.first_key_value() else {
                    continue;
                };
                let last = part.redeliver.keys().next_back().copied().unwrap_or(from);
                let span = ((last - from + 1) as u32).clamp(1, PULL_BATCH);
                part.pulling_again = true;
                let (upstream, topic, id) = (self.upstream.clone(), self.topic.clone(), part.id);
                self.pending.push(Box::pin(async move {
                    let result = upstream.pull(&topic, id, from, span, None).await;
                    Event::Again(id, from, result)
                }));
            }
            let to_expire = reaps && part.fresh.is_empty();
            // A get on a priority queue looks at every level it has not seen.
            let to_look = priority && getting && !part.looked;
            if (wanted || to_expire || to_look)
                && !part.releasing
                && !part.pulling_fresh
                && part.fresh.len() < READ_AHEAD
            {
                part.pulling_fresh = true;
                let batch = if wanted { PULL_BATCH } else { REAP_BATCH };
                // A priority level not looked at yet is read without waiting.
                let wait = (part.looked || !priority).then_some(LONG_POLL);
                let (upstream, topic, id, from) = (
                    self.upstream.clone(),
                    self.topic.clone(),
                    part.id,
                    part.next,
                );
                self.pending.push(Box::pin(async move {
                    let result = upstream.pull(&topic, id, from, batch, wait).await;
                    Event::Fresh(id, result)
                }));
            }
        }
        // Another gateway reads the whole queue: a get finds nothing here.
        if self.leases_known && !self.parts.iter().any(|p| p.leased) {
            for get in self.gets.drain(..) {
                let _ = get.send(Ok(None));
            }
        }
        // A get with nothing buffered reads once, without waiting.
        let nothing_ready = !self.parts.iter().any(Part::has_message);
        let again_coming = self.parts.iter().any(|p| !p.redeliver.is_empty());
        let readable = self.parts.iter().any(|p| p.leased && !p.releasing);
        let probe_due = self.probe_again_at.is_none_or(|t| t <= now);
        if !self.gets.is_empty()
            && nothing_ready
            && !again_coming
            && !self.probing
            && readable
            && probe_due
        {
            self.probe_again_at = None;
            self.probing = true;
            let (upstream, topic) = (self.upstream.clone(), self.topic.clone());
            let from: Vec<(i32, i64)> = self
                .parts
                .iter()
                .filter(|p| p.leased && !p.releasing)
                .map(|p| (p.id, p.next))
                .collect();
            self.pending.push(Box::pin(async move {
                let mut results = Vec::with_capacity(from.len());
                for (id, offset) in from {
                    results.push((
                        id,
                        upstream.pull(&topic, id, offset, PULL_BATCH, None).await,
                    ));
                }
                Event::Probed(results)
            }));
        }
    }

    pub(super) fn accept_fresh(&mut self, id: i32, result: Result<Pulled, UpstreamError>) {
        // A read that finished after its lease went (or the share shrank) is dropped.
        let Some(part) = self
            .parts
            .iter_mut()
            .find(|p| p.id == id && p.leased && !p.releasing)
        else {
            return;
        };
        match result {
            Ok(pulled) => {
                part.max = part.max.max(pulled.max_offset);
                part.accept(pulled.messages);
                // RocketMQ says where the next read starts. Past what it
                // returned, that skips entries it has no message for: the
                // blank ones a topic re-created after a broker restart starts
                // with (its offsets go on from the deleted one's), removed ones.
                if pulled.next_offset > part.next {
                    if pulled.offset_illegal {
                        tracing::warn!(topic = %self.topic, queue_id = id, from = part.next, to = pulled.next_offset, "Read position was outside RocketMQ's log; moved to where it starts.");
                    } else {
                        tracing::debug!(topic = %self.topic, queue_id = id, from = part.next, to = pulled.next_offset, "Skipped entries without a message.");
                    }
                    part.next = pulled.next_offset;
                }
                // A priority level is known once read up to what this
                // gateway stored there (RocketMQ indexes a moment after
                // SEND_OK); until then it is read again without waiting.
                part.looked = !self.priority
                    || self
                        .upstream
                        .written_end(&self.topic)
                        .iter()
                        .all(|(qid, end)| *qid != id || *end <= part.next);
            }
            Err(error) => {
                tracing::warn!(topic = %self.topic, %error, "Reading the queue from RocketMQ failed; retrying.");
                part.retry_at = Some(Instant::now() + RETRY_AFTER);
            }
        }
    }

    /// What arrived while no one read is unknown until each message queue
    /// is read once more (a read already waiting on the broker answers as
    /// soon as anything arrives).
    pub(super) fn look_again(&mut self) {
        for part in self.parts.iter_mut().filter(|p| !p.pulling_fresh) {
            part.looked = false;
        }
    }
}
