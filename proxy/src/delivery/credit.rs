//! Prefetch as credit: a feed takes one unit per message it hands to a
//! consumer and the connection gives it back when the message is settled.
//! RabbitMQ 3.x semantics: basic.qos with global=false limits each consumer
//! created afterwards; with global=true it limits the channel as a whole.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

/// A limit (0 = none) and how much of it is used.
#[derive(Debug, Default)]
pub struct Credit {
    limit: AtomicU32,
    used: AtomicU32,
}

impl Credit {
    pub fn new(limit: u32) -> Credit {
        Credit {
            limit: AtomicU32::new(limit),
            used: AtomicU32::new(0),
        }
    }

    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Release);
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Acquire)
    }

    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Acquire)
    }

    pub fn has_room(&self) -> bool {
        let limit = self.limit();
        limit == 0 || self.used() < limit
    }

    /// Takes one unit if the limit allows.
    pub fn try_take(&self) -> bool {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            let limit = self.limit();
            if limit != 0 && used >= limit {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    pub fn release(&self, n: u32) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// Bytes of messages (`InboundMessage::footprint`) handed to a connection
/// and not yet encoded into its output (which itself waits for the socket
/// only up to 1 MiB before the connection takes no more). Bounds a connection's memory whatever its consumers' prefetch
/// (prefetch 0 means unlimited unacked messages, not unlimited buffering).
pub const MAX_IN_TRANSIT: usize = 4 << 20;

/// What stops deliveries regardless of credit.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// channel.flow active=false from the client pauses every consumer of the channel.
    pub paused: Arc<AtomicBool>,
    /// Body bytes on their way to the connection's socket (shared by all its consumers).
    pub in_transit: Arc<AtomicUsize>,
}

impl Gate {
    pub fn open(&self) -> bool {
        !self.paused.load(Ordering::Acquire)
            && self.in_transit.load(Ordering::Acquire) < MAX_IN_TRANSIT
    }
}

/// A consumer's own credit and, with global qos, its channel's.
#[derive(Debug)]
pub struct ConsumerCredit {
    pub own: Credit,
    pub channel: Option<Arc<Credit>>,
    pub gate: Gate,
}

impl ConsumerCredit {
    pub fn new(limit: u32, channel: Option<Arc<Credit>>, gate: Gate) -> Arc<ConsumerCredit> {
        Arc::new(ConsumerCredit {
            own: Credit::new(limit),
            channel,
            gate,
        })
    }

    pub fn has_room(&self) -> bool {
        self.gate.open()
            && self.own.has_room()
            && self.channel.as_ref().is_none_or(|c| c.has_room())
    }

    pub fn try_take(&self) -> bool {
        if !self.gate.open() || !self.own.try_take() {
            return false;
        }
        if let Some(channel) = &self.channel {
            if !channel.try_take() {
                self.own.release(1);
                return false;
            }
        }
        true
    }

    pub fn release(&self, n: u32) {
        self.own.release(n);
        if let Some(channel) = &self.channel {
            channel.release(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_is_never_exceeded_and_released_units_come_back() {
        let channel = Arc::new(Credit::new(3));
        let a = ConsumerCredit::new(2, Some(channel.clone()), Gate::default());
        let b = ConsumerCredit::new(2, Some(channel.clone()), Gate::default());
        assert!(a.try_take() && a.try_take());
        assert!(!a.try_take(), "consumer limit 2");
        assert!(b.try_take());
        assert!(!b.try_take(), "channel limit 3 reached");
        assert_eq!(
            b.own.used(),
            1,
            "a refused take gives back the consumer unit"
        );
        a.release(1);
        assert!(b.try_take());
        assert_eq!(channel.used(), 3);
    }

    #[test]
    fn zero_means_unlimited() {
        let c = ConsumerCredit::new(0, None, Gate::default());
        for _ in 0..10_000 {
            assert!(c.try_take());
        }
        c.release(20_000);
        assert_eq!(c.own.used(), 0);
    }

    #[test]
    fn a_paused_channel_or_a_full_connection_takes_nothing() {
        let gate = Gate::default();
        gate.paused.store(true, Ordering::Release);
        let c = ConsumerCredit::new(0, None, gate.clone());
        assert!(!c.has_room() && !c.try_take());
        gate.paused.store(false, Ordering::Release);
        assert!(c.try_take());
        gate.in_transit.store(MAX_IN_TRANSIT, Ordering::Release);
        assert!(
            !c.try_take(),
            "unlimited prefetch, but the connection's buffer is full"
        );
    }
}
