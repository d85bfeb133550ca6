//! Throughput and latency harness: the gateway (on RocketMQ, and on its null
//! upstream), RabbitMQ and a direct RocketMQ client, side by side, in one run
//! (`bench`, driven by benches/run.sh).
//!
//! The path of a run: `bench` picks a scenario and a target; `amqp` or
//! `direct` drives it (`wire` is the load generator's AMQP client); `measure`
//! reads latencies, CPU and memory; `report` writes the table and the chart.
//! `first` is scenario 5 (a new consumer's first delivery), latency only;
//! `lmq` is fan-out through RocketMQ's light message queues (`direct-lmq`),
//! `pop` consuming with RocketMQ's POP (`direct-pop`).

pub mod amqp;
pub mod direct;
pub mod first;
pub mod lmq;
pub mod measure;
pub mod pop;
pub mod report;
pub mod wire;

use std::time::Duration;

use measure::{Latencies, Process};

/// What every scenario shares.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How long publishers publish; the run then waits for what is in flight.
    pub duration: Duration,
    /// Body size in bytes.
    pub size: usize,
    /// Unconfirmed publishes in flight in the end-to-end and fan-out runs.
    pub window: usize,
    /// Consumers' prefetch.
    pub prefetch: u16,
}

/// What one run of one scenario on one target produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Publishes confirmed.
    pub published: u64,
    /// Publishes refused (nacked or failed).
    pub nacked: u64,
    /// Messages received by consumers (every queue's copy counts).
    pub delivered: u64,
    /// The scenario had consumers: its rate is deliveries, 0 if none came.
    pub consumed: bool,
    /// Deliveries per consumer where the scenario compares them (scenario 6).
    pub split: Vec<(String, u64)>,
    /// From the first publish to the last confirm or delivery.
    pub seconds: f64,
    pub confirm: Latencies,
    pub e2e: Latencies,
    /// Scenario 5's measures; None in the others.
    pub first: Option<first::FirstDelivery>,
}

/// How a target is reached.
#[derive(Debug, Clone)]
pub enum Kind {
    /// An AMQP 0-9-1 server at host:port.
    Amqp(String),
    /// A RocketMQ name server at host:port, used through rocketmq-client-rust.
    Direct(String),
    /// The same, fanning out through light message queues (lmq.rs).
    DirectLmq(String),
    /// The same, consuming with POP (pop.rs).
    DirectPop(String),
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub kind: Kind,
    /// The server processes whose CPU and memory are reported.
    pub processes: Vec<Process>,
    /// A second gateway on the same broker and meta store (scenario 6), and
    /// its process.
    pub second: Option<(String, Process)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scenario {
    /// Publish only with confirms, this many unconfirmed at most.
    Publish(usize),
    /// One publisher, one consumer.
    EndToEnd,
    /// A fanout exchange to this many queues, a consumer on each.
    FanOut(usize),
    /// This many connections publishing `rate` msg/s each, one consumer.
    Many { connections: usize, rate: f64 },
    /// From consume-ok to a new consumer's first delivery, on an idle queue
    /// and on a busy one (latency only: no msg/s).
    FirstDelivery,
    /// One queue, a publisher and a consumer on each of two gateways.
    TwoGateways,
}

impl Scenario {
    pub fn name(&self) -> String {
        match self {
            Scenario::Publish(w) => format!("publish, window {w}"),
            Scenario::EndToEnd => "end to end".into(),
            Scenario::FanOut(n) => format!("fan-out to {n}"),
            Scenario::Many { connections, rate } => {
                format!("{connections} connections × {rate} msg/s")
            }
            Scenario::FirstDelivery => "first delivery to a new consumer".into(),
            Scenario::TwoGateways => "one queue, two gateways".into(),
        }
    }

    /// Why the scenario does not apply to a target, if it does not.
    pub fn not_applicable(&self, target: &Target) -> Option<&'static str> {
        match (self, &target.kind) {
            (Scenario::Many { .. }, Kind::Direct(_)) => Some(
                "connections are an AMQP notion: the RocketMQ client multiplexes one connection per broker",
            ),
            (Scenario::FirstDelivery, Kind::Direct(_)) => Some(
                "a pull reader has no consume-ok to time from: it reads a topic from any offset, whenever it asks",
            ),
            (Scenario::Publish(_), Kind::DirectLmq(_)) => {
                Some("publishing alone is the direct target's: an LMQ only changes how copies are read")
            }
            (Scenario::Many { .. } | Scenario::FirstDelivery, Kind::DirectLmq(_)) => {
                Some("as for direct")
            }
            (scenario, Kind::DirectPop(_)) if *scenario != Scenario::EndToEnd => {
                Some("POP is measured end to end only")
            }
            (Scenario::TwoGateways, _) if target.second.is_none() => {
                Some("one server: the scenario is two gateways on one broker")
            }
            _ => None,
        }
    }
}
