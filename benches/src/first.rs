//! Scenario 5, first delivery: how long a new consumer waits for its first
//! basic.deliver, on an idle queue and on one a publisher is filling. It
//! measures latency only, so the report gives it a table of its own. This is
//! AMQP only: a RocketMQ pull reader has no consume-ok to time from.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amq_protocol::protocol::{basic, AMQPClass};
use proxy::codec::Frame;

use crate::amqp::{take_confirms, Published, Window};
use crate::measure::{Counters, Latencies};
use crate::wire::{now_ns, PublishFrames, Wire};
use crate::{Outcome, Plan};

/// Idle trials at most. There are fewer if they take longer than the run's time.
const IDLE_TRIALS: u32 = 20;
/// How long an idle consumer waits between consume-ok and the publish.
const IDLE_WAIT: Duration = Duration::from_millis(200);
/// Busy trials at most, also within the run's time.
const BUSY_TRIALS: u32 = 5;
/// How long the publisher fills the queue before the consumer attaches.
const BUSY_ATTACH: Duration = Duration::from_secs(1);
/// The busy publisher's unconfirmed publishes.
const BUSY_WINDOW: usize = 100;
/// If a delivery or confirm takes longer than this, the trial counts it as missing.
const WAIT: Duration = Duration::from_secs(10);

/// What scenario 5 measured. The other scenarios leave `Outcome::first` None.
#[derive(Debug, Default)]
pub struct FirstDelivery {
    /// Idle queue: from writing the publish to reading the deliver.
    pub idle_publish: Latencies,
    /// Idle queue: from reading consume-ok to reading the deliver. This
    /// includes `IDLE_WAIT`.
    pub idle_consume: Latencies,
    /// Idle trials run. Those without a delivery have no latency.
    pub idle_trials: u32,
    /// Busy queue: from reading consume-ok to reading the first deliver.
    pub busy_consume: Latencies,
    pub busy_trials: u32,
    /// Confirmed msg/s of the busy publisher over its trials.
    pub busy_rate: f64,
}

impl FirstDelivery {
    /// One line for the progress log.
    pub fn summary(&mut self) -> String {
        let idle = ms(self.idle_publish.quantile_ms(0.5));
        let busy = ms(self.busy_consume.quantile_ms(0.5));
        format!(
            "idle: {} of {} delivered, publish → deliver p50 {idle} ms; \
             busy: {} of {} delivered, consume-ok → deliver p50 {busy} ms",
            self.idle_consume.count(),
            self.idle_trials,
            self.busy_consume.count(),
            self.busy_trials,
        )
    }
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:.2}"),
        None => "–".into(),
    }
}

/// 5. (a) idle trials, then (b) busy trials, each on a fresh queue that is
///    deleted afterwards.
pub async fn first_delivery(addr: &str, plan: &Plan, c: Arc<Counters>) -> io::Result<Outcome> {
    let started = Instant::now();
    // Names unique to this run mean a queue left behind by an interrupted
    // earlier bench, along with its messages, is never reused.
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut trials = Trials {
        addr,
        plan,
        setup: Wire::connect(addr).await?,
        c,
        first: FirstDelivery::default(),
        published: 0,
        nacked: 0,
        busy_published: 0,
        busy_time: Duration::ZERO,
    };
    let mut publisher = Wire::connect(addr).await?;
    publisher.confirm_select().await?;
    let idle_started = Instant::now();
    while trials.first.idle_trials < IDLE_TRIALS
        && (trials.first.idle_trials == 0 || idle_started.elapsed() < plan.duration)
    {
        trials.first.idle_trials += 1;
        // One publish per trial on this channel, so its confirm has this tag.
        let tag = u64::from(trials.first.idle_trials);
        let queue = format!("bench.first.idle.{run}.{tag}");
        trials.idle(&mut publisher, tag, &queue).await?;
    }
    let _ = tokio::time::timeout(WAIT, publisher.close()).await;
    let busy_started = Instant::now();
    while trials.first.busy_trials < BUSY_TRIALS
        && (trials.first.busy_trials == 0 || busy_started.elapsed() < plan.duration)
    {
        trials.first.busy_trials += 1;
        let queue = format!("bench.first.busy.{run}.{}", trials.first.busy_trials);
        trials.busy(&queue).await?;
    }
    trials.setup.close().await?;
    let mut first = trials.first;
    if !trials.busy_time.is_zero() {
        first.busy_rate = trials.busy_published as f64 / trials.busy_time.as_secs_f64();
    }
    Ok(Outcome {
        published: trials.published,
        nacked: trials.nacked,
        delivered: (first.idle_consume.count() + first.busy_consume.count()) as u64,
        seconds: started.elapsed().as_secs_f64(),
        first: Some(first),
        ..Outcome::default()
    })
}

/// The state shared by the trials of one run.
struct Trials<'a> {
    addr: &'a str,
    plan: &'a Plan,
    /// Declares and deletes the queues.
    setup: Wire,
    c: Arc<Counters>,
    first: FirstDelivery,
    /// Confirmed publishes, idle and busy.
    published: u64,
    nacked: u64,
    busy_published: u64,
    busy_time: Duration,
}

impl Trials<'_> {
    /// (a) A consumer on a fresh queue waits `IDLE_WAIT`, then one persistent
    ///     message is published with a confirm.
    async fn idle(&mut self, publisher: &mut Wire, tag: u64, queue: &str) -> io::Result<()> {
        self.setup.declare_queue(queue).await?;
        let mut consumer = Wire::connect(self.addr).await?;
        consumer.consume(queue, self.plan.prefetch).await?;
        let consume_ok = now_ns();
        tokio::time::sleep(IDLE_WAIT).await;
        let mut frames = PublishFrames::new("", queue, self.plan.size);
        let published = now_ns();
        publisher.raw(frames.stamped(published));
        publisher.flush().await?;
        Counters::add(&self.c.published, 1);
        // Both read at once: the delivery may come before the confirm.
        let (confirm, delivery) = tokio::join!(
            wait_for(publisher, WAIT, settles(tag)),
            wait_for(&mut consumer, WAIT, delivered_at),
        );
        match confirm? {
            Some(true) => {
                self.published += 1;
                Counters::add(&self.c.confirmed, 1);
            }
            Some(false) => self.nacked += 1,
            None => eprintln!("  {queue}: no confirm within {WAIT:?}"),
        }
        match delivery? {
            Some(at) => {
                self.first
                    .idle_publish
                    .record_ns(at.saturating_sub(published));
                self.first
                    .idle_consume
                    .record_ns(at.saturating_sub(consume_ok));
                Counters::add(&self.c.delivered, 1);
            }
            None => eprintln!("  {queue}: no delivery within {WAIT:?}"),
        }
        let _ = tokio::time::timeout(WAIT, consumer.close()).await;
        self.setup.delete_queue(queue).await
    }

    /// (b) A publisher fills a fresh queue at full speed. After
    ///     `BUSY_ATTACH`, a consumer attaches while the publisher goes on.
    async fn busy(&mut self, queue: &str) -> io::Result<()> {
        self.setup.declare_queue(queue).await?;
        let publisher = Wire::connect(self.addr).await?;
        let mut consumer = Wire::connect(self.addr).await?;
        let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let flooding = tokio::spawn(flood(
            publisher,
            PublishFrames::new("", queue, self.plan.size),
            stop.0.clone(),
            self.c.clone(),
        ));
        tokio::time::sleep(BUSY_ATTACH).await;
        consumer.consume(queue, self.plan.prefetch).await?;
        let consume_ok = now_ns();
        let delivery = wait_for(&mut consumer, WAIT, delivered_at).await?;
        drop(stop);
        let (sent, elapsed) = flooding.await.map_err(io::Error::other)??;
        self.published += sent.confirmed;
        self.nacked += sent.nacked;
        self.busy_published += sent.confirmed;
        self.busy_time += elapsed;
        match delivery {
            Some(at) => {
                self.first
                    .busy_consume
                    .record_ns(at.saturating_sub(consume_ok));
                Counters::add(&self.c.delivered, 1);
            }
            None => eprintln!("  {queue}: no delivery within {WAIT:?} of consume-ok"),
        }
        let _ = tokio::time::timeout(WAIT, consumer.close()).await;
        self.setup.delete_queue(queue).await
    }
}

/// Tells the busy publisher to stop however the trial ends, even on an error.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Keeps up to `BUSY_WINDOW` publishes unconfirmed until `stop`. Then it closes.
/// The last window's confirms are not counted.
async fn flood(
    mut wire: Wire,
    mut frames: PublishFrames,
    stop: Arc<AtomicBool>,
    c: Arc<Counters>,
) -> io::Result<(Published, Duration)> {
    wire.confirm_select().await?;
    let started = Instant::now();
    let mut out = Published {
        confirmed: 0,
        nacked: 0,
        latencies: Latencies::default(),
    };
    let mut unconfirmed = Window::new();
    while !stop.load(Ordering::Acquire) {
        let n = BUSY_WINDOW.saturating_sub(unconfirmed.open);
        for _ in 0..n {
            let at = now_ns();
            wire.raw(frames.stamped(at));
            unconfirmed.push(at);
        }
        Counters::add(&c.published, n as u64);
        wire.flush().await?;
        // Short waits, so that a server that has stopped confirming
        // cannot keep us from seeing `stop`.
        if let Ok(read) = tokio::time::timeout(Duration::from_millis(50), wire.fill()).await {
            read?;
        }
        take_confirms(&mut wire, &mut unconfirmed, &mut out, &c)?;
    }
    let elapsed = started.elapsed();
    let _ = tokio::time::timeout(WAIT, wire.close()).await;
    Ok((out, elapsed))
}

/// Reads until `pick` takes a frame, for at most `within` (None if that runs out).
async fn wait_for<T>(
    wire: &mut Wire,
    within: Duration,
    mut pick: impl FnMut(Frame) -> Option<T>,
) -> io::Result<Option<T>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        while let Some(frame) = wire.try_next()? {
            if let Some(found) = pick(frame) {
                return Ok(Some(found));
            }
        }
        match tokio::time::timeout_at(deadline, wire.fill()).await {
            Ok(read) => read?,
            Err(_) => return Ok(None),
        }
    }
}

/// When a basic.deliver was read.
fn delivered_at(frame: Frame) -> Option<u64> {
    matches!(
        frame,
        Frame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Deliver(_)))
    )
    .then(now_ns)
}

/// Whether publish `tag` was acked (true) or nacked (false). A late confirm
/// for an earlier trial's publish does not count.
fn settles(tag: u64) -> impl FnMut(Frame) -> Option<bool> {
    move |frame: Frame| match frame {
        Frame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) if a.delivery_tag >= tag => {
            Some(true)
        }
        Frame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Nack(n))) if n.delivery_tag >= tag => {
            Some(false)
        }
        _ => None,
    }
}
