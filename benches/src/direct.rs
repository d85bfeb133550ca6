//! The scenarios straight on RocketMQ with rocketmq-client-rust: a producer
//! with `window` messages in flight (batched, see `produce`) and pull readers
//! that keep their offsets in memory: the ceiling a gateway on the same
//! broker can reach.
//!
//! Fan-out is RocketMQ's own: one topic, one reader per subscriber, each at
//! its own offset (the gateway stores a message once per queue instead, see
//! docs/architecture.md).

#![allow(deprecated)] // classic pull: see proxy::upstream::rocketmq

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use proxy::upstream::rocketmq::{Clients, RocketMqSettings};
use rocketmq_client_rust::{
    DefaultMQProducer, DefaultMQPullConsumer, MessageSelector, PullOptions, SendStatus,
};
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_model::common::message::message_single::Message;

use crate::measure::{Counters, Latencies};
use crate::wire::{now_ns, stamp_of};
use crate::{Outcome, Plan};

pub(crate) const BROKER_NAME: &str = "broker-a";

pub struct Direct {
    clients: Clients,
    name_server: String,
}

pub(crate) fn failed(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

impl Direct {
    pub async fn connect(name_server: &str) -> io::Result<Direct> {
        let clients = Clients::start_with_pull_consumer(&RocketMqSettings {
            name_server: name_server.to_owned(),
            producer_group: "bench-direct".into(),
            queues_per_topic: 1,
            send_timeout: Duration::from_secs(3),
            max_message_size: 4 << 20,
            max_in_flight: 1024,
        })
        .await
        .map_err(|e| failed("RocketMQ clients", e))?;
        Ok(Direct {
            clients,
            name_server: name_server.to_owned(),
        })
    }

    /// The clients, for the other targets straight on RocketMQ (lmq.rs, pop.rs).
    pub(crate) fn clients(&self) -> &Clients {
        &self.clients
    }

    pub(crate) fn name_server(&self) -> &str {
        &self.name_server
    }

    /// A new topic with one message queue, as the gateway makes per queue.
    pub(crate) async fn topic(&self, scenario: &str) -> io::Result<String> {
        let topic = format!("bench_direct_{scenario}_{}", now_ns());
        let mut producer = self.clients.producer.clone();
        producer
            .create_topic("TBW102", &topic, 1, HashMap::new())
            .await
            .map_err(|e| failed("create topic", e))?;
        Ok(topic)
    }

    /// 1. Sends only, `window` in flight.
    pub async fn publish_only(
        &self,
        plan: &Plan,
        window: usize,
        c: Arc<Counters>,
    ) -> io::Result<Outcome> {
        let topic = self.topic("publish").await?;
        let started = Instant::now();
        let sent = produce(
            &self.clients.producer,
            &topic,
            plan.size,
            window,
            started + plan.duration,
            &c,
        )
        .await?;
        Ok(Outcome {
            published: sent.confirmed,
            nacked: sent.failed,
            seconds: started.elapsed().as_secs_f64(),
            confirm: sent.latencies,
            ..Outcome::default()
        })
    }

    /// 2. and 3.: a producer (window `plan.window`) and `readers` readers of
    ///    the same topic.
    pub async fn fan_out(
        &self,
        plan: &Plan,
        readers: usize,
        c: Arc<Counters>,
    ) -> io::Result<Outcome> {
        let topic = self
            .topic(if readers == 1 { "e2e" } else { "fanout" })
            .await?;
        let expected = Arc::new(AtomicU64::new(u64::MAX));
        let consumer = self
            .clients
            .pull_consumer
            .clone()
            .ok_or_else(|| io::Error::other("started without a pull consumer"))?;
        let tasks: Vec<_> = (0..readers)
            .map(|_| {
                tokio::spawn(read(
                    consumer.clone(),
                    topic.clone(),
                    expected.clone(),
                    c.clone(),
                ))
            })
            .collect();
        let started = Instant::now();
        let sent = produce(
            &self.clients.producer,
            &topic,
            plan.size,
            plan.window,
            started + plan.duration,
            &c,
        )
        .await?;
        expected.store(sent.confirmed, Ordering::Release);
        // First send to the last confirm or read: nothing read reads as 0.
        let mut last = Instant::now();
        let mut outcome = Outcome {
            published: sent.confirmed,
            nacked: sent.failed,
            confirm: sent.latencies,
            consumed: true,
            ..Outcome::default()
        };
        for task in tasks {
            let r = task.await.map_err(io::Error::other)??;
            outcome.delivered += r.delivered;
            outcome.e2e.extend(r.latencies);
            last = r.last.map_or(last, |at| last.max(at));
        }
        outcome.seconds = (last - started).as_secs_f64();
        Ok(outcome)
    }
}

pub(crate) struct Produced {
    pub(crate) confirmed: u64,
    pub(crate) failed: u64,
    pub(crate) latencies: Latencies,
}

/// Keeps `window` messages in flight until `until`. Messages that find room
/// together leave in one batch request (at most 256), as a RocketMQ
/// application that cares about throughput sends them: the client answers a
/// message queue's requests one at a time, so single sends cap near 700 msg/s
/// whatever the concurrency (docs/benchmarks.md).
pub(crate) async fn produce(
    producer: &DefaultMQProducer,
    topic: &str,
    size: usize,
    window: usize,
    until: Instant,
    c: &Counters,
) -> io::Result<Produced> {
    let body = vec![b'x'; size.max(8)];
    let mut out = Produced {
        confirmed: 0,
        failed: 0,
        latencies: Latencies::default(),
    };
    let mut in_flight = FuturesUnordered::new();
    let mut open = 0usize;
    loop {
        while Instant::now() < until && open < window {
            let n = (window - open).min(256);
            let mut stamps = Vec::with_capacity(n);
            let mut batch = Vec::with_capacity(n);
            for _ in 0..n {
                let at = now_ns();
                let mut stamped = body.clone();
                stamped[..8].copy_from_slice(&at.to_le_bytes());
                batch.push(
                    Message::builder()
                        .topic(topic)
                        .body(Bytes::from(stamped))
                        .build_unchecked(),
                );
                stamps.push(at);
            }
            let producer = producer.clone();
            in_flight.push(async move {
                let result = if batch.len() == 1 {
                    producer.send(batch.pop().expect("one message")).await
                } else {
                    producer.send_batch(batch).await.map(Some)
                };
                (stamps, result)
            });
            open += n;
            Counters::add(&c.published, n as u64);
        }
        let Some((stamps, result)) = in_flight.next().await else {
            break;
        };
        open -= stamps.len();
        match result {
            Ok(Some(r)) if r.send_status == SendStatus::SendOk => {
                let now = now_ns();
                for at in &stamps {
                    out.latencies.record_ns(now - at);
                }
                out.confirmed += stamps.len() as u64;
                Counters::add(&c.confirmed, stamps.len() as u64);
            }
            Ok(_) => out.failed += stamps.len() as u64,
            Err(e) => {
                if out.failed == 0 {
                    eprintln!("  first failed send: {e}");
                }
                out.failed += stamps.len() as u64;
            }
        }
    }
    Ok(out)
}

/// What a reader got (here and in lmq.rs).
#[derive(Default)]
pub(crate) struct Read {
    pub(crate) delivered: u64,
    pub(crate) latencies: Latencies,
    /// When the last read brought messages; None if none did.
    pub(crate) last: Option<Instant>,
}

impl Read {
    /// Counts one read's messages and their end-to-end latencies.
    pub(crate) fn took(
        &mut self,
        bodies: impl ExactSizeIterator<Item = Option<Bytes>>,
        c: &Counters,
    ) {
        let (n, now) = (bodies.len() as u64, now_ns());
        for body in bodies {
            if let Some(at) = body.as_deref().and_then(stamp_of) {
                self.latencies.record_ns(now.saturating_sub(at));
            }
        }
        self.delivered += n;
        self.last = Some(Instant::now());
        Counters::add(&c.delivered, n);
    }
}

/// Pulls queue 0 of the topic from offset 0 (256 at a time, as the gateway's
/// feeds do, long polling)
/// until `expected` messages are in, or nothing came for 10 s after that.
async fn read(
    reader: DefaultMQPullConsumer,
    topic: String,
    expected: Arc<AtomicU64>,
    c: Arc<Counters>,
) -> io::Result<Read> {
    let mq = MessageQueue::from_parts(topic.as_str(), BROKER_NAME, 0);
    let mut out = Read::default();
    let mut offset = 0i64;
    let mut idle_since: Option<Instant> = None;
    while out.delivered < expected.load(Ordering::Acquire) {
        let options = PullOptions::new(mq.clone(), MessageSelector::by_tag("*"), offset, 256)
            .map_err(|e| failed("pull options", e))?
            .block_if_not_found(true)
            .broker_suspend_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(4));
        let result = match reader.pull_with_options(options).await {
            Ok(r) => r,
            // The topic's route may not have reached the reader yet.
            Err(_) if out.delivered == 0 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(failed("pull", e)),
        };
        let messages = result.msg_found_list().unwrap_or_default();
        if messages.is_empty() {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if expected.load(Ordering::Acquire) != u64::MAX
                && since.elapsed() > Duration::from_secs(10)
            {
                eprintln!(
                    "  {topic}: {} of {} read, then nothing for 10 s",
                    out.delivered,
                    expected.load(Ordering::Acquire)
                );
                break;
            }
        } else {
            idle_since = None;
            out.took(messages.iter().map(|m| m.body()), &c);
        }
        offset = (result.next_begin_offset() as i64).max(offset);
    }
    Ok(out)
}
