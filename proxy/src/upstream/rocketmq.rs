//! `Upstream` on a RocketMQ cluster through rocketmq-client-rust.
//!
//! Sends are pipelined: the producer is cheap to clone and every send is its
//! own future, so a channel keeps many in flight. Queue storage is one topic
//! per AMQP queue (see docs/architecture.md for why), read through one
//! consumer group whose committed offsets are the queue's read position.
//!
//! Classic pull is deprecated in favour of the lite pull consumer, which has no
//! stateless "read N from offset X"; `peek` needs exactly that.
//!
//! (Over 500 lines: `impl Upstream for RocketMq` is one block, each method
//! a few lines over the client; starting the clients is in clients.rs,
//! routes, queue storage, reads and the gate in their own modules.)
#![allow(deprecated)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cheetah_string::CheetahString;
use dashmap::DashMap;
use rocketmq_client_rust::{
    ConsumerAdmin, DefaultMQAdminExt, DefaultMQProducer, OffsetAdmin, SendStatus,
};
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_model::common::message::MessageTrait;
use rocketmq_protocol::protocol::admin::consume_stats::ConsumeStats;
use tokio::sync::{oneshot, Semaphore};

use super::batch::{Lane, Limits};
pub use super::clients::{ClientRuntimeGuard, Clients};
use super::gate::Gate;
use super::queues::QueueStorage;
use super::reader::Reader;
use super::routes::Routes;
use super::{
    InboundMessage, OutboundMessage, Partition, Pulled, Upstream, UpstreamError, UpstreamFuture,
};

/// How to reach RocketMQ and how to lay queues out on it.
#[derive(Debug, Clone)]
pub struct RocketMqSettings {
    pub name_server: String,
    pub producer_group: String,
    /// Message queues per AMQP queue topic; 1 keeps RabbitMQ's FIFO order.
    pub queues_per_topic: i32,
    pub send_timeout: Duration,
    pub max_message_size: u64,
    /// Sends in flight at once through the client, all connections together.
    pub max_in_flight: usize,
}

pub struct RocketMq {
    settings: RocketMqSettings,
    producer: DefaultMQProducer,
    /// Reads by explicit offset without subscribing to anything (reader.rs).
    reader: Reader,
    admin: Arc<DefaultMQAdminExt>,
    /// Makes and unmakes queue topics and groups.
    queues: QueueStorage,
    /// Sends in flight to RocketMQ from this gateway, all connections together.
    send_permits: Arc<Semaphore>,
    /// One send lane per queue topic (see `batch`).
    lanes: DashMap<String, Arc<Lane<Message>>>,
    /// Per (topic, message queue): the end of the log as the last SEND_OK said.
    written: Arc<DashMap<(String, i32), i64>>,
    routes: Routes,
    /// Holds requests while no broker answers (gate.rs).
    gate: Arc<Gate>,
    // Owns the client's background tasks; dropped last.
    _runtime: ClientRuntimeGuard,
}

impl std::fmt::Debug for RocketMq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocketMq")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A batch request carries at most this much (the broker takes 4 MiB or more).
const BATCH_LIMITS: Limits = Limits {
    messages: 256,
    bytes: 1024 * 1024,
};

/// The client's message, and the topic handed back (no copy of it is made
/// per message).
fn to_message(message: OutboundMessage) -> (Message, String) {
    // RocketMQ refuses an empty body; AMQP allows it (signals, header-only
    // events). One placeholder byte is stored, marked, and taken off on read.
    let empty = message.body.is_empty();
    let body = if empty {
        Bytes::from_static(EMPTY_BODY_PLACEHOLDER)
    } else {
        message.body
    };
    let mut msg = Message::builder()
        .topic(message.topic.as_str())
        .body(body)
        .build_unchecked();
    if empty {
        msg.put_property(
            CheetahString::from_static_str(EMPTY_BODY),
            CheetahString::from_static_str("1"),
        );
    }
    for (key, value) in message.properties {
        if !value.is_empty() {
            msg.put_property(
                CheetahString::from_static_str(key),
                CheetahString::from(value),
            );
        }
    }
    (msg, message.topic)
}

/// Stores one batch (a single message goes as a plain send), retrying the
/// client's admission refusals within the send timeout; waits at the gate
/// while no broker answers.
async fn store(
    producer: DefaultMQProducer,
    permits: Arc<Semaphore>,
    batch: Vec<Message>,
    queue: Option<MessageQueue>,
    timeout: Duration,
    written: Arc<DashMap<(String, i32), i64>>,
    gate: Arc<Gate>,
) -> Result<(), UpstreamError> {
    // Bounded here, so that a burst waits in the gateway (where backpressure
    // sees it) instead of being refused by the client.
    let _permit = permits
        .acquire_owned()
        .await
        .map_err(|_| unavailable("send", "upstream closed"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Duration::from_millis(1);
    loop {
        gate.pass(deadline).await?;
        let result = match (batch.as_slice(), &queue) {
            ([one], None) => producer.send(one.clone()).await,
            ([one], Some(mq)) => producer.send_to_queue(one.clone(), mq.clone()).await,
            (many, None) => producer.send_batch(many.to_vec()).await.map(Some),
            (many, Some(mq)) => producer
                .send_batch_to_queue(many.to_vec(), mq.clone())
                .await
                .map(Some),
        };
        match result {
            Ok(Some(result)) if result.send_status == SendStatus::SendOk => {
                // Where the message queue's log ends now: readable a moment
                // later (the broker indexes asynchronously).
                if let Some(mq) = &result.message_queue {
                    let end = result.queue_offset as i64 + batch.len() as i64;
                    let mut entry = written
                        .entry((mq.topic().to_string(), mq.queue_id()))
                        .or_insert(end);
                    *entry = (*entry).max(end);
                }
                return Ok(());
            }
            Ok(Some(result)) => {
                return Err(UpstreamError::Refused(format!(
                    "send status {:?}",
                    result.send_status
                )))
            }
            Ok(None) => return Err(UpstreamError::Refused("send returned no result".into())),
            // The client refused to queue the request: nothing was sent, so
            // trying again cannot store a message twice.
            Err(e)
                if is_admission_refusal(&e) && tokio::time::Instant::now() + backoff < deadline =>
            {
                crate::metrics::UPSTREAM_ADMISSION_RETRIES.increment(1);
                tracing::debug!(error = %e, ?backoff, "RocketMQ client refused to queue a send; retrying.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(50));
            }
            Err(e) => {
                gate.failed();
                return Err(unavailable("send", e));
            }
        }
    }
}

/// The client's own admission control refused to queue a request (its
/// transport queue is saturated): known by the error's canonical identity.
fn is_admission_refusal(e: &rocketmq_client_rust::ClientError) -> bool {
    e.is(&rocketmq_error::TRANSPORT_ADMISSION_QUEUE_SATURATED)
}

pub(super) fn unavailable(what: &str, e: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Unavailable(format!("{what}: {e}"))
}

impl RocketMq {
    /// Starts a producer and an admin client against the name server.
    pub async fn connect(settings: RocketMqSettings) -> Result<RocketMq, UpstreamError> {
        let Clients {
            producer,
            reader,
            admin,
            runtime,
            ..
        } = Clients::start(&settings).await?;
        let send_permits = Arc::new(Semaphore::new(settings.max_in_flight));
        let gate = Arc::new(Gate::default());
        let rocketmq = RocketMq {
            settings,
            producer,
            reader,
            admin: admin.clone(),
            queues: QueueStorage::new(admin.clone(), gate.clone()),
            send_permits,
            lanes: DashMap::new(),
            written: Arc::default(),
            routes: Routes {
                admin,
                cache: Arc::default(),
                gate: gate.clone(),
            },
            gate,
            _runtime: runtime,
        };
        // The brokers the gate probes: known from the start, and from every
        // route and cluster lookup after.
        if let Err(e) = rocketmq.queues.broker_addresses().await {
            tracing::warn!(error = %e, "RocketMQ's brokers could not be listed at start.");
        }
        Ok(rocketmq)
    }

    /// Runs a request once the gate lets it (within the send timeout),
    /// telling the gate when it failed for want of RocketMQ; abandons it if
    /// the gate closes meanwhile (gate.rs).
    async fn gated<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        self.gate
            .pass(tokio::time::Instant::now() + self.settings.send_timeout)
            .await?;
        let closes = self.gate.closes();
        let result = tokio::select! {
            result = request => result,
            _ = closes => Err(UpstreamError::Unavailable(
                "abandoned: RocketMQ's brokers stopped accepting connections".into(),
            )),
        };
        if matches!(result, Err(UpstreamError::Unavailable(_))) {
            self.gate.failed();
        }
        result
    }

    /// One broker's consume stats of `group` on `topic`. Asked of each broker
    /// by address: without one the client looks brokers up through the
    /// group's retry topic, which exists only once a consumer has run.
    async fn consume_stats(
        &self,
        group: &str,
        topic: &str,
        addr: &CheetahString,
    ) -> Result<ConsumeStats, UpstreamError> {
        self.admin
            .examine_consume_stats(
                group.into(),
                Some(topic.into()),
                None,
                Some(addr.clone()),
                None,
            )
            .await
            .map_err(|e| unavailable("consume stats", e))
    }
}

/// Property marking a message whose AMQP body is empty (see `to_message`).
const EMPTY_BODY: &str = "AMQP_EMPTY_BODY";
const EMPTY_BODY_PLACEHOLDER: &[u8] = b"\0";

/// A stored message as the gateway sees it: only the gateway's own properties.
fn inbound(m: &MessageExt) -> InboundMessage {
    let mut empty = false;
    let properties = m
        .properties()
        .iter()
        .filter(|(k, _)| k.starts_with("AMQP_"))
        .filter(|(k, _)| {
            let marker = k.as_str() == EMPTY_BODY;
            empty |= marker;
            !marker
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    InboundMessage {
        queue_id: m.queue_id(),
        offset: m.queue_offset(),
        born_ms: m.born_timestamp(),
        body: if empty {
            Bytes::new()
        } else {
            m.body().unwrap_or_default()
        },
        properties,
    }
}

impl Upstream for RocketMq {
    fn send(&self, message: OutboundMessage) -> UpstreamFuture<'static, ()> {
        let size = message.body.len()
            + message
                .properties
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>();
        // The topic is cloned only for a queue's first message, not per message.
        let lane = match self.lanes.get(&message.topic) {
            Some(lane) => lane.clone(),
            None => self.lanes.entry(message.topic.clone()).or_default().clone(),
        };
        let (answer, answered) = oneshot::channel();
        let queue_id = message.queue_id;
        let (message, topic) = to_message(message);
        if lane.push(message, size, queue_id, answer) {
            let (producer, permits, timeout, written) = (
                self.producer.clone(),
                self.send_permits.clone(),
                self.settings.send_timeout,
                self.written.clone(),
            );
            let routes = self.routes.clone();
            let gate = self.gate.clone();
            tokio::spawn(lane.drain(BATCH_LIMITS, move |batch, queue_id| {
                let (producer, permits, written, routes, topic, gate) = (
                    producer.clone(),
                    permits.clone(),
                    written.clone(),
                    routes.clone(),
                    topic.clone(),
                    gate.clone(),
                );
                async move {
                    let queue = match queue_id {
                        Some(id) => Some(routes.level(&topic, id).await?),
                        None => None,
                    };
                    store(producer, permits, batch, queue, timeout, written, gate).await
                }
            }));
        }
        let started = std::time::Instant::now();
        Box::pin(async move {
            let result = answered
                .await
                .unwrap_or_else(|_| Err(unavailable("send", "the send lane stopped")));
            crate::metrics::UPSTREAM_SEND_SECONDS.record(started.elapsed());
            result
        })
    }

    fn create_queue<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        message_queues: Option<i32>,
    ) -> UpstreamFuture<'a, ()> {
        self.routes.cache.remove(topic);
        let queues = message_queues.unwrap_or(self.settings.queues_per_topic);
        Box::pin(self.gated(self.queues.create(topic, group, queues.max(1) as u32)))
    }

    fn forget_topic(&self, topic: &str) {
        self.lanes.remove(topic);
        self.routes.cache.remove(topic);
        self.written.retain(|(t, _), _| t != topic);
    }

    fn delete_queue<'a>(&'a self, topic: &'a str, group: &'a str) -> UpstreamFuture<'a, ()> {
        self.forget_topic(topic);
        Box::pin(self.gated(self.queues.delete(topic, group)))
    }

    fn backlog<'a>(&'a self, topic: &'a str, group: &'a str) -> UpstreamFuture<'a, u64> {
        Box::pin(self.gated(async move {
            let mut brokers: Vec<CheetahString> = self
                .routes
                .queues_of(topic)
                .await?
                .into_iter()
                .map(|(addr, _)| addr)
                .collect();
            brokers.sort();
            brokers.dedup();
            let mut total = 0u64;
            for addr in brokers {
                let stats = self.consume_stats(group, topic, &addr).await?;
                // Confirmed sends count even before the broker indexed them.
                total += stats
                    .offset_table
                    .iter()
                    .map(|(mq, w)| {
                        let written = self
                            .written
                            .get(&(topic.to_owned(), mq.queue_id()))
                            .map_or(0, |e| *e);
                        let max = w.get_broker_offset().max(written);
                        (max - w.get_consumer_offset().max(0)).max(0) as u64
                    })
                    .sum::<u64>();
            }
            Ok(total)
        }))
    }

    fn purge<'a>(&'a self, topic: &'a str, group: &'a str) -> UpstreamFuture<'a, u64> {
        Box::pin(self.gated(async move {
            let before = self.backlog(topic, group).await?;
            for (addr, mq) in self.routes.queues_of(topic).await? {
                let max = self
                    .admin
                    .max_offset(
                        addr.clone(),
                        mq.clone(),
                        self.settings.send_timeout.as_millis() as u64,
                    )
                    .await
                    .map_err(|e| unavailable("max offset", e))?;
                self.admin
                    .update_consume_offset(addr, group.into(), mq, max.max(0) as u64)
                    .await
                    .map_err(|e| unavailable("update offset", e))?;
            }
            Ok(before)
        }))
    }

    fn peek<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        max: u32,
    ) -> UpstreamFuture<'a, Vec<InboundMessage>> {
        Box::pin(self.gated(async move {
            let mut out = Vec::new();
            for (addr, mq) in self.routes.queues_of(topic).await? {
                if out.len() >= max as usize {
                    break;
                }
                let stats = self.consume_stats(group, topic, &addr).await?;
                let from = stats
                    .offset_table
                    .get(&mq)
                    .map_or(0, |w| w.get_consumer_offset().max(0));
                let wanted = (max as usize - out.len()).min(i32::MAX as usize) as i32;
                let pulled = self.reader.pull(&addr, &mq, from, wanted, None).await?;
                out.extend(pulled.messages.iter().map(inbound));
            }
            Ok(out)
        }))
    }

    fn partitions<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> UpstreamFuture<'a, Vec<Partition>> {
        Box::pin(self.gated(async move {
            let route = self.routes.route(topic).await?;
            let mut brokers: Vec<&CheetahString> = route.iter().map(|(addr, _)| addr).collect();
            brokers.sort();
            brokers.dedup();
            let mut out = Vec::with_capacity(route.len());
            for addr in brokers {
                let stats = self.consume_stats(group, topic, addr).await?;
                for (a, mq) in route.iter().filter(|(a, _)| a == addr) {
                    let (committed, max) = match stats.offset_table.get(mq) {
                        Some(w) => (w.get_consumer_offset().max(0), w.get_broker_offset().max(0)),
                        None => {
                            let max = self
                                .admin
                                .max_offset(
                                    a.clone(),
                                    mq.clone(),
                                    self.settings.send_timeout.as_millis() as u64,
                                )
                                .await
                                .map_err(|e| unavailable("max offset", e))?;
                            (0, max.max(0))
                        }
                    };
                    let max = max.max(
                        self.written
                            .get(&(topic.to_owned(), mq.queue_id()))
                            .map_or(0, |e| *e),
                    );
                    out.push(Partition {
                        queue_id: mq.queue_id(),
                        committed: committed.min(max),
                        max,
                    });
                }
            }
            Ok(out)
        }))
    }

    fn pull<'a>(
        &'a self,
        topic: &'a str,
        queue_id: i32,
        offset: i64,
        max: u32,
        wait: Option<Duration>,
    ) -> UpstreamFuture<'a, Pulled> {
        Box::pin(self.gated(async move {
            let (addr, mq) = self.routes.message_queue(topic, queue_id).await?;
            let wanted = max.clamp(1, i32::MAX as u32) as i32;
            let started = std::time::Instant::now();
            let batch = self.reader.pull(&addr, &mq, offset, wanted, wait).await?;
            // A long poll that waited for messages says nothing of RocketMQ's speed.
            if wait.is_none() || !batch.messages.is_empty() {
                crate::metrics::UPSTREAM_PULL_SECONDS.record(started.elapsed());
            }
            Ok(Pulled {
                messages: batch.messages.iter().map(inbound).collect(),
                next_offset: batch.next_offset,
                max_offset: batch.max_offset,
                offset_illegal: batch.offset_illegal,
            })
        }))
    }

    fn commit<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
        queue_id: i32,
        offset: i64,
    ) -> UpstreamFuture<'a, ()> {
        Box::pin(self.gated(async move {
            let (addr, mq) = self.routes.message_queue(topic, queue_id).await?;
            self.admin
                .update_consume_offset(addr, group.into(), mq, offset.max(0) as u64)
                .await
                .map_err(|e| unavailable("commit offset", e))
        }))
    }

    fn written_end(&self, topic: &str) -> Vec<(i32, i64)> {
        self.written
            .iter()
            .filter(|e| e.key().0 == topic)
            .map(|e| (e.key().1, *e.value()))
            .collect()
    }

    fn max_message_size(&self) -> u64 {
        self.settings.max_message_size
    }
}
