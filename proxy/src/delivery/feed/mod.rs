//! One task per consumed queue: reads the queue's topic by offset, hands
//! messages to consumers round-robin within their credit, serves basic.get,
//! and commits the queue group's offset over what is settled.
//!
//! Per message queue of the topic it keeps (offsets only, bodies only while
//! buffered): `next`, the next offset to read; `fresh`, read and not yet
//! handed out; `redeliver`, settled back (nack/reject/recover with requeue,
//! a closed channel) and to be read again; `outstanding`, handed out and not
//! settled. The committed offset is the smallest of them: everything below it
//! is settled, so a gateway that dies loses nothing that was not acknowledged.
//!
//! A feed reads only the message queues it holds a lease on (meta::lease):
//! gateways with consumers of one queue split its message queues between
//! them, and the share of a gateway that dies lapses to the others.
//!
//! This file holds the task's loop, its commands and events; its named
//! parts are `lease` (read leases), `read` (what to read next and what a
//! read brings), `dispatch` (gets, then consumers within credit), `expiry`
//! (TTL at the head) and, one level up, `ledger` (offsets and the commit
//! rule, no I/O).
//!
//! Over 500 lines: the loop, its commands and its events are one state
//! machine over `Task`; what stands alone is in the files beside it.

mod dispatch;
mod expiry;
mod lease;
mod read;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};

use super::ledger::Part;
use super::{dead_letter, ConsumerSlot, FeedContext, ToConnection};
use crate::metrics::queue_stats::QueueStats;
use crate::topology::Vhost;
use crate::upstream::{InboundMessage, Partition, Pulled, Upstream, UpstreamError};
pub use expiry::Expiry;
use lease::LeaseRound;

/// How long the broker holds an empty read (it answers at once when a message arrives).
const LONG_POLL: Duration = Duration::from_secs(5);
/// Messages asked for per read (the broker caps it: see
/// maxTransferCountOnMessageInMemory in deploy/rocketmq/start.sh).
const PULL_BATCH: u32 = 256;
/// Read ahead at most this many messages per message queue.
const READ_AHEAD: usize = 512;
/// Messages asked for per read when no consumer is here and the feed reads
/// only to expire messages (small: such feeds may be many and long-lived).
const REAP_BATCH: u32 = 16;
/// Offsets are committed at most this often per message queue.
const COMMIT_EVERY: Duration = Duration::from_millis(50);
/// After a failed read or commit, wait this long before trying again.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How a consumer settled handed-out messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done with: never delivered again.
    Ack,
    /// Delivered again, with redelivered=true (nack/reject requeue, recover,
    /// a closed channel).
    Requeue,
    /// Handed out but never written to the client (its consumer went away
    /// in between): delivered again as if it had not been.
    Unsent,
    /// Rejected without requeue: dead-lettered if the queue has a
    /// dead-letter exchange, otherwise dropped.
    Reject,
}

/// A message taken by basic.get.
#[derive(Debug)]
pub struct Got {
    pub message: InboundMessage,
    pub redelivered: bool,
    /// Ready messages left in the queue.
    pub remaining: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeError {
    /// Another consumer holds the queue exclusively, or an exclusive
    /// consumer was asked for while others exist.
    ExclusiveUse,
    /// The queue was deleted.
    Gone,
}

pub enum FeedCommand {
    Subscribe(ConsumerSlot, oneshot::Sender<Result<(), SubscribeError>>),
    /// Removes a consumer; answers how many remain.
    Unsubscribe(u64, oneshot::Sender<usize>),
    Settle(Vec<(i32, i64)>, Outcome),
    /// Credit was given back somewhere: look again.
    Wake,
    Get(oneshot::Sender<Result<Option<Got>, UpstreamError>>),
    /// Ready messages (given the log ends now) and consumers.
    Count(Vec<Partition>, oneshot::Sender<FeedCounts>),
    /// Drops every ready message (given the log ends now); answers how many.
    Purge(Vec<Partition>, oneshot::Sender<u64>),
    /// The queue is deleted: cancel every consumer and end.
    Stop,
    /// The gateway shuts down: commit what is settled, give the read leases
    /// back, answer, and end.
    Drain(oneshot::Sender<()>),
}

/// The handle to a queue's feed task.
#[derive(Debug)]
pub struct Feed {
    tx: mpsc::UnboundedSender<FeedCommand>,
    pub topic: String,
    pub queue: String,
    pub vhost: String,
    /// The queue's message counts (shared with its state).
    pub stats: Arc<QueueStats>,
    /// Messages stored in the message queues leased here and not read yet,
    /// as of the last reads (Prometheus: amqp_gateway_feed_lag_messages).
    pub lag: AtomicU64,
    /// Read leases this gateway holds on the queue's message queues.
    pub leases: AtomicU64,
}

impl Feed {
    pub fn start(context: FeedContext, vhost: Arc<Vhost>, queue: &meta::Queue) -> Arc<Feed> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (expiry, priority, stats) = match vhost.read().queues.get(&queue.name) {
            Some(state) => (
                Expiry::of(state),
                state.arguments.max_priority.is_some(),
                state.stats.clone(),
            ),
            None => (Expiry::default(), false, Arc::default()),
        };
        let feed = Arc::new(Feed {
            tx,
            topic: queue.topic.clone(),
            queue: queue.name.clone(),
            vhost: queue.vhost.clone(),
            stats,
            lag: AtomicU64::new(0),
            leases: AtomicU64::new(0),
        });
        let task = Task {
            feed: feed.clone(),
            upstream: context.upstream,
            store: context.store,
            owner: context.owner,
            gateway: context.gateway,
            clock: context.clock,
            leasing: false,
            lease_at: Instant::now(),
            leases_known: false,
            withdrawn: false,
            vhost,
            topic: queue.topic.clone(),
            group: queue.group.clone(),
            rx,
            parts: Vec::new(),
            consumers: Vec::new(),
            next_consumer: 0,
            next_part: 0,
            gets: VecDeque::new(),
            probing: false,
            probe_again_at: None,
            probe_retries: 0,
            pending: FuturesUnordered::new(),
            commit_at: None,
            expiry,
            expire_at: None,
            priority,
        };
        tokio::spawn(task.run());
        feed
    }

    /// Sends a command; a feed that ended ignores it.
    pub fn send(&self, command: FeedCommand) {
        let _ = self.tx.send(command);
    }

    pub async fn subscribe(&self, slot: ConsumerSlot) -> Result<(), SubscribeError> {
        let (reply, answer) = oneshot::channel();
        self.send(FeedCommand::Subscribe(slot, reply));
        answer.await.unwrap_or(Err(SubscribeError::Gone))
    }

    /// Removes a consumer; how many consumers the queue still has here.
    pub async fn unsubscribe(&self, id: u64) -> usize {
        let (reply, answer) = oneshot::channel();
        self.send(FeedCommand::Unsubscribe(id, reply));
        answer.await.unwrap_or(0)
    }

    pub fn settle(&self, items: Vec<(i32, i64)>, outcome: Outcome) {
        if !items.is_empty() {
            self.send(FeedCommand::Settle(items, outcome));
        }
    }

    pub async fn get(&self) -> Result<Option<Got>, UpstreamError> {
        let (reply, answer) = oneshot::channel();
        self.send(FeedCommand::Get(reply));
        answer.await.unwrap_or(Ok(None))
    }

    pub async fn count(&self, partitions: Vec<Partition>) -> FeedCounts {
        let (reply, answer) = oneshot::channel();
        self.send(FeedCommand::Count(partitions, reply));
        answer.await.unwrap_or_default()
    }

    pub async fn purge(&self, partitions: Vec<Partition>) -> u64 {
        let (reply, answer) = oneshot::channel();
        self.send(FeedCommand::Purge(partitions, reply));
        answer.await.unwrap_or(0)
    }
}

/// A queue as its feed sees it: ready messages (given the log ends now),
/// messages handed out here and not settled, consumers here.
#[derive(Debug, Clone, Copy, Default)]
pub struct FeedCounts {
    pub ready: u64,
    pub unacked: u64,
    pub consumers: u32,
}

enum Event {
    Fresh(i32, Result<Pulled, UpstreamError>),
    Again(i32, i64, Result<Pulled, UpstreamError>),
    /// basic.get found nothing buffered and read each message queue once.
    Probed(Vec<(i32, Result<Pulled, UpstreamError>)>),
    Committed(i32, i64, Result<(), UpstreamError>),
    DeadLettered(i32, i64, Result<(), UpstreamError>),
    Leased(Result<LeaseRound, String>),
}

type EventFuture = Pin<Box<dyn Future<Output = Event> + Send>>;

struct Task {
    feed: Arc<Feed>,
    upstream: Arc<dyn Upstream>,
    store: meta::Store,
    owner: String,
    gateway: std::sync::Weak<crate::Gateway>,
    /// What message TTLs and leases count with.
    clock: crate::clock::Clock,
    /// A lease round is running.
    leasing: bool,
    lease_at: Instant,
    /// At least one lease round finished (gets know whether to wait).
    leases_known: bool,
    /// The last round found nothing wanted and nothing held: no more rounds
    /// until a consumer or get comes.
    withdrawn: bool,
    vhost: Arc<Vhost>,
    topic: String,
    group: String,
    rx: mpsc::UnboundedReceiver<FeedCommand>,
    parts: Vec<Part>,
    consumers: Vec<ConsumerSlot>,
    next_consumer: usize,
    next_part: usize,
    gets: VecDeque<oneshot::Sender<Result<Option<Got>, UpstreamError>>>,
    probing: bool,
    /// A probe found nothing although this gateway stored more: look again then.
    probe_again_at: Option<Instant>,
    probe_retries: u32,
    pending: FuturesUnordered<EventFuture>,
    commit_at: Option<Instant>,
    expiry: Expiry,
    /// When the earliest buffered head message expires.
    expire_at: Option<Instant>,
    /// A priority queue: one message queue per level, highest id first;
    /// read by one gateway at a time.
    priority: bool,
}

impl Task {
    async fn run(mut self) {
        if !self.load().await {
            return;
        }
        loop {
            self.lease();
            self.dispatch();
            self.schedule();
            let timer = self.next_timer();
            tokio::select! {
                command = self.rx.recv() => {
                    let Some(command) = command else { return };
                    if !self.command(command) {
                        return;
                    }
                    // Take what else is queued before dispatching again.
                    for _ in 0..256 {
                        match self.rx.try_recv() {
                            Ok(command) => if !self.command(command) { return },
                            Err(_) => break,
                        }
                    }
                }
                Some(event) = self.pending.next(), if !self.pending.is_empty() => self.event(event),
                _ = sleep_until(timer.unwrap_or_else(far)), if timer.is_some() => {}
            }
            self.commit();
            self.report();
        }
    }

    /// Reads where the group stands; retries until RocketMQ answers or the queue goes.
    async fn load(&mut self) -> bool {
        loop {
            match self.upstream.partitions(&self.topic, &self.group).await {
                Ok(partitions) => {
                    self.parts = partitions
                        .into_iter()
                        .map(|p| Part {
                            id: p.queue_id,
                            next: p.committed,
                            max: p.max,
                            committed: p.committed,
                            ..Part::default()
                        })
                        .collect();
                    if self.priority {
                        self.parts.sort_by_key(|p| std::cmp::Reverse(p.id));
                    }
                    tracing::debug!(topic = %self.topic, parts = self.parts.len(), "Feed started.");
                    return true;
                }
                Err(error) => {
                    tracing::warn!(topic = %self.topic, %error, "Cannot read the queue's position in RocketMQ; retrying.");
                    let retry = tokio::time::sleep(RETRY_AFTER);
                    tokio::pin!(retry);
                    loop {
                        tokio::select! {
                            _ = &mut retry => break,
                            command = self.rx.recv() => match command {
                                None | Some(FeedCommand::Stop) => return false,
                                Some(FeedCommand::Get(reply)) => {
                                    let _ = reply.send(Err(error.clone()));
                                }
                                // Subscriptions wait for the feed to run.
                                Some(other) => {
                                    if !self.command(other) {
                                        return false;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        let retry = self.parts.iter().filter_map(|p| p.retry_at).min();
        [
            retry,
            self.commit_at,
            self.lease_due(),
            self.probe_again_at,
            self.expire_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Handles one command; false ends the feed.
    fn command(&mut self, command: FeedCommand) -> bool {
        match command {
            FeedCommand::Subscribe(slot, reply) => {
                let locked = self.consumers.iter().any(|c| c.exclusive);
                if locked || (slot.exclusive && !self.consumers.is_empty()) {
                    let _ = reply.send(Err(SubscribeError::ExclusiveUse));
                } else {
                    self.consumers.push(slot);
                    let _ = reply.send(Ok(()));
                    self.look_again();
                    self.lease_now_if_idle();
                    // Other gateways see the count (and exclusivity) soon.
                    self.lease_at = self.lease_at.min(Instant::now());
                }
            }
            FeedCommand::Unsubscribe(id, reply) => {
                self.consumers.retain(|c| c.id != id);
                let _ = reply.send(self.consumers.len());
                // Give the leases back soon if it was the last one, and
                // tell other gateways the new count.
                self.lease_at = Instant::now();
            }
            FeedCommand::Settle(items, outcome) => self.settle(items, outcome),
            FeedCommand::Wake => {}
            FeedCommand::Get(reply) => {
                self.gets.push_back(reply);
                self.look_again();
                self.lease_now_if_idle();
            }
            FeedCommand::Count(partitions, reply) => {
                let _ = reply.send(FeedCounts {
                    ready: self.ready_given(&partitions),
                    unacked: self
                        .parts
                        .iter()
                        .filter(|p| p.leased)
                        .map(|p| p.outstanding.len() as u64)
                        .sum(),
                    consumers: self.consumers.len() as u32,
                });
            }
            FeedCommand::Purge(partitions, reply) => {
                let ready = self.ready_given(&partitions);
                for part in &mut self.parts {
                    let max = partitions
                        .iter()
                        .find(|p| p.queue_id == part.id)
                        .map_or(part.max, |p| p.max);
                    if !part.leased {
                        // Not read here: its group moves straight to the end.
                        let (upstream, topic, group, id) = (
                            self.upstream.clone(),
                            self.topic.clone(),
                            self.group.clone(),
                            part.id,
                        );
                        tokio::spawn(async move {
                            if let Err(error) = upstream.commit(&topic, &group, id, max).await {
                                tracing::warn!(%topic, %error, "Purging a message queue read by no one here failed.");
                            }
                        });
                        continue;
                    }
                    part.fresh.clear();
                    part.again.clear();
                    part.redeliver.clear();
                    part.max = part.max.max(max);
                    part.next = part.next.max(part.max);
                }
                self.commit_soon();
                let _ = reply.send(ready);
            }
            FeedCommand::Drain(done) => {
                self.drain(done);
                return false;
            }
            FeedCommand::Stop => {
                for c in self.consumers.drain(..) {
                    let _ = c.sink.send(ToConnection::Cancelled {
                        channel: c.channel,
                        epoch: c.epoch,
                        consumer_tag: c.tag.clone(),
                    });
                }
                for get in self.gets.drain(..) {
                    let _ = get.send(Ok(None));
                }
                return false;
            }
        }
        true
    }

    /// Ready messages: exact on the message queues read here; on the others,
    /// what their group has not committed (another gateway's unacked included).
    fn ready_given(&mut self, partitions: &[Partition]) -> u64 {
        let mut ready = 0;
        for part in &mut self.parts {
            let position = partitions.iter().find(|p| p.queue_id == part.id);
            ready += match (part.leased, position) {
                (true, Some(p)) => part.unread(p.max),
                (true, None) => part.unread(part.max),
                (false, Some(p)) => (p.max - p.committed).max(0) as u64,
                (false, None) => 0,
            };
        }
        ready
    }

    fn settle(&mut self, items: Vec<(i32, i64)>, outcome: Outcome) {
        let dead_letter_to = match outcome {
            Outcome::Reject => dead_letter::target(&self.vhost, &self.feed.queue),
            _ => None,
        };
        for (id, offset) in items {
            let Some(part) = self.parts.iter_mut().find(|p| p.id == id) else {
                continue;
            };
            match outcome {
                Outcome::Ack | Outcome::Requeue | Outcome::Unsent => part.settle(offset, outcome),
                Outcome::Reject => match &dead_letter_to {
                    // Stays outstanding until the dead-lettered copy is stored.
                    Some(target) if part.outstanding.contains(&offset) => {
                        let (gateway, vhost, topic, target) = (
                            self.gateway.clone(),
                            self.vhost.clone(),
                            self.topic.clone(),
                            target.clone(),
                        );
                        let queue = self.feed.queue.clone();
                        self.pending.push(Box::pin(async move {
                            let result = match gateway.upgrade() {
                                Some(gateway) => {
                                    dead_letter::send(
                                        &gateway, &vhost, &topic, &queue, id, offset, &target,
                                    )
                                    .await
                                }
                                None => Err(gateway_gone()),
                            };
                            Event::DeadLettered(id, offset, result)
                        }));
                    }
                    _ => part.settle(offset, Outcome::Reject),
                },
            }
        }
        self.commit_soon();
    }

    fn commit_soon(&mut self) {
        if self.commit_at.is_none() {
            self.commit_at = Some(Instant::now() + COMMIT_EVERY);
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Fresh(id, result) => {
                if let Some(part) = self.parts.iter_mut().find(|p| p.id == id) {
                    part.pulling_fresh = false;
                    self.accept_fresh(id, result);
                }
            }
            Event::Probed(results) => {
                self.probing = false;
                let mut failure = None;
                for (id, result) in results {
                    if let Err(e) = &result {
                        failure = Some(e.clone());
                    }
                    self.accept_fresh(id, result);
                }
                // Stored by this gateway but not readable yet (RocketMQ indexes
                // a moment after SEND_OK): look again shortly, for up to ~200 ms.
                let written = self.upstream.written_end(&self.topic);
                tracing::debug!(topic = %self.topic, ?written, next = ?self.parts.iter().map(|p| (p.id, p.next, p.leased)).collect::<Vec<_>>(), "Probe found nothing.");
                let unread_stored = self.parts.iter().any(|p| {
                    p.leased && written.iter().any(|(id, end)| *id == p.id && *end > p.next)
                });
                if failure.is_none()
                    && !self.parts.iter().any(Part::has_message)
                    && unread_stored
                    && self.probe_retries < 100
                {
                    self.probe_retries += 1;
                    self.probe_again_at = Some(Instant::now() + Duration::from_millis(2));
                    return;
                }
                self.probe_retries = 0;
                if !self.parts.iter().any(Part::has_message) {
                    // Nothing to give: every waiting get is answered empty (or failed).
                    for get in self.gets.drain(..) {
                        let _ = get.send(match &failure {
                            Some(e) => Err(e.clone()),
                            None => Ok(None),
                        });
                    }
                }
            }
            Event::Again(id, from, result) => {
                let Some(part) = self.parts.iter_mut().find(|p| p.id == id) else {
                    return;
                };
                part.pulling_again = false;
                match result {
                    Ok(pulled) => {
                        if !part.read_back(pulled.messages, from) {
                            // Retention removed it from RocketMQ before it was redelivered.
                            tracing::error!(topic = %self.topic, queue_id = id, offset = from, "A requeued message is no longer in RocketMQ; it cannot be redelivered.");
                            crate::metrics::REDELIVERY_LOST.increment(1);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(topic = %self.topic, %error, "Reading requeued messages failed; retrying.");
                        part.retry_at = Some(Instant::now() + RETRY_AFTER);
                    }
                }
            }
            Event::Committed(id, offset, result) => {
                let Some(part) = self.parts.iter_mut().find(|p| p.id == id) else {
                    return;
                };
                part.committing = false;
                match result {
                    Ok(()) => part.committed = part.committed.max(offset),
                    Err(error) => {
                        tracing::warn!(topic = %self.topic, %error, "Committing the queue's offset failed; retrying.");
                        self.commit_at = Some(Instant::now() + RETRY_AFTER);
                    }
                }
                if part.settled_below() > part.committed {
                    self.commit_soon();
                }
            }
            Event::Leased(result) => self.leased(result),
            Event::DeadLettered(id, offset, result) => {
                let Some(part) = self.parts.iter_mut().find(|p| p.id == id) else {
                    return;
                };
                if part.dead_lettered(offset, result.is_ok()) {
                    if let Err(error) = result {
                        tracing::warn!(topic = %self.topic, offset, %error, "Dead-lettering failed; the message is requeued instead.");
                    }
                }
                self.commit_soon();
            }
        }
    }

    /// Publishes the feed's lag and leases for Prometheus.
    fn report(&self) {
        let leased = self.parts.iter().filter(|p| p.leased);
        let lag: i64 = leased.clone().map(|p| (p.max - p.next).max(0)).sum();
        self.feed.lag.store(lag as u64, Ordering::Relaxed);
        self.feed
            .leases
            .store(leased.count() as u64, Ordering::Relaxed);
    }

    fn commit(&mut self) {
        if self.commit_at.is_none_or(|t| t > Instant::now()) {
            return;
        }
        self.commit_at = None;
        for part in self.parts.iter_mut().filter(|p| p.leased) {
            let target = part.settled_below();
            if target <= part.committed || part.committing {
                continue;
            }
            part.committing = true;
            let (upstream, topic, group, id) = (
                self.upstream.clone(),
                self.topic.clone(),
                self.group.clone(),
                part.id,
            );
            self.pending.push(Box::pin(async move {
                let result = upstream.commit(&topic, &group, id, target).await;
                Event::Committed(id, target, result)
            }));
        }
    }
}

/// Dead letters need the gateway's publish path; it is gone only while the
/// process ends (the message stays unsettled and is read again).
fn gateway_gone() -> UpstreamError {
    UpstreamError::Unavailable("the gateway is shutting down".into())
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}
