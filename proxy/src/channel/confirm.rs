//! Publisher confirms: delivery tags, and acks coalesced with `multiple`.
//!
//! RocketMQ answers sends in any order. A tag is acked once RocketMQ stored
//! the message; acks are held until every lower tag is settled so that one
//! basic.ack with multiple=true covers a whole run. A failed send is nacked at
//! once, on its own.

use std::collections::BTreeSet;

use amq_protocol::protocol::{basic, confirm, AMQPClass};

use super::Session;
use crate::error::ProtocolError;

#[derive(Debug, Default)]
pub struct Confirms {
    next_tag: u64,
    /// Tags sent to RocketMQ and not yet answered.
    pending: BTreeSet<u64>,
    /// Tags stored but not yet acked to the client.
    stored: BTreeSet<u64>,
}

impl Confirms {
    /// Published and not yet confirmed to the client.
    pub fn unconfirmed(&self) -> usize {
        self.pending.len() + self.stored.len()
    }

    /// The tag of the next published message.
    pub fn publish(&mut self) -> u64 {
        self.next_tag += 1;
        self.pending.insert(self.next_tag);
        self.next_tag
    }

    /// Records RocketMQ's answer; returns a nack to send now, if any.
    pub fn settle(&mut self, tag: u64, stored: bool) -> Option<AMQPClass> {
        if !self.pending.remove(&tag) {
            return None;
        }
        if stored {
            self.stored.insert(tag);
            None
        } else {
            Some(AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: tag,
                multiple: false,
                requeue: false,
            })))
        }
    }

    /// One ack covering every stored tag below the lowest pending one.
    pub fn take_ack(&mut self) -> Option<AMQPClass> {
        let settled_below = self.pending.first().copied().unwrap_or(u64::MAX);
        let covered = self.stored.range(..settled_below).next_back().copied()?;
        let count = self.stored.range(..=covered).count();
        self.stored = self.stored.split_off(&(covered + 1));
        let multiple = count > 1;
        Some(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: covered,
            multiple,
        })))
    }

    pub fn unsettled(&self) -> usize {
        self.pending.len()
    }
}

pub fn handle_confirm_select(
    ch: &mut super::Channel,
    s: &mut Session<'_>,
    m: confirm::Select,
) -> Result<(), ProtocolError> {
    if ch.tx.is_some() {
        return Err(s.channel_error(
            crate::error::SoftCode::PreconditionFailed,
            "cannot switch from tx to confirm mode".into(),
            85,
            10,
        ));
    }
    if ch.confirms.is_none() {
        ch.confirms = Some(Confirms::default());
    }
    if !m.nowait {
        s.out.method(
            ch.id,
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(m: Option<AMQPClass>) -> Option<(u64, bool)> {
        match m {
            Some(AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => Some((a.delivery_tag, a.multiple)),
            None => None,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn out_of_order_answers_are_coalesced_behind_the_lowest_pending() {
        let mut c = Confirms::default();
        let tags: Vec<u64> = (0..5).map(|_| c.publish()).collect();
        assert_eq!(tags, vec![1, 2, 3, 4, 5]);
        assert!(c.settle(3, true).is_none());
        assert!(c.settle(2, true).is_none());
        assert_eq!(ack(c.take_ack()), None, "tag 1 still pending");
        c.settle(1, true);
        assert_eq!(ack(c.take_ack()), Some((3, true)));
        assert_eq!(ack(c.take_ack()), None);
        c.settle(5, true);
        assert_eq!(ack(c.take_ack()), None);
        assert!(
            matches!(c.settle(4, false), Some(AMQPClass::Basic(basic::AMQPMethod::Nack(n))) if n.delivery_tag == 4)
        );
        assert_eq!(ack(c.take_ack()), Some((5, false)));
        assert_eq!(c.unsettled(), 0);
        assert!(c.settle(4, true).is_none(), "a tag is settled once");
    }
}
