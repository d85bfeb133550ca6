//! Every metric the gateway counts, in one place, and their export to
//! Prometheus (`endpoint`, RabbitMQ's port 15692).
//!
//! Counters are process-wide statics: counting is one relaxed atomic add,
//! with no lookup by name on the message path, and never a queue or
//! exchange name as a label. What depends on state (queues, connections,
//! channels, backlogs) is read when Prometheus scrapes (`rabbitmq`).
//! `exposition` writes Prometheus' text format.

pub mod endpoint;
mod exposition;
pub mod queue_stats;
mod rabbitmq;
pub mod rates;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

pub use exposition::Exposition;

/// A number that only goes up.
pub struct Counter {
    pub name: &'static str,
    pub help: &'static str,
    value: AtomicU64,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str) -> Counter {
        Counter {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }

    pub fn increment(&self, by: u64) {
        self.value.fetch_add(by, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A number that goes up and down.
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    value: AtomicI64,
}

impl Gauge {
    const fn new(name: &'static str, help: &'static str) -> Gauge {
        Gauge {
            name,
            help,
            value: AtomicI64::new(0),
        }
    }

    pub fn add(&self, by: i64) {
        self.value.fetch_add(by, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// Durations in seconds, in Prometheus' cumulative buckets.
pub struct Histogram {
    pub name: &'static str,
    pub help: &'static str,
    counts: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Upper bounds of the latency buckets, in seconds (1 ms .. 10 s).
pub const BOUNDS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 10.0,
];

impl Histogram {
    const fn new(name: &'static str, help: &'static str) -> Histogram {
        Histogram {
            name,
            help,
            counts: [const { AtomicU64::new(0) }; BOUNDS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn record(&self, took: std::time::Duration) {
        let seconds = took.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|b| seconds <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bound, the total count and the sum in seconds.
    pub fn read(&self) -> ([u64; BOUNDS.len()], u64, f64) {
        let mut cumulative = [0u64; BOUNDS.len()];
        let mut running = 0;
        for (i, c) in self.counts.iter().enumerate() {
            running += c.load(Ordering::Relaxed);
            cumulative[i] = running;
        }
        (
            cumulative,
            self.count.load(Ordering::Relaxed),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

pub static CONNECTIONS_OPENED: Counter = Counter::new(
    "amqp_gateway_connections_opened_total",
    "Client connections accepted.",
);
pub static CONNECTIONS_CLOSED: Counter = Counter::new(
    "amqp_gateway_connections_closed_total",
    "Client connections that ended.",
);
pub static CONNECTIONS_OPEN: Gauge = Gauge::new(
    "amqp_gateway_connections_open",
    "Client connections open now.",
);
pub static CONNECTIONS_REFUSED: Counter = Counter::new(
    "amqp_gateway_connections_refused_total",
    "Clients refused beyond max_connections (530).",
);
pub static CHANNELS_OPENED: Counter =
    Counter::new("amqp_gateway_channels_opened_total", "Channels opened.");
pub static CHANNELS_CLOSED: Counter =
    Counter::new("amqp_gateway_channels_closed_total", "Channels closed.");
pub static QUEUES_DECLARED: Counter = Counter::new(
    "amqp_gateway_queues_declared_total",
    "queue.declare (and API and import declarations) through this gateway.",
);
pub static QUEUES_CREATED: Counter = Counter::new(
    "amqp_gateway_queues_created_total",
    "Queues created through this gateway.",
);
pub static QUEUES_DELETED: Counter = Counter::new(
    "amqp_gateway_queues_deleted_total",
    "Queues deleted through this gateway.",
);
pub static TLS_HANDSHAKES_FAILED: Counter = Counter::new(
    "amqp_gateway_tls_handshakes_failed_total",
    "TLS handshakes of AMQP clients that failed or did not finish in 10 s.",
);
pub static RECLAIMS_FAILED: Counter = Counter::new(
    "amqp_gateway_queue_storage_not_deleted_total",
    "Deleted queues whose RocketMQ topic and group could not be deleted (logged with their names).",
);
pub static PUBLISHED: Counter = Counter::new(
    "amqp_gateway_published_total",
    "Messages published by clients (each of a tx.commit counts).",
);
pub static PUBLISHED_CONFIRM: Counter = Counter::new(
    "amqp_gateway_published_confirm_total",
    "Messages published on channels in confirm mode.",
);
pub static ROUTED: Counter = Counter::new(
    "amqp_gateway_routed_total",
    "Published messages routed to at least one queue.",
);
pub static UNROUTABLE: Counter = Counter::new(
    "amqp_gateway_unroutable_dropped_total",
    "Published messages no queue was bound for, dropped (not mandatory).",
);
pub static UNROUTABLE_RETURNED: Counter = Counter::new(
    "amqp_gateway_unroutable_returned_total",
    "Unroutable mandatory messages returned to the publisher.",
);
pub static CONFIRMED: Counter = Counter::new(
    "amqp_gateway_confirmed_total",
    "Publisher confirms (basic.ack) sent.",
);
pub static SEND_FAILED: Counter = Counter::new(
    "amqp_gateway_send_failed_total",
    "Messages RocketMQ did not store (nacked to confirming publishers).",
);
pub static BLOCKED: Counter = Counter::new(
    "amqp_gateway_connection_blocked_total",
    "Times a connection was blocked (connection.blocked) by backpressure.",
);
pub static UPSTREAM_GATE_CLOSED: Gauge = Gauge::new(
    "amqp_gateway_upstream_gate_closed",
    "1 while no RocketMQ broker accepts connections and requests wait (upstream/gate.rs).",
);
pub static UPSTREAM_GATE_CLOSINGS: Counter = Counter::new(
    "amqp_gateway_upstream_gate_closings_total",
    "Times no RocketMQ broker accepted connections and requests were held.",
);
pub static UPSTREAM_ADMISSION_RETRIES: Counter = Counter::new(
    "amqp_gateway_upstream_admission_retries_total",
    "Sends the RocketMQ client refused to queue and that were tried again.",
);
pub static DELIVERED_CONSUME_MANUAL_ACK: Counter = Counter::new(
    "amqp_gateway_delivered_consume_manual_ack_total",
    "basic.deliver to consumers that acknowledge.",
);
pub static DELIVERED_CONSUME_AUTO_ACK: Counter = Counter::new(
    "amqp_gateway_delivered_consume_auto_ack_total",
    "basic.deliver to no-ack consumers.",
);
pub static DELIVERED_GET_MANUAL_ACK: Counter = Counter::new(
    "amqp_gateway_delivered_get_manual_ack_total",
    "basic.get-ok that must be acknowledged.",
);
pub static DELIVERED_GET_AUTO_ACK: Counter = Counter::new(
    "amqp_gateway_delivered_get_auto_ack_total",
    "basic.get-ok with no-ack.",
);
pub static GET_EMPTY: Counter = Counter::new(
    "amqp_gateway_get_empty_total",
    "basic.get answered get-empty.",
);
pub static REDELIVERED: Counter = Counter::new(
    "amqp_gateway_redelivered_total",
    "Deliveries flagged redelivered.",
);
pub static ACKED: Counter = Counter::new(
    "amqp_gateway_acked_total",
    "Messages acknowledged by clients.",
);
pub static DEAD_LETTERED: Counter = Counter::new(
    "amqp_gateway_dead_lettered_total",
    "Messages republished to a dead-letter exchange.",
);
pub static REDELIVERY_LOST: Counter = Counter::new(
    "amqp_gateway_redelivery_lost_total",
    "Requeued messages no longer in RocketMQ when read again.",
);
pub static EXPIRED: Counter = Counter::new(
    "amqp_gateway_expired_total",
    "Messages expired by TTL at the head of their queue.",
);
pub static REJECTED_FULL: Counter = Counter::new(
    "amqp_gateway_rejected_full_queue_total",
    "Publishes refused by a full queue (x-overflow reject-publish).",
);
pub static GET_EMPTY_UNANSWERED: Counter = Counter::new(
    "amqp_gateway_get_empty_unanswered_total",
    "basic.get answered empty because the queue's reader could not be reached in time.",
);
pub static UPSTREAM_SEND_SECONDS: Histogram = Histogram::new(
    "amqp_gateway_rocketmq_send_seconds",
    "Time from handing a send to the RocketMQ client until it reported the message stored.",
);
pub static UPSTREAM_PULL_SECONDS: Histogram = Histogram::new(
    "amqp_gateway_rocketmq_pull_seconds",
    "Time of one pull from RocketMQ that returned messages or an empty answer at once.",
);

/// Every counter, for the exposition.
pub static COUNTERS: &[&Counter] = &[
    &CONNECTIONS_OPENED,
    &CONNECTIONS_CLOSED,
    &CONNECTIONS_REFUSED,
    &CHANNELS_OPENED,
    &CHANNELS_CLOSED,
    &QUEUES_DECLARED,
    &QUEUES_CREATED,
    &QUEUES_DELETED,
    &RECLAIMS_FAILED,
    &TLS_HANDSHAKES_FAILED,
    &PUBLISHED,
    &PUBLISHED_CONFIRM,
    &ROUTED,
    &UNROUTABLE,
    &UNROUTABLE_RETURNED,
    &CONFIRMED,
    &SEND_FAILED,
    &BLOCKED,
    &UPSTREAM_ADMISSION_RETRIES,
    &UPSTREAM_GATE_CLOSINGS,
    &DELIVERED_CONSUME_MANUAL_ACK,
    &DELIVERED_CONSUME_AUTO_ACK,
    &DELIVERED_GET_MANUAL_ACK,
    &DELIVERED_GET_AUTO_ACK,
    &GET_EMPTY,
    &REDELIVERED,
    &ACKED,
    &DEAD_LETTERED,
    &REDELIVERY_LOST,
    &EXPIRED,
    &REJECTED_FULL,
    &GET_EMPTY_UNANSWERED,
];

pub static GAUGES: &[&Gauge] = &[&CONNECTIONS_OPEN, &UPSTREAM_GATE_CLOSED];

pub static HISTOGRAMS: &[&Histogram] = &[&UPSTREAM_SEND_SECONDS, &UPSTREAM_PULL_SECONDS];

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_histogram_counts_each_duration_in_its_bucket_and_above() {
        let h = Histogram::new("h", "");
        h.record(Duration::from_micros(500));
        h.record(Duration::from_millis(15));
        h.record(Duration::from_secs(30));
        let (buckets, count, sum) = h.read();
        assert_eq!(buckets[0], 1, "<= 1 ms");
        assert_eq!(buckets[3], 1, "<= 10 ms");
        assert_eq!(buckets[4], 2, "<= 20 ms");
        assert_eq!(buckets[BOUNDS.len() - 1], 2, "30 s is only in +Inf");
        assert_eq!(count, 3);
        assert!((sum - 30.0155).abs() < 1e-9);
    }
}
