//! The scenarios over AMQP 0-9-1: the same code drives the gateway (on
//! RocketMQ or on its null upstream) and RabbitMQ.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, AMQPClass};
use futures_util::future::try_join_all;
use proxy::codec::Frame;

use crate::measure::{Counters, Latencies};
use crate::wire::{now_ns, stamp_of, PublishFrames, Wire};
use crate::{Outcome, Plan};

/// How long a run may take to settle what it sent after its time is up.
const DRAIN: Duration = Duration::from_secs(30);

/// 1. One publisher with confirms, `window` unconfirmed at most.
pub async fn publish_only(
    addr: &str,
    plan: &Plan,
    window: usize,
    c: Arc<Counters>,
) -> io::Result<Outcome> {
    let queue = "bench.publish";
    let mut setup = Wire::connect(addr).await?;
    setup.delete_queue(queue).await?;
    setup.declare_queue(queue).await?;
    let started = Instant::now();
    let frames = PublishFrames::new("", queue, plan.size);
    let publisher = publish(
        Wire::connect(addr).await?,
        frames,
        window,
        started + plan.duration,
        &c,
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    setup.delete_queue(queue).await?;
    setup.close().await?;
    Ok(Outcome {
        published: publisher.confirmed,
        nacked: publisher.nacked,
        seconds,
        confirm: publisher.latencies,
        ..Outcome::default()
    })
}

/// 2. One publisher (window 1000) and one consumer (prefetch 1000, acks).
pub async fn end_to_end(addr: &str, plan: &Plan, c: Arc<Counters>) -> io::Result<Outcome> {
    fan_out(addr, plan, 0, c).await
}

/// 3. A fanout exchange to `queues` queues with a consumer on each; with 0,
///    one queue through the default exchange (end to end).
pub async fn fan_out(
    addr: &str,
    plan: &Plan,
    queues: usize,
    c: Arc<Counters>,
) -> io::Result<Outcome> {
    let mut setup = Wire::connect(addr).await?;
    let (exchange, names): (&str, Vec<String>) = if queues == 0 {
        ("", vec!["bench.e2e".to_owned()])
    } else {
        (
            "bench.fanout",
            (1..=queues).map(|i| format!("bench.fanout.{i}")).collect(),
        )
    };
    if !exchange.is_empty() {
        setup.declare_fanout(exchange).await?;
    }
    for q in &names {
        setup.delete_queue(q).await?;
        setup.declare_queue(q).await?;
        if !exchange.is_empty() {
            setup.bind(q, exchange).await?;
        }
    }
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let mut consumers = Vec::new();
    for q in &names {
        let wire = Wire::connect(addr).await?;
        consumers.push(tokio::spawn(consume(
            wire,
            q.clone(),
            plan.prefetch,
            expected.clone(),
            Arc::default(),
            c.clone(),
        )));
    }
    let routing_key = if exchange.is_empty() {
        names[0].as_str()
    } else {
        ""
    };
    let started = Instant::now();
    let frames = PublishFrames::new(exchange, routing_key, plan.size);
    let publisher = publish(
        Wire::connect(addr).await?,
        frames,
        plan.window,
        started + plan.duration,
        &c,
    )
    .await?;
    expected.store(publisher.confirmed, Ordering::Release);
    // From the first publish to the last confirm or delivery: a run whose
    // consumers got nothing spans its publishing, so its rate reads 0.
    let mut last = Instant::now();
    let mut outcome = Outcome {
        published: publisher.confirmed,
        nacked: publisher.nacked,
        confirm: publisher.latencies,
        consumed: true,
        ..Outcome::default()
    };
    for consumer in consumers {
        let consumed = consumer.await.map_err(io::Error::other)??;
        outcome.delivered += consumed.delivered;
        outcome.e2e.extend(consumed.latencies);
        last = consumed.last.map_or(last, |at| last.max(at));
    }
    outcome.seconds = (last - started).as_secs_f64();
    for q in &names {
        setup.delete_queue(q).await?;
    }
    setup.close().await?;
    Ok(outcome)
}

/// 6. One queue served by two gateways on one broker and one meta store: a
///    publisher (window `plan.window`) and a consumer on each gateway. What
///    each gateway's consumer got is in `Outcome::split`.
pub async fn two_gateways(
    first: &str,
    second: &str,
    plan: &Plan,
    c: Arc<Counters>,
) -> io::Result<Outcome> {
    let queue = "bench.shared";
    let mut setup = Wire::connect(first).await?;
    setup.delete_queue(queue).await?;
    setup.declare_queue(queue).await?;
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let delivered = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::new();
    for addr in [first, second] {
        consumers.push(tokio::spawn(consume(
            Wire::connect(addr).await?,
            queue.to_owned(),
            plan.prefetch,
            expected.clone(),
            delivered.clone(),
            c.clone(),
        )));
    }
    let started = Instant::now();
    let publishers = [first, second].map(|addr| {
        let (c, until) = (c.clone(), started + plan.duration);
        let (addr, window, size) = (addr.to_owned(), plan.window, plan.size);
        tokio::spawn(async move {
            let wire = Wire::connect(&addr).await?;
            publish(wire, PublishFrames::new("", queue, size), window, until, &c).await
        })
    });
    let mut outcome = Outcome {
        consumed: true,
        ..Outcome::default()
    };
    for publisher in publishers {
        let p = publisher.await.map_err(io::Error::other)??;
        outcome.published += p.confirmed;
        outcome.nacked += p.nacked;
        outcome.confirm.extend(p.latencies);
    }
    expected.store(outcome.published, Ordering::Release);
    let mut last = Instant::now();
    for (consumer, name) in consumers.into_iter().zip(["gateway 1", "gateway 2"]) {
        let consumed = consumer.await.map_err(io::Error::other)??;
        outcome.delivered += consumed.delivered;
        outcome.e2e.extend(consumed.latencies);
        outcome.split.push((name.to_owned(), consumed.delivered));
        last = consumed.last.map_or(last, |at| last.max(at));
    }
    outcome.seconds = (last - started).as_secs_f64();
    setup.delete_queue(queue).await?;
    setup.close().await?;
    Ok(outcome)
}

/// 4. `connections` publishers, each sending `rate` persistent messages a
///    second with confirms (one at a time), while one consumer drains.
pub async fn many_connections(
    addr: &str,
    plan: &Plan,
    connections: usize,
    rate: f64,
    c: Arc<Counters>,
) -> io::Result<Outcome> {
    let queue = "bench.many";
    let mut setup = Wire::connect(addr).await?;
    setup.delete_queue(queue).await?;
    setup.declare_queue(queue).await?;
    // Connect everyone first (50 handshakes at a time): only the steady
    // state is measured.
    let mut wires = Vec::with_capacity(connections);
    for chunk in (0..connections).collect::<Vec<_>>().chunks(50) {
        let batch = try_join_all(chunk.iter().map(|_| async {
            let mut wire = Wire::connect(addr).await?;
            wire.confirm_select().await?;
            Ok::<_, io::Error>(wire)
        }))
        .await?;
        wires.extend(batch);
    }
    eprintln!("  {connections} connections open");
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let consumer = tokio::spawn(consume(
        Wire::connect(addr).await?,
        queue.to_owned(),
        plan.prefetch,
        expected.clone(),
        Arc::default(),
        c.clone(),
    ));
    let started = Instant::now();
    let until = started + plan.duration;
    let period = Duration::from_secs_f64(1.0 / rate);
    let tasks: Vec<_> = wires
        .into_iter()
        .enumerate()
        .map(|(i, wire)| {
            // Spread the first sends over one period.
            let first = started + period.mul_f64(i as f64 / connections as f64);
            tokio::spawn(steady_publisher(
                wire,
                PublishFrames::new("", queue, plan.size),
                first,
                period,
                until,
                c.clone(),
            ))
        })
        .collect();
    let mut outcome = Outcome {
        consumed: true,
        ..Outcome::default()
    };
    for task in tasks {
        let p = task.await.map_err(io::Error::other)??;
        outcome.published += p.confirmed;
        outcome.nacked += p.nacked;
        outcome.confirm.extend(p.latencies);
    }
    expected.store(outcome.published, Ordering::Release);
    let consumed = consumer.await.map_err(io::Error::other)??;
    outcome.delivered = consumed.delivered;
    outcome.e2e = consumed.latencies;
    outcome.seconds = (consumed.last.map_or(until, |at| at.max(until)) - started).as_secs_f64();
    setup.delete_queue(queue).await?;
    setup.close().await?;
    Ok(outcome)
}

pub(crate) struct Published {
    pub(crate) confirmed: u64,
    pub(crate) nacked: u64,
    pub(crate) latencies: Latencies,
}

/// Unconfirmed publishes by delivery tag, from the oldest unsettled on.
pub(crate) struct Window {
    first_tag: u64,
    sent: VecDeque<Option<u64>>,
    pub(crate) open: usize,
}

impl Window {
    pub(crate) fn new() -> Window {
        Window {
            first_tag: 1,
            sent: VecDeque::new(),
            open: 0,
        }
    }

    pub(crate) fn push(&mut self, at: u64) {
        self.sent.push_back(Some(at));
        self.open += 1;
    }

    /// Settles `tag` (and every earlier one with `multiple`); the send times
    /// of what it settled go to `each`.
    fn settle(&mut self, tag: u64, multiple: bool, mut each: impl FnMut(u64)) {
        if tag < self.first_tag {
            return; // settled already
        }
        let upto = (tag - self.first_tag) as usize;
        let from = if multiple { 0 } else { upto };
        for slot in self.sent.iter_mut().take(upto + 1).skip(from) {
            if let Some(at) = slot.take() {
                self.open -= 1;
                each(at);
            }
        }
        while let Some(None) = self.sent.front() {
            self.sent.pop_front();
            self.first_tag += 1;
        }
    }
}

/// Settles the confirms among the frames already read.
pub(crate) fn take_confirms(
    wire: &mut Wire,
    window: &mut Window,
    out: &mut Published,
    c: &Counters,
) -> io::Result<()> {
    while let Some(frame) = wire.try_next()? {
        match frame {
            Frame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => {
                let now = now_ns();
                let before = window.open;
                window.settle(a.delivery_tag, a.multiple, |at| {
                    out.latencies.record_ns(now - at)
                });
                out.confirmed += (before - window.open) as u64;
                Counters::add(&c.confirmed, (before - window.open) as u64);
            }
            Frame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Nack(n))) => {
                let before = window.open;
                window.settle(n.delivery_tag, n.multiple, |_| {});
                out.nacked += (before - window.open) as u64;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Keeps `window` publishes unconfirmed until `until`, then waits for the rest.
async fn publish(
    mut wire: Wire,
    mut frames: PublishFrames,
    window: usize,
    until: Instant,
    c: &Counters,
) -> io::Result<Published> {
    wire.confirm_select().await?;
    let mut out = Published {
        confirmed: 0,
        nacked: 0,
        latencies: Latencies::default(),
    };
    let mut unconfirmed = Window::new();
    loop {
        let sending = Instant::now() < until;
        if sending {
            let n = window.saturating_sub(unconfirmed.open);
            for _ in 0..n {
                let at = now_ns();
                wire.raw(frames.stamped(at));
                unconfirmed.push(at);
            }
            Counters::add(&c.published, n as u64);
            wire.flush().await?;
        } else if unconfirmed.open == 0 {
            break;
        }
        let wait = if sending {
            until.saturating_duration_since(Instant::now()) + DRAIN
        } else {
            DRAIN
        };
        if tokio::time::timeout(wait, wire.fill()).await.is_err() {
            eprintln!(
                "  {} publishes still unconfirmed after {DRAIN:?}; counted as lost",
                unconfirmed.open
            );
            break;
        }
        take_confirms(&mut wire, &mut unconfirmed, &mut out, c)?;
    }
    let _ = wire.close().await;
    Ok(out)
}

/// One publish every `period` from `first` until `until`, each confirmed
/// before the next (a late confirm delays the next send).
async fn steady_publisher(
    mut wire: Wire,
    mut frames: PublishFrames,
    first: Instant,
    period: Duration,
    until: Instant,
    c: Arc<Counters>,
) -> io::Result<Published> {
    let mut out = Published {
        confirmed: 0,
        nacked: 0,
        latencies: Latencies::default(),
    };
    let mut unconfirmed = Window::new();
    let mut next = first;
    while next < until {
        tokio::time::sleep_until(next.into()).await;
        let at = now_ns();
        wire.raw(frames.stamped(at));
        unconfirmed.push(at);
        Counters::add(&c.published, 1);
        wire.flush().await?;
        while unconfirmed.open > 0 {
            if tokio::time::timeout(DRAIN, wire.fill()).await.is_err() {
                return Err(io::Error::other("no confirm within 30 s"));
            }
            take_confirms(&mut wire, &mut unconfirmed, &mut out, &c)?;
        }
        next += period;
    }
    let _ = wire.close().await;
    Ok(out)
}

struct Consumed {
    delivered: u64,
    latencies: Latencies,
    /// When the last delivery arrived; None if none did.
    last: Option<Instant>,
}

/// Consumes with acks (one `multiple` ack per read) until it has seen
/// `expected` messages, or nothing came for 10 s after `expected` was set.
async fn consume(
    mut wire: Wire,
    queue: String,
    prefetch: u16,
    expected: Arc<AtomicU64>,
    queue_delivered: Arc<AtomicU64>,
    c: Arc<Counters>,
) -> io::Result<Consumed> {
    wire.consume(&queue, prefetch).await?;
    let mut out = Consumed {
        delivered: 0,
        latencies: Latencies::default(),
        last: None,
    };
    // A message is acked once its body is in (its tag comes with deliver).
    let (mut arriving, mut last_tag, mut acked, mut stamp_next) = (0u64, 0u64, 0u64, false);
    // When this queue last made progress, through this consumer or another.
    let (mut heard, mut seen) = (Instant::now(), 0u64);
    loop {
        let wanted = expected.load(Ordering::Acquire);
        let now_seen = queue_delivered.load(Ordering::Acquire);
        if now_seen >= wanted {
            break;
        }
        if now_seen != seen {
            (heard, seen) = (Instant::now(), now_seen);
        }
        match tokio::time::timeout(Duration::from_millis(200), wire.fill()).await {
            Ok(read) => {
                read?;
                heard = Instant::now();
            }
            // Nothing yet: the publisher may still be sending, or another
            // consumer of the queue may be taking what is left.
            Err(_) if wanted == u64::MAX || heard.elapsed() < Duration::from_secs(10) => continue,
            Err(_) => {
                eprintln!(
                    "  {queue}: {} of {wanted} delivered, then nothing for 10 s",
                    queue_delivered.load(Ordering::Acquire)
                );
                break;
            }
        }
        let mut got = 0;
        while let Some(frame) = wire.try_next()? {
            match frame {
                Frame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Deliver(d))) => {
                    arriving = d.delivery_tag;
                    stamp_next = true;
                }
                Frame::Body(_, body) if stamp_next => {
                    stamp_next = false;
                    last_tag = arriving;
                    if let Some(at) = stamp_of(&body) {
                        out.latencies.record_ns(now_ns().saturating_sub(at));
                    }
                    got += 1;
                }
                _ => {}
            }
        }
        if got > 0 {
            out.delivered += got;
            out.last = Some(Instant::now());
            queue_delivered.fetch_add(got, Ordering::AcqRel);
            Counters::add(&c.delivered, got);
        }
        if last_tag > acked {
            wire.ack_up_to(last_tag);
            acked = last_tag;
            wire.flush().await?;
        }
    }
    let _ = wire.close().await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(w: &mut Window, tag: u64, multiple: bool) -> Vec<u64> {
        let mut out = Vec::new();
        w.settle(tag, multiple, |at| out.push(at));
        out
    }

    #[test]
    fn confirms_settle_single_tags_and_everything_up_to_a_multiple() {
        let mut w = Window::new();
        for at in [10, 20, 30, 40] {
            w.push(at);
        }
        assert_eq!(settled(&mut w, 2, false), vec![20]);
        assert_eq!(w.open, 3);
        // Tag 1 is still open: nothing is dropped from the front yet.
        assert_eq!(w.first_tag, 1);
        assert_eq!(settled(&mut w, 3, true), vec![10, 30]);
        assert_eq!((w.open, w.first_tag), (1, 4));
        // Settling again, or a tag already gone, counts nothing twice.
        assert!(settled(&mut w, 3, true).is_empty());
        assert_eq!(settled(&mut w, 4, false), vec![40]);
        assert_eq!((w.open, w.first_tag), (0, 5));
    }
}
