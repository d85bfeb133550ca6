//! One message queue's ledger: which offsets are read, handed out, waiting
//! to be delivered again or settled, and the rule that decides the
//! committed offset (`settled_below`). No I/O: the feed task (feed.rs) does
//! the reads, writes and commits and tells the ledger what happened; a
//! property test drives it with random sequences and checks that the
//! committed offset never passes a message that was not settled.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tokio::time::Instant;

use super::feed::Outcome;
use crate::upstream::InboundMessage;

/// One message queue of the topic.
#[derive(Debug, Default)]
pub(super) struct Part {
    pub(super) id: i32,
    pub(super) next: i64,
    pub(super) max: i64,
    pub(super) committed: i64,
    pub(super) fresh: VecDeque<InboundMessage>,
    /// Read back for redelivery, with their redelivered flag.
    pub(super) again: VecDeque<(InboundMessage, bool)>,
    pub(super) redeliver: BTreeMap<i64, bool>,
    pub(super) outstanding: BTreeSet<i64>,
    pub(super) pulling_fresh: bool,
    pub(super) pulling_again: bool,
    pub(super) committing: bool,
    pub(super) retry_at: Option<Instant>,
    /// This gateway holds the read lease: only then is it read and committed.
    pub(super) leased: bool,
    /// Beyond this gateway's share: not read further, given back once settled.
    pub(super) releasing: bool,
    /// A read answered since consumers came (priority queues: a lower level
    /// waits until every higher one was looked at).
    pub(super) looked: bool,
}

impl Part {
    pub(super) fn ready(&self) -> usize {
        self.fresh.len() + self.again.len() + self.redeliver.len()
    }

    /// Every offset below this one is settled.
    pub(super) fn settled_below(&self) -> i64 {
        [
            self.outstanding.first().copied(),
            self.redeliver.keys().next().copied(),
            self.again.front().map(|(m, _)| m.offset),
            self.fresh.front().map(|m| m.offset),
            Some(self.next),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.next)
    }

    /// The next message in queue order: requeued messages go back to their
    /// place (lowest offset first, as RabbitMQ puts them back at the head),
    /// so nothing later goes out while an earlier one is being read back.
    pub(super) fn take(&mut self) -> Option<(InboundMessage, bool)> {
        if !self.has_message() {
            return None;
        }
        match self.again.pop_front() {
            Some(again) => Some(again),
            None => self.fresh.pop_front().map(|m| (m, false)),
        }
    }

    /// The message `take` would return, left in place, with its
    /// redelivered flag.
    pub(super) fn head(&self) -> Option<(&InboundMessage, bool)> {
        if !self.has_message() {
            return None;
        }
        match self.again.front() {
            Some((m, redelivered)) => Some((m, *redelivered)),
            None => self.fresh.front().map(|m| (m, false)),
        }
    }

    pub(super) fn has_message(&self) -> bool {
        let pending = self.redeliver.keys().next().copied();
        match self.again.front() {
            Some((m, _)) => pending.is_none_or(|p| m.offset < p),
            None => pending.is_none() && !self.fresh.is_empty(),
        }
    }

    pub(super) fn unread(&self, max: i64) -> u64 {
        (max.max(self.max) - self.next).max(0) as u64 + self.ready() as u64
    }

    /// Nothing handed out or waiting, and all of it committed: the lease can go.
    pub(super) fn idle(&self) -> bool {
        self.redeliver.is_empty() && self.again.is_empty() && self.settled()
    }

    /// Nothing handed out, and committed up to the first message not
    /// settled: another reader could take over from the committed offset
    /// (reading again what was requeued here, and what was acked after it).
    pub(super) fn settled(&self) -> bool {
        self.outstanding.is_empty() && self.settled_below() <= self.committed
    }
}

impl Part {
    /// Messages read from RocketMQ; what is behind the read position (a
    /// read that raced a purge or another read) is dropped.
    pub(super) fn accept(&mut self, messages: Vec<InboundMessage>) {
        for m in messages {
            if m.offset >= self.next {
                self.next = m.offset + 1;
                self.fresh.push_back(m);
            }
        }
    }

    /// A message `take` gave is handed out (to a consumer, a get, or to
    /// dead-lettering): outstanding until settled.
    pub(super) fn handed_out(&mut self, offset: i64) {
        self.outstanding.insert(offset);
    }

    /// A handed-out message was acked, requeued or never sent. (A reject
    /// stays outstanding while it is dead-lettered: `dead_lettered`.)
    pub(super) fn settle(&mut self, offset: i64, outcome: Outcome) {
        match outcome {
            Outcome::Ack | Outcome::Reject => {
                self.outstanding.remove(&offset);
            }
            Outcome::Requeue | Outcome::Unsent => {
                if self.outstanding.remove(&offset) {
                    self.redeliver.insert(offset, outcome == Outcome::Requeue);
                }
            }
        }
    }

    /// The dead-lettered copy of a rejected or expired message is stored
    /// (it is settled), or failed (it is delivered again instead).
    pub(super) fn dead_lettered(&mut self, offset: i64, stored: bool) -> bool {
        let was = self.outstanding.remove(&offset);
        if was && !stored {
            self.redeliver.insert(offset, true);
        }
        was
    }

    /// Requeued messages read back from RocketMQ go back to their place.
    /// Returns false when `from` (the first one asked for) is no longer in
    /// RocketMQ: it is given up.
    pub(super) fn read_back(&mut self, messages: Vec<InboundMessage>, from: i64) -> bool {
        let mut found_from = false;
        for m in messages {
            if let Some(flag) = self.redeliver.remove(&m.offset) {
                found_from |= m.offset == from;
                let at = self.again.partition_point(|(a, _)| a.offset < m.offset);
                self.again.insert(at, (m, flag));
            }
        }
        found_from || self.redeliver.remove(&from).is_none()
    }

    /// The lease went to another gateway: what was read is dropped (it is
    /// read again there from the committed offset).
    pub(super) fn lose_lease(&mut self) {
        self.leased = false;
        self.fresh.clear();
        self.again.clear();
        self.redeliver.clear();
    }

    /// A lease (re)taken: everything starts again from the group's
    /// committed offset.
    pub(super) fn acquired(id: i32, committed: i64, max: i64) -> Part {
        Part {
            id,
            next: committed,
            max,
            committed,
            leased: true,
            ..Part::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[derive(Debug, Clone)]
    enum Step {
        /// RocketMQ returns the next `n` stored messages.
        Read(u8),
        /// A consumer takes the next message.
        Take,
        /// A handed-out message (chosen by index) is settled.
        Settle(u8, Outcome),
        /// Requeued messages are read back (some may be gone: retention).
        ReadBack(bool),
        /// The committed offset catches up with the rule.
        Commit,
        /// The lease is lost and taken again later.
        LoseLease,
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Ack),
            Just(Outcome::Requeue),
            Just(Outcome::Unsent),
            Just(Outcome::Reject),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u8..5).prop_map(Step::Read),
            Just(Step::Take),
            Just(Step::Take),
            (any::<u8>(), outcome()).prop_map(|(i, o)| Step::Settle(i, o)),
            any::<bool>().prop_map(Step::ReadBack),
            Just(Step::Commit),
            Just(Step::LoseLease),
        ]
    }

    fn message(offset: i64) -> InboundMessage {
        InboundMessage {
            queue_id: 0,
            offset,
            born_ms: 0,
            body: bytes::Bytes::new(),
            properties: Vec::new(),
        }
    }

    proptest! {
        /// The committed offset never passes a message that was not
        /// settled (acked, or rejected: dropped or dead-lettered), whatever
        /// the order of reads, deliveries, settlements, read-backs, commits
        /// and lease losses; and every message is delivered until settled.
        #[test]
        fn the_committed_offset_never_passes_an_unsettled_message(
            steps in proptest::collection::vec(step(), 1..200)
        ) {
            const STORED: i64 = 60;
            let mut part = Part::acquired(0, 0, STORED);
            let mut settled: BTreeSet<i64> = BTreeSet::new();
            // Within one lease a settled message is never delivered again
            // (after a lease moves, what was acked above the commit is).
            let mut settled_here: BTreeSet<i64> = BTreeSet::new();
            let mut handed: Vec<i64> = Vec::new();
            for step in steps {
                match step {
                    Step::Read(n) => {
                        let from = part.next;
                        let to = (from + i64::from(n)).min(STORED);
                        part.accept((from..to).map(message).collect());
                    }
                    Step::Take => {
                        if let Some((m, _)) = part.take() {
                            part.handed_out(m.offset);
                            prop_assert!(!settled_here.contains(&m.offset), "a settled message was delivered again");
                            handed.push(m.offset);
                        }
                    }
                    Step::Settle(i, outcome) => {
                        if handed.is_empty() {
                            continue;
                        }
                        let offset = handed.remove(usize::from(i) % handed.len());
                        part.settle(offset, outcome);
                        if matches!(outcome, Outcome::Ack | Outcome::Reject) {
                            settled.insert(offset);
                            settled_here.insert(offset);
                        }
                    }
                    Step::ReadBack(all_there) => {
                        let wanted: Vec<i64> = part.redeliver.keys().copied().collect();
                        if let Some(&from) = wanted.first() {
                            let back = wanted.iter().copied().filter(|o| all_there || *o != from);
                            if !part.read_back(back.map(message).collect(), from) {
                                // Retention took it: nothing can deliver it again.
                                settled.insert(from);
                                settled_here.insert(from);
                            }
                        }
                    }
                    Step::Commit => {
                        part.committed = part.committed.max(part.settled_below());
                    }
                    Step::LoseLease => {
                        part.lose_lease();
                        // Handed-out messages of the old lease are settled
                        // there, if at all; here they are read again.
                        handed.clear();
                        settled_here.clear();
                        part = Part::acquired(0, part.committed, STORED);
                    }
                }
                for offset in 0..part.committed {
                    prop_assert!(
                        settled.contains(&offset),
                        "committed {} passes unsettled offset {}", part.committed, offset
                    );
                }
            }
        }
    }
}
