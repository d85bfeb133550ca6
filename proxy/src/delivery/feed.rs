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

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};

use super::ledger::Part;
use super::{dead_letter, ConsumerSlot, Delivery, FeedContext, ToConnection};
use crate::follow::now_ms;
use crate::mapping::properties::MESSAGE_TTL;
use crate::topology::Vhost;
use crate::upstream::{InboundMessage, Partition, Pulled, Upstream, UpstreamError};

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
/// Leases are renewed (and shares looked at again) this often...
const LEASE_EVERY: Duration = Duration::from_secs(1);
/// ...and lapse this long after their last renewal.
const LEASE_TTL: Duration = Duration::from_secs(5);

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
    Count(Vec<Partition>, oneshot::Sender<(u64, u32)>),
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
}

impl Feed {
    pub fn start(context: FeedContext, vhost: Arc<Vhost>, queue: &meta::Queue) -> Arc<Feed> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (expiry, priority) = match vhost.read().queues.get(&queue.name) {
            Some(state) => (Expiry::of(state), state.arguments.max_priority.is_some()),
            None => (Expiry::default(), false),
        };
        let feed = Arc::new(Feed {
            tx,
            topic: queue.topic.clone(),
            queue: queue.name.clone(),
        });
        let task = Task {
            feed: feed.clone(),
            upstream: context.upstream,
            store: context.store,
            owner: context.owner,
            gateway: context.gateway,
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

    pub async fn count(&self, partitions: Vec<Partition>) -> (u64, u32) {
        let (reply, answer) = oneshot::channel();
        self.send(FeedCommand::Count(partitions, reply));
        answer.await.unwrap_or((0, 0))
    }

    pub async fn purge(&self, partitions: Vec<Partition>) -> u64 {
        let (reply, answer) = oneshot::channel();
        self.send(FeedCommand::Purge(partitions, reply));
        answer.await.unwrap_or(0)
    }
}

/// How a queue's messages expire (x-message-ttl, per-message expiration).
#[derive(Debug, Clone, Copy, Default)]
pub struct Expiry {
    /// The queue's x-message-ttl in milliseconds.
    pub queue_ttl: Option<i64>,
    /// The feed reads even without consumers, to expire messages when they
    /// reach the head (and dead-letter them): queues with x-message-ttl or
    /// a dead-letter exchange.
    pub reaps: bool,
}

impl Expiry {
    pub fn of(state: &crate::topology::QueueState) -> Expiry {
        Expiry {
            queue_ttl: state.arguments.message_ttl,
            reaps: state.arguments.reaps(),
        }
    }

    /// When the message expires (milliseconds since the epoch), if it does.
    fn deadline(&self, m: &InboundMessage) -> Option<i64> {
        let own = m.property(MESSAGE_TTL).and_then(|t| t.parse::<i64>().ok());
        let ttl = match (self.queue_ttl, own) {
            (Some(q), Some(o)) => q.min(o),
            (q, o) => q.or(o)?,
        };
        Some(m.born_ms.saturating_add(ttl))
    }
}

/// What one lease round found.
struct LeaseRound {
    /// Whether this gateway wanted to read when the round started.
    wanted: bool,
    /// This gateway's share of the topic's message queues.
    share: usize,
    /// Held leases and whether they were renewed.
    renewed: Vec<(i32, bool)>,
    released: Vec<i32>,
    /// Newly taken, with the group's position on each.
    acquired: Vec<Partition>,
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

    /// When the next lease round should run; none while one runs, or while
    /// this gateway neither reads the queue nor wants to (an idle feed costs
    /// the meta store nothing).
    fn lease_due(&self) -> Option<Instant> {
        let idle = self.withdrawn && !self.wants_to_read() && !self.parts.iter().any(|p| p.leased);
        (!self.leasing && !idle).then_some(self.lease_at)
    }

    /// A first reader here should not wait for the next lease round.
    fn lease_now_if_idle(&mut self) {
        if !self.parts.iter().any(|p| p.leased) {
            self.lease_at = Instant::now();
            // What the last round found no longer tells whether a get may wait.
            self.leases_known = false;
        }
    }

    /// Whether this gateway should read the queue at all.
    fn wants_to_read(&self) -> bool {
        self.expiry.reaps
            || !self.consumers.is_empty()
            || !self.gets.is_empty()
            || self.parts.iter().any(|p| p.leased && !p.settled())
    }

    /// Starts a lease round when one is due: announce (or withdraw) this
    /// gateway as a reader, renew held leases, give back surplus ones that
    /// are settled, and take free ones up to this gateway's share.
    fn lease(&mut self) {
        if self.lease_due().is_none_or(|at| Instant::now() < at) {
            return;
        }
        self.leasing = true;
        self.lease_at = Instant::now() + LEASE_EVERY;
        let want = self.wants_to_read();
        let consumers = self.consumers.len() as i64;
        let exclusive = self.consumers.iter().any(|c| c.exclusive);
        let held: Vec<i32> = self
            .parts
            .iter()
            .filter(|p| p.leased)
            .map(|p| p.id)
            .collect();
        // Settled leases that may go if they are (or turn out to be) beyond the share.
        let mut idle: Vec<i32> = self
            .parts
            .iter()
            .filter(|p| p.leased && p.idle())
            .map(|p| p.id)
            .collect();
        // Parts holding only requeued messages nobody here asks for: handed
        // over when another gateway wants to read (or they would wait for a
        // consumer here forever).
        let settled: Vec<i32> = self
            .parts
            .iter()
            .filter(|p| p.leased && p.settled())
            .map(|p| p.id)
            .collect();
        let all: Vec<i32> = self.parts.iter().map(|p| p.id).collect();
        let whole = self.priority;
        let (store, upstream, owner, topic, group) = (
            self.store.clone(),
            self.upstream.clone(),
            self.owner.clone(),
            self.topic.clone(),
            self.group.clone(),
        );
        self.pending.push(Box::pin(async move {
            let round = async {
                let now = crate::follow::now_ms();
                let ttl = LEASE_TTL.as_millis() as i64;
                let share = if want {
                    store
                        .announce_reader(&topic, &owner, now, ttl, consumers, exclusive)
                        .await?;
                    let readers = store.reader_consumers(&topic, now).await?;
                    if whole {
                        // Levels are ordered only within one reader.
                        meta::lease::share_among(1, &readers, &owner) * all.len()
                    } else {
                        meta::lease::share_among(all.len(), &readers, &owner)
                    }
                } else {
                    store.withdraw_reader(&topic, &owner).await?;
                    if !settled.is_empty() {
                        let readers = store.reader_consumers(&topic, now).await?;
                        if readers.iter().any(|(other, _, _)| *other != owner) {
                            idle.extend(settled);
                        }
                    }
                    0
                };
                let mut round = LeaseRound {
                    wanted: want,
                    share,
                    renewed: Vec::new(),
                    released: Vec::new(),
                    acquired: Vec::new(),
                };
                let mut kept = 0;
                for (position, id) in held.iter().enumerate() {
                    // The same fixed order as `leased` uses to pick the surplus.
                    if position >= share && idle.contains(id) {
                        store.release_lease(&topic, *id, &owner).await?;
                        round.released.push(*id);
                        continue;
                    }
                    let renewed = store.try_lease(&topic, *id, &owner, now, ttl).await?;
                    kept += usize::from(renewed);
                    round.renewed.push((*id, renewed));
                }
                let mut taken = Vec::new();
                for id in all.iter().filter(|id| !held.contains(id)) {
                    if kept + taken.len() >= share {
                        break;
                    }
                    if store.try_lease(&topic, *id, &owner, now, ttl).await? {
                        taken.push(*id);
                    }
                }
                Ok::<_, meta::MetaError>((round, taken))
            }
            .await;
            let result = match round {
                Err(e) => Err(e.to_string()),
                Ok((mut round, taken)) if !taken.is_empty() => {
                    // Where the group stands now on what was just taken.
                    match upstream.partitions(&topic, &group).await {
                        Ok(positions) => {
                            round.acquired = positions
                                .into_iter()
                                .filter(|p| taken.contains(&p.queue_id))
                                .collect();
                            Ok(round)
                        }
                        Err(e) => {
                            for id in taken {
                                let _ = store.release_lease(&topic, id, &owner).await;
                            }
                            Err(e.to_string())
                        }
                    }
                }
                Ok((round, _)) => Ok(round),
            };
            Event::Leased(result)
        }));
    }

    fn leased(&mut self, result: Result<LeaseRound, String>) {
        self.leasing = false;
        let round = match result {
            Ok(round) => round,
            Err(error) => {
                tracing::warn!(topic = %self.topic, %error, "Renewing read leases failed; retrying (held leases lapse after their TTL).");
                return;
            }
        };
        // Only a round that knew of the waiting gets tells them anything.
        self.leases_known = round.wanted;
        for (id, renewed) in round.renewed {
            let Some(part) = self.parts.iter_mut().find(|p| p.id == id) else {
                continue;
            };
            if !renewed {
                tracing::warn!(topic = %self.topic, queue_id = id, "Read lease lost to another gateway; what this one handed out will be delivered again there.");
                part.lose_lease();
            }
        }
        for id in round.released {
            if let Some(part) = self.parts.iter_mut().find(|p| p.id == id) {
                part.leased = false;
                part.releasing = false;
                // The next holder reads these from the committed offset.
                part.fresh.clear();
                part.again.clear();
                part.redeliver.clear();
                tracing::debug!(topic = %self.topic, queue_id = id, "Read lease given back.");
            }
        }
        for position in round.acquired {
            if let Some(part) = self.parts.iter_mut().find(|p| p.id == position.queue_id) {
                *part = Part::acquired(part.id, position.committed, position.max);
                tracing::debug!(topic = %self.topic, queue_id = part.id, from = part.next, "Read lease taken.");
            }
        }
        // Beyond the share (in a fixed order): stop reading; the lease goes
        // once settled. Within it: read.
        let mut held = 0;
        for part in self.parts.iter_mut().filter(|p| p.leased) {
            held += 1;
            let surplus = held > round.share;
            if surplus && !part.releasing {
                if let Some(first) = part.fresh.front().map(|m| m.offset) {
                    part.next = part.next.min(first);
                }
                part.fresh.clear();
            }
            part.releasing = surplus;
        }
        self.withdrawn = round.share == 0 && held == 0;
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
                let ready = self.ready_given(&partitions);
                let _ = reply.send((ready, self.consumers.len() as u32));
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

    /// Hands ready messages to waiting gets, then to consumers with credit.
    fn dispatch(&mut self) {
        self.reap();
        while !self.gets.is_empty() {
            let Some((id, message, redelivered)) = self.take_live() else {
                break;
            };
            let remaining = self
                .parts
                .iter()
                .filter(|p| p.leased)
                .map(|p| p.unread(p.max))
                .sum::<u64>();
            let Some(reply) = self.gets.pop_front() else {
                break;
            };
            let offset = message.offset;
            if let Some(part) = self.parts.iter_mut().find(|p| p.id == id) {
                part.handed_out(offset);
            }
            let got = Got {
                message,
                redelivered,
                remaining: remaining.min(u64::from(u32::MAX)) as u32,
            };
            if let Err(Ok(Some(got))) = reply.send(Ok(Some(got))) {
                // The asking channel went away: put it back.
                self.settle(vec![(id, got.message.offset)], Outcome::Unsent);
            }
        }
        if self.consumers.is_empty() {
            return;
        }
        loop {
            if !self.parts.iter().any(Part::has_message) {
                return;
            }
            let Some(index) = self.consumer_with_credit() else {
                return;
            };
            let Some((id, message, redelivered)) = self.take_live() else {
                self.consumers[index].credit.release(1);
                return;
            };
            let consumer = &self.consumers[index];
            let offset = message.offset;
            let delivery = Delivery {
                channel: consumer.channel,
                epoch: consumer.epoch,
                consumer_tag: consumer.tag.clone(),
                redelivered,
                message,
                feed: self.feed.clone(),
                credit: consumer.credit.clone(),
            };
            let no_ack = consumer.no_ack;
            let size = delivery.message.footprint();
            let in_transit = consumer.credit.gate.in_transit.clone();
            in_transit.fetch_add(size, std::sync::atomic::Ordering::AcqRel);
            if let Some(part) = self.parts.iter_mut().find(|p| p.id == id) {
                if !no_ack {
                    part.handed_out(offset);
                }
            }
            if let Err(returned) = consumer.sink.send(ToConnection::Deliver(delivery)) {
                // Its connection is gone: drop the consumer, keep the message.
                let ToConnection::Deliver(delivery) = returned.0 else {
                    continue;
                };
                in_transit.fetch_sub(size, std::sync::atomic::Ordering::AcqRel);
                let consumer = self.consumers.remove(index);
                tracing::debug!(tag = %consumer.tag, "Consumer's connection is gone; removed.");
                if let Some(part) = self.parts.iter_mut().find(|p| p.id == id) {
                    part.outstanding.remove(&offset);
                    let at = part
                        .again
                        .partition_point(|(a, _)| a.offset < delivery.message.offset);
                    part.again.insert(at, (delivery.message, redelivered));
                }
            } else if no_ack {
                self.commit_soon();
            }
        }
    }

    /// The next consumer in round-robin order that may take one more message
    /// (its credit is taken).
    fn consumer_with_credit(&mut self) -> Option<usize> {
        let n = self.consumers.len();
        for step in 0..n {
            let index = (self.next_consumer + step) % n;
            if self.consumers[index].credit.try_take() {
                self.next_consumer = (index + 1) % n;
                return Some(index);
            }
        }
        None
    }

    /// A ready message that has not expired; expired ones met on the way are
    /// dead-lettered or dropped.
    fn take_live(&mut self) -> Option<(i32, InboundMessage, bool)> {
        let now = now_ms();
        loop {
            let (id, message, redelivered) = self.take_ready()?;
            match self.expiry.deadline(&message) {
                Some(at) if at <= now => self.expire(id, message),
                _ => return Some((id, message, redelivered)),
            }
        }
    }

    /// Expires the messages at the head of each message queue read here
    /// (RabbitMQ expires a message when it reaches the head), and sets the
    /// timer for the next head to expire.
    fn reap(&mut self) {
        let now = now_ms();
        let mut next: Option<i64> = None;
        for index in 0..self.parts.len() {
            loop {
                let part = &self.parts[index];
                let deadline = match part.head() {
                    Some(head) if part.leased => self.expiry.deadline(head),
                    _ => None,
                };
                match deadline {
                    Some(at) if at <= now => {
                        let id = self.parts[index].id;
                        if let Some((message, _)) = self.parts[index].take() {
                            self.expire(id, message);
                        }
                    }
                    Some(at) => {
                        next = Some(next.map_or(at, |n| n.min(at)));
                        break;
                    }
                    None => break,
                }
            }
        }
        self.expire_at =
            next.map(|at| Instant::now() + Duration::from_millis((at - now).max(0) as u64));
    }

    /// An expired message: dead-lettered (it stays outstanding until the
    /// copy is stored) or dropped.
    fn expire(&mut self, id: i32, message: InboundMessage) {
        metrics::counter!(crate::metrics::EXPIRED).increment(1);
        if let Some(target) = dead_letter::target(&self.vhost, &self.feed.queue) {
            if let Some(part) = self.parts.iter_mut().find(|p| p.id == id) {
                part.handed_out(message.offset);
            }
            let (gateway, vhost, queue) = (
                self.gateway.clone(),
                self.vhost.clone(),
                self.feed.queue.clone(),
            );
            self.pending.push(Box::pin(async move {
                let result = match gateway.upgrade() {
                    Some(gateway) => {
                        dead_letter::republish(
                            &gateway,
                            &vhost,
                            &queue,
                            &message,
                            &target,
                            dead_letter::Reason::Expired,
                        )
                        .await
                    }
                    None => Err(gateway_gone()),
                };
                Event::DeadLettered(id, message.offset, result)
            }));
        }
        self.commit_soon();
    }

    /// What arrived while no one read is unknown until each message queue
    /// is read once more (a read already waiting on the broker answers as
    /// soon as anything arrives).
    fn look_again(&mut self) {
        for part in self.parts.iter_mut().filter(|p| !p.pulling_fresh) {
            part.looked = false;
        }
    }

    /// A ready message, taking message queues in turn; in a priority queue,
    /// the highest level first, and none while a higher level may hold one
    /// (not read yet, or a requeued message being read back).
    fn take_ready(&mut self) -> Option<(i32, InboundMessage, bool)> {
        if self.priority {
            for part in &mut self.parts {
                if let Some((message, redelivered)) = part.take() {
                    return Some((part.id, message, redelivered));
                }
                if part.leased && (!part.looked || !part.redeliver.is_empty()) {
                    return None;
                }
            }
            return None;
        }
        let n = self.parts.len();
        for step in 0..n {
            let index = (self.next_part + step) % n;
            if let Some((message, redelivered)) = self.parts[index].take() {
                self.next_part = (index + 1) % n;
                return Some((self.parts[index].id, message, redelivered));
            }
        }
        None
    }

    /// Starts the reads that are wanted and not yet running.
    fn schedule(&mut self) {
        let now = Instant::now();
        let wanted = self.consumers.iter().any(|c| c.credit.has_room());
        let reaps = self.expiry.reaps;
        let (priority, getting) = (self.priority, !self.gets.is_empty());
        for part in self.parts.iter_mut().filter(|p| p.leased) {
            if part.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            part.retry_at = None;
            if !part.redeliver.is_empty() && !part.pulling_again {
                let Some((&from, _)) = part.redeliver.first_key_value() else {
                    continue;
                };
                let last = part.redeliver.keys().next_back().copied().unwrap_or(from);
                let span = ((last - from + 1) as u32).clamp(1, PULL_BATCH);
                part.pulling_again = true;
                let (upstream, topic, id) = (self.upstream.clone(), self.topic.clone(), part.id);
                self.pending.push(Box::pin(async move {
                    let result = upstream.pull(&topic, id, from, span, None).await;
                    Event::Again(id, from, result)
                }));
            }
            let to_expire = reaps && part.fresh.is_empty();
            // A get on a priority queue looks at every level it has not seen.
            let to_look = priority && getting && !part.looked;
            if (wanted || to_expire || to_look)
                && !part.releasing
                && !part.pulling_fresh
                && part.fresh.len() < READ_AHEAD
            {
                part.pulling_fresh = true;
                let batch = if wanted { PULL_BATCH } else { REAP_BATCH };
                // A priority level not looked at yet is read without waiting.
                let wait = (part.looked || !priority).then_some(LONG_POLL);
                let (upstream, topic, id, from) = (
                    self.upstream.clone(),
                    self.topic.clone(),
                    part.id,
                    part.next,
                );
                self.pending.push(Box::pin(async move {
                    let result = upstream.pull(&topic, id, from, batch, wait).await;
                    Event::Fresh(id, result)
                }));
            }
        }
        // Another gateway reads the whole queue: a get finds nothing here.
        if self.leases_known && !self.parts.iter().any(|p| p.leased) {
            for get in self.gets.drain(..) {
                let _ = get.send(Ok(None));
            }
        }
        // A get with nothing buffered reads once, without waiting.
        let nothing_ready = !self.parts.iter().any(Part::has_message);
        let again_coming = self.parts.iter().any(|p| !p.redeliver.is_empty());
        let readable = self.parts.iter().any(|p| p.leased && !p.releasing);
        let probe_due = self.probe_again_at.is_none_or(|t| t <= now);
        if !self.gets.is_empty()
            && nothing_ready
            && !again_coming
            && !self.probing
            && readable
            && probe_due
        {
            self.probe_again_at = None;
            self.probing = true;
            let (upstream, topic) = (self.upstream.clone(), self.topic.clone());
            let from: Vec<(i32, i64)> = self
                .parts
                .iter()
                .filter(|p| p.leased && !p.releasing)
                .map(|p| (p.id, p.next))
                .collect();
            self.pending.push(Box::pin(async move {
                let mut results = Vec::with_capacity(from.len());
                for (id, offset) in from {
                    results.push((
                        id,
                        upstream.pull(&topic, id, offset, PULL_BATCH, None).await,
                    ));
                }
                Event::Probed(results)
            }));
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
                            metrics::counter!(crate::metrics::REDELIVERY_LOST).increment(1);
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

    fn accept_fresh(&mut self, id: i32, result: Result<Pulled, UpstreamError>) {
        // A read that finished after its lease went (or the share shrank) is dropped.
        let Some(part) = self
            .parts
            .iter_mut()
            .find(|p| p.id == id && p.leased && !p.releasing)
        else {
            return;
        };
        match result {
            Ok(pulled) => {
                part.max = part.max.max(pulled.max_offset);
                part.accept(pulled.messages);
                // RocketMQ says where the next read starts. Past what it
                // returned, that skips entries it has no message for: the
                // blank ones a topic re-created after a broker restart starts
                // with (its offsets go on from the deleted one's), removed ones.
                if pulled.next_offset > part.next {
                    if pulled.offset_illegal {
                        tracing::warn!(topic = %self.topic, queue_id = id, from = part.next, to = pulled.next_offset, "Read position was outside RocketMQ's log; moved to where it starts.");
                    } else {
                        tracing::debug!(topic = %self.topic, queue_id = id, from = part.next, to = pulled.next_offset, "Skipped entries without a message.");
                    }
                    part.next = pulled.next_offset;
                }
                // A priority level is known once read up to what this
                // gateway stored there (RocketMQ indexes a moment after
                // SEND_OK); until then it is read again without waiting.
                part.looked = !self.priority
                    || self
                        .upstream
                        .written_end(&self.topic)
                        .iter()
                        .all(|(qid, end)| *qid != id || *end <= part.next);
            }
            Err(error) => {
                tracing::warn!(topic = %self.topic, %error, "Reading the queue from RocketMQ failed; retrying.");
                part.retry_at = Some(Instant::now() + RETRY_AFTER);
            }
        }
    }

    /// Commits what is settled, at most every COMMIT_EVERY per message queue.
    /// Commits every leased part up to what is settled, now, then gives
    /// the leases back; answers `done` when finished. Runs on its own
    /// task: the feed ends at once.
    fn drain(&mut self, done: oneshot::Sender<()>) {
        let targets: Vec<(i32, Option<i64>)> = self
            .parts
            .iter()
            .filter(|p| p.leased)
            .map(|p| {
                let target = p.settled_below();
                (p.id, (target > p.committed).then_some(target))
            })
            .collect();
        let (upstream, store, owner, topic, group) = (
            self.upstream.clone(),
            self.store.clone(),
            self.owner.clone(),
            self.topic.clone(),
            self.group.clone(),
        );
        tokio::spawn(async move {
            for (id, target) in targets {
                if let Some(target) = target {
                    if let Err(error) = upstream.commit(&topic, &group, id, target).await {
                        tracing::warn!(%topic, queue_id = id, %error, "Commit at shutdown failed; the next reader starts from the last commit.");
                        continue;
                    }
                }
                let _ = store.release_lease(&topic, id, &owner).await;
            }
            let _ = store.withdraw_reader(&topic, &owner).await;
            let _ = done.send(());
        });
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
