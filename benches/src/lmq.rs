//! Fan-out as one write, straight on RocketMQ with rocketmq-client-rust: the
//! `direct-lmq` target. Each message is sent once, to a topic of its own,
//! with `INNER_MULTI_DISPATCH` naming one light message queue (LMQ) per
//! subscriber; the broker stores it once and indexes it into every LMQ. One
//! reader per LMQ pulls it by offset through the gateway's own reader
//! (`proxy::upstream::reader`), since a `%LMQ%` topic has no route for the
//! client's pull consumer. Each LMQ gets a one-queue topic config first: the
//! broker's pull handler refuses a topic it has no config for.
//!
//! Sends go one message per request: multi-dispatch is read from a request's
//! outer properties only, so a batch cannot carry it per message. The
//! `direct` target's fan-out (one topic read by N readers) and the gateway's
//! (one copy per queue) are the comparisons (docs/benchmarks.md).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cheetah_string::CheetahString;
use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use proxy::upstream::reader::Reader;
use proxy::upstream::rocketmq::Clients;
use rocketmq_client_rust::{SendStatus, TopicAdmin};
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_model::common::message::{MessageConst, MessageTrait};

use crate::direct::{failed, Direct, Read, BROKER_NAME};
use crate::measure::{Counters, Latencies};
use crate::wire::now_ns;
use crate::{Outcome, Plan};

/// A producer with `plan.window` single sends in flight (see `send`), each indexed into
/// `queues` LMQs, and a reader on each LMQ.
pub async fn fan_out(
    direct: &Direct,
    plan: &Plan,
    queues: usize,
    c: Arc<Counters>,
) -> io::Result<Outcome> {
    let clients = direct.clients();
    let topic = direct.topic("lmq").await?;
    let broker = broker_address(clients, &topic).await?;
    let lmqs: Vec<String> = (1..=queues.max(1))
        .map(|i| format!("%LMQ%{topic}_{i}"))
        .collect();
    for lmq in &lmqs {
        let mut producer = clients.producer.clone();
        producer
            .create_topic("TBW102", lmq, 1, HashMap::new())
            .await
            .map_err(|e| failed("create LMQ topic config", e))?;
    }
    let expected = AtomicU64::new(u64::MAX);
    let readers = join_all(
        lmqs.iter()
            .map(|lmq| read(&clients.reader, &broker, lmq, &expected, &c)),
    );
    let started = Instant::now();
    let sending = async {
        let sent = send(
            clients,
            &topic,
            &lmqs.join(","),
            plan,
            started + plan.duration,
            &c,
        )
        .await;
        if let Ok(sent) = &sent {
            expected.store(sent.confirmed, Ordering::Release);
        } else {
            expected.store(0, Ordering::Release);
        }
        (sent, Instant::now())
    };
    let ((sent, sent_at), read) = tokio::join!(sending, readers);
    let sent = sent?;
    let mut last = sent_at;
    let mut outcome = Outcome {
        published: sent.confirmed,
        nacked: sent.failed,
        confirm: sent.latencies,
        consumed: true,
        ..Outcome::default()
    };
    for (i, r) in read.into_iter().enumerate() {
        let r = r?;
        outcome.delivered += r.delivered;
        outcome.e2e.extend(r.latencies);
        if queues > 1 {
            outcome.split.push((format!("LMQ {}", i + 1), r.delivered));
        }
        last = r.last.map_or(last, |at| last.max(at));
    }
    outcome.seconds = (last - started).as_secs_f64();
    Ok(outcome)
}

/// The master broker's address for `topic` (the LMQs live on the broker
/// that stores the parent topic's messages).
pub(crate) async fn broker_address(clients: &Clients, topic: &str) -> io::Result<CheetahString> {
    let route = clients
        .admin
        .examine_topic_route_info(topic.into())
        .await
        .map_err(|e| failed("topic route", e))?
        .ok_or_else(|| io::Error::other(format!("topic {topic} has no route")))?;
    route
        .broker_datas
        .iter()
        .find(|b| b.broker_name().as_str() == BROKER_NAME)
        .and_then(|b| b.broker_addrs().get(&0).cloned())
        .ok_or_else(|| io::Error::other(format!("no master of {BROKER_NAME} for {topic}")))
}

struct Sent {
    confirmed: u64,
    failed: u64,
    latencies: Latencies,
}

/// Single sends in flight at most: the client's transport refuses requests
/// beyond its admission budget ("queue_saturated"; 1,000 in flight lost
/// most of them), where the gateway waits for room and retries (upstream/rocketmq.rs).
const SENDS_IN_FLIGHT: usize = 256;

/// Keeps `plan.window` single sends in flight (at most `SENDS_IN_FLIGHT`)
/// until `until`.
async fn send(
    clients: &Clients,
    topic: &str,
    dispatch: &str,
    plan: &Plan,
    until: Instant,
    c: &Counters,
) -> io::Result<Sent> {
    let body = vec![b'x'; plan.size.max(8)];
    let mut out = Sent {
        confirmed: 0,
        failed: 0,
        latencies: Latencies::default(),
    };
    let mut in_flight = FuturesUnordered::new();
    loop {
        while Instant::now() < until && in_flight.len() < plan.window.min(SENDS_IN_FLIGHT) {
            let at = now_ns();
            let mut stamped = body.clone();
            stamped[..8].copy_from_slice(&at.to_le_bytes());
            let mut message = Message::builder()
                .topic(topic)
                .body(Bytes::from(stamped))
                .build_unchecked();
            message.put_property(
                CheetahString::from_static_str(MessageConst::PROPERTY_INNER_MULTI_DISPATCH),
                CheetahString::from(dispatch),
            );
            let producer = clients.producer.clone();
            in_flight.push(async move { (at, producer.send(message).await) });
            Counters::add(&c.published, 1);
        }
        let Some((at, result)) = in_flight.next().await else {
            break;
        };
        match result {
            Ok(Some(r)) if r.send_status == SendStatus::SendOk => {
                out.latencies.record_ns(now_ns().saturating_sub(at));
                out.confirmed += 1;
                Counters::add(&c.confirmed, 1);
            }
            Ok(_) => out.failed += 1,
            Err(e) => {
                if out.failed == 0 {
                    eprintln!("  first failed send: {e}");
                }
                out.failed += 1;
            }
        }
    }
    Ok(out)
}

/// Pulls the LMQ from offset 0, 256 at a time with long polls, until
/// `expected` messages are in, or nothing came for 10 s after that.
async fn read(
    reader: &Reader,
    broker: &CheetahString,
    lmq: &str,
    expected: &AtomicU64,
    c: &Counters,
) -> io::Result<Read> {
    let mq = MessageQueue::from_parts(lmq, BROKER_NAME, 0);
    let mut out = Read::default();
    let (mut offset, mut heard) = (0i64, Instant::now());
    while out.delivered < expected.load(Ordering::Acquire) {
        let wait = Some(Duration::from_millis(500));
        let batch = reader
            .pull(broker, &mq, offset, 256, wait)
            .await
            .map_err(|e| failed("pull LMQ", e))?;
        if batch.messages.is_empty() {
            if expected.load(Ordering::Acquire) != u64::MAX
                && heard.elapsed() > Duration::from_secs(10)
            {
                eprintln!(
                    "  {lmq}: {} of {} read (its end: offset {}), then nothing for 10 s",
                    out.delivered,
                    expected.load(Ordering::Acquire),
                    batch.max_offset
                );
                break;
            }
        } else {
            heard = Instant::now();
            out.took(batch.messages.iter().map(|m| m.body()), c);
        }
        offset = batch.next_offset.max(offset);
    }
    Ok(out)
}
