//! basic.consume / cancel / get / ack / nack / reject / recover and the
//! delivery side of the channel: delivery tags, unacknowledged messages and
//! prefetch credit. Messages come from the queue's feed (delivery/feed.rs);
//! settling them goes back to it.
//!
//! Over 500 lines: consume, get and the four ways of settling share the
//! channel's delivery-tag table and credit; split apart, each part would
//! reach into the others' state.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{basic, AMQPClass};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::{Channel, Session};
use crate::codec::FrameEncoder;
use crate::delivery::feed::{Got, SubscribeError};
use crate::delivery::reply_to::{self, Reply};
use crate::delivery::{
    ConsumerCredit, ConsumerSlot, Credit, Delivery, Feed, FeedCommand, Gate, Outcome,
};
use crate::error::{ConnectionException, HardCode, ProtocolError, SoftCode};
use crate::mapping::properties::{stored_properties_wire, PROPERTIES};
use crate::metrics::queue_stats::count;
use crate::topology::{Access, QueueState, Vhost};
use crate::upstream::InboundMessage;
use crate::Gateway;

const CLASS: u16 = 60;
/// A no-ack consumer may have this many messages on their way to the socket.
const NO_ACK_WINDOW: u32 = 1000;

static NEXT_CONSUMER: AtomicU64 = AtomicU64::new(1);

/// A message delivered and not yet settled.
#[derive(Debug)]
pub struct Unacked {
    pub feed: Arc<Feed>,
    pub queue_id: i32,
    pub offset: i64,
    pub credit: Arc<ConsumerCredit>,
}

/// A consumer of this channel.
#[derive(Debug)]
pub struct ChannelConsumer {
    pub id: u64,
    pub feed: Arc<Feed>,
    pub no_ack: bool,
    pub queue: String,
}

/// The consume side of one channel.
#[derive(Debug)]
pub struct Consuming {
    next_tag: u64,
    pub unacked: BTreeMap<u64, Unacked>,
    pub consumers: HashMap<Arc<str>, ChannelConsumer>,
    /// The channel's direct reply-to consumer: its token and tag.
    pub reply_to: Option<(String, Arc<str>)>,
    /// basic.qos global=true: shared by the channel's consumers (0 = none).
    pub channel_credit: Arc<Credit>,
    /// basic.qos global=false: for consumers created afterwards (0 = none).
    pub consumer_prefetch: u32,
    /// Messages taken by basic.get are not limited by prefetch.
    get_credit: Arc<ConsumerCredit>,
    /// channel.flow and the connection's write buffer.
    pub gate: Gate,
}

impl Default for Consuming {
    fn default() -> Self {
        Consuming {
            next_tag: 0,
            unacked: BTreeMap::new(),
            consumers: HashMap::new(),
            reply_to: None,
            channel_credit: Arc::new(Credit::new(0)),
            consumer_prefetch: 0,
            get_credit: ConsumerCredit::new(0, None, Gate::default()),
            gate: Gate::default(),
        }
    }
}

impl Consuming {
    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }
}

/// `amq.ctag-` and 22 random URL-safe characters, as RabbitMQ names them.
fn server_generated_tag() -> String {
    let bytes: [u8; 16] = rand::random();
    format!("amq.ctag-{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The queue a consume/get names ("" was expanded to the channel's last
/// declared queue before: queue::expand_shortcuts).
fn queue_for(s: &Session<'_>, name: &str, method: u16) -> Result<QueueState, ProtocolError> {
    let state = super::queue::existing_queue(s, name, method).map_err(|e| match e {
        // existing_queue reports on queue class methods; this is basic.
        ProtocolError::Channel(id, ex) => ProtocolError::Channel(id, ex.on_method(CLASS, method)),
        other => other,
    })?;
    s.check(Access::Read, "queue", name, CLASS, method)?;
    Ok(state)
}

pub async fn handle_basic_consume(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: basic::Consume,
) -> Result<(), ProtocolError> {
    if m.queue.as_str() == reply_to::QUEUE {
        return consume_replies(ch, s, m);
    }
    let state = queue_for(s, m.queue.as_str(), 20)?;
    let tag: Arc<str> = if m.consumer_tag.as_str().is_empty() {
        server_generated_tag().into()
    } else {
        m.consumer_tag.as_str().into()
    };
    if ch.consuming.consumers.contains_key(&tag) {
        return Err(ConnectionException::new(
            HardCode::NotAllowed,
            format!("attempt to reuse consumer tag '{tag}'"),
        )
        .on_method(CLASS, 20)
        .into());
    }
    // x-priority: consumers of a higher priority are served first (any
    // integer type; anything else is 406, as in RabbitMQ).
    let priority = match m.arguments.inner().get("x-priority") {
        None => 0,
        Some(value) => crate::topology::integer_argument(value).ok_or_else(|| {
            s.channel_error(
                SoftCode::PreconditionFailed,
                format!("invalid arg 'x-priority' for consumer of queue '{}': {value:?} is not an integer", state.record.name),
                CLASS,
                20,
            )
        })?,
    };
    for key in m
        .arguments
        .inner()
        .keys()
        .filter(|k| k.as_str() != "x-priority")
    {
        tracing::warn!(queue = %state.record.name, argument = %key, "Consumer argument not applied by this gateway (see docs/mapping.md).");
    }
    let gate = Gate {
        paused: ch.consuming.gate.paused.clone(),
        in_transit: s.in_transit.clone(),
    };
    // A no-ack consumer counts against a channel-wide (global) prefetch,
    // as in RabbitMQ; its credit comes back as each delivery is written.
    let credit = if m.no_ack {
        ConsumerCredit::new(
            NO_ACK_WINDOW,
            Some(ch.consuming.channel_credit.clone()),
            gate,
        )
    } else {
        ConsumerCredit::new(
            ch.consuming.consumer_prefetch,
            Some(ch.consuming.channel_credit.clone()),
            gate,
        )
    };
    if exclusive_elsewhere(s.gateway, &state.record, m.exclusive).await {
        return Err(s.channel_error(
            SoftCode::AccessRefused,
            format!(
                "queue '{}' in vhost '{}' in exclusive use",
                state.record.name, s.vhost.name
            ),
            CLASS,
            20,
        ));
    }
    let id = NEXT_CONSUMER.fetch_add(1, Ordering::Relaxed);
    let feed = s.gateway.feeds.get_or_start(s.vhost, &state.record);
    let slot = ConsumerSlot {
        id,
        tag: tag.clone(),
        channel: ch.id,
        epoch: ch.epoch,
        no_ack: m.no_ack,
        exclusive: m.exclusive,
        priority,
        credit,
        sink: s.sink.clone(),
    };
    // consume-ok is written before any delivery: deliveries reach the
    // connection through its queue, handled after this method.
    feed.subscribe(slot).await.map_err(|e| match e {
        SubscribeError::ExclusiveUse => s.channel_error(
            SoftCode::AccessRefused,
            format!(
                "queue '{}' in vhost '{}' in exclusive use",
                state.record.name, s.vhost.name
            ),
            CLASS,
            20,
        ),
        SubscribeError::Gone => s.channel_error(
            SoftCode::NotFound,
            format!(
                "no queue '{}' in vhost '{}'",
                state.record.name, s.vhost.name
            ),
            CLASS,
            20,
        ),
    })?;
    ch.consuming.consumers.insert(
        tag.clone(),
        ChannelConsumer {
            id,
            feed,
            no_ack: m.no_ack,
            queue: state.record.name.clone(),
        },
    );
    tracing::debug!(channel = ch.id, %tag, queue = %state.record.name, no_ack = m.no_ack, exclusive = m.exclusive, "Consumer added.");
    if !m.nowait {
        s.out.method(
            ch.id,
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                consumer_tag: tag.as_ref().into(),
            })),
        );
    }
    Ok(())
}

/// Whether a consumer through another gateway holds the queue exclusively,
/// or an exclusive consumer is asked for while others consume there (as
/// they last announced it in the meta store; this gateway's own consumers
/// are checked by the feed).
async fn exclusive_elsewhere(gateway: &Gateway, queue: &meta::Queue, exclusive: bool) -> bool {
    let others = gateway.consumers_elsewhere(&queue.topic).await;
    others.exclusive || (exclusive && others.count > 0)
}

pub async fn handle_basic_cancel(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: basic::Cancel,
) -> Result<(), ProtocolError> {
    let tag: Arc<str> = m.consumer_tag.as_str().into();
    if ch
        .consuming
        .reply_to
        .as_ref()
        .is_some_and(|(_, t)| *t == tag)
    {
        if let Some((token, _)) = ch.consuming.reply_to.take() {
            s.gateway.replies.forget(&token);
        }
    }
    // Unacked messages stay with the channel, as in RabbitMQ: they can still
    // be acked, and are requeued if the channel closes.
    if let Some(consumer) = ch.consuming.consumers.remove(&tag) {
        remove_consumer(s.gateway, s.vhost, consumer).await;
    }
    if !m.nowait {
        s.out.method(
            ch.id,
            AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                consumer_tag: m.consumer_tag,
            })),
        );
    }
    Ok(())
}

/// basic.consume of amq.rabbitmq.reply-to: no-ack only, one per channel
/// (406 otherwise, as in RabbitMQ); replies come through `deliver_reply`.
fn consume_replies(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: basic::Consume,
) -> Result<(), ProtocolError> {
    let refuse =
        |text: &str| s.channel_error(SoftCode::PreconditionFailed, text.to_owned(), CLASS, 20);
    if !m.no_ack {
        return Err(refuse("reply consumer cannot acknowledge"));
    }
    if ch.consuming.reply_to.is_some() {
        return Err(refuse("reply consumer already set"));
    }
    let tag: Arc<str> = if m.consumer_tag.as_str().is_empty() {
        server_generated_tag().into()
    } else {
        m.consumer_tag.as_str().into()
    };
    if ch.consuming.consumers.contains_key(&tag) {
        return Err(ConnectionException::new(
            HardCode::NotAllowed,
            format!("attempt to reuse consumer tag '{tag}'"),
        )
        .on_method(CLASS, 20)
        .into());
    }
    let token = s.gateway.replies.register(
        &s.gateway.instance_id,
        s.sink.clone(),
        ch.id,
        ch.epoch,
        tag.clone(),
    );
    ch.consuming.reply_to = Some((token, tag.clone()));
    if !m.nowait {
        s.out.method(
            ch.id,
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                consumer_tag: tag.as_ref().into(),
            })),
        );
    }
    Ok(())
}

/// Writes a direct reply-to reply to the channel's reply consumer (no-ack:
/// nothing to settle); dropped if that consumer was cancelled meanwhile.
pub fn deliver_reply(
    ch: &mut Channel,
    out: &mut FrameEncoder,
    frame_max: usize,
    reply: Box<Reply>,
) {
    let reply = *reply;
    if ch
        .consuming
        .reply_to
        .as_ref()
        .is_none_or(|(_, tag)| *tag != reply.consumer_tag)
    {
        return;
    }
    let tag = ch.consuming.tag();
    out.method(
        ch.id,
        AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: reply.consumer_tag.as_ref().into(),
            delivery_tag: tag,
            redelivered: false,
            exchange: "".into(),
            routing_key: reply.routing_key.into(),
        })),
    );
    let header = amq_protocol::frame::AMQPContentHeader {
        class_id: CLASS,
        body_size: reply.body.len() as u64,
        properties: reply.properties,
    };
    out.content(ch.id, header, &reply.body, frame_max);
}

/// Unsubscribes a consumer; deletes an auto-delete queue left without any.
pub async fn remove_consumer(
    gateway: &Arc<Gateway>,
    vhost: &Arc<Vhost>,
    consumer: ChannelConsumer,
) {
    let remaining = consumer.feed.unsubscribe(consumer.id).await;
    if remaining > 0 {
        return;
    }
    let Some(state) = vhost
        .read()
        .queues
        .get(&consumer.queue)
        .filter(|q| q.record.topic == consumer.feed.topic)
        .cloned()
    else {
        return;
    };
    // An expiring queue's time runs from when its last consumer left.
    crate::registry::expiry::touch(gateway, &state).await;
    if !state.record.auto_delete {
        return;
    }
    // An auto-delete queue goes with its last consumer on every gateway:
    // one consuming elsewhere keeps it (that gateway deletes it later).
    if gateway.consumers_elsewhere(&state.record.topic).await.count > 0 {
        // Their announcement may be older than their own last cancel (both
        // then keep the queue): look again once announcements are renewed.
        tracing::debug!(queue = %state.record.name, "Last consumer here went; consumers on other gateways keep the auto-delete queue for now.");
        let (gateway, vhost) = (gateway.clone(), vhost.clone());
        tokio::spawn(async move {
            tokio::time::sleep(ANNOUNCEMENTS_RENEWED).await;
            let counted = crate::registry::queues::counts(&gateway, &state).await;
            if counted.is_ok_and(|c| c.consumers == 0) {
                delete_auto_delete(&gateway, &vhost, &state.record).await;
            }
        });
        return;
    }
    delete_auto_delete(gateway, vhost, &state.record).await;
}

/// How long until every gateway's consumer announcement is renewed.
const ANNOUNCEMENTS_RENEWED: Duration = Duration::from_millis(2500);

/// Deletes an auto-delete queue left without consumers, if it is still
/// that incarnation.
async fn delete_auto_delete(gateway: &Arc<Gateway>, vhost: &Arc<Vhost>, gone: &meta::Queue) {
    let _changes = vhost.changes.lock().await;
    let record = vhost
        .read()
        .queues
        .get(&gone.name)
        .filter(|q| q.record.auto_delete && q.record.topic == gone.topic)
        .map(|q| q.record.clone());
    if let Some(record) = record {
        tracing::info!(vhost = %vhost.name, queue = %record.name, "Last consumer of an auto-delete queue went; deleting it.");
        if let Err(error) = crate::registry::queues::delete(gateway, vhost, &record).await {
            tracing::error!(queue = %record.name, %error, "Auto-delete queue could not be deleted.");
        }
    }
}

pub async fn handle_basic_get(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: basic::Get,
) -> Result<(), ProtocolError> {
    let state = queue_for(s, m.queue.as_str(), 70)?;
    crate::registry::expiry::touch(s.gateway, &state).await;
    let feed = s.gateway.feeds.get_or_start(s.vhost, &state.record);
    let wait = Duration::from_millis(s.gateway.config.send_timeout_ms);
    // A get answers get-ok or get-empty, never a connection error: what
    // RocketMQ could not hand over in time stays in the queue for the next.
    let got = match tokio::time::timeout(wait, feed.get()).await {
        Ok(Ok(got)) => got,
        outcome => {
            static UNANSWERED: crate::logging::Throttle =
                crate::logging::Throttle::new(crate::logging::LOG_INTERVAL);
            if let Some(more) = UNANSWERED.admit() {
                let error = match outcome {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer from RocketMQ within {} ms", wait.as_millis()),
                };
                tracing::warn!(queue = %state.record.name, %error, more_since_last_line = more, "basic.get answered get-empty: RocketMQ did not hand over a message in time.");
            }
            crate::metrics::GET_EMPTY_UNANSWERED.increment(1);
            None
        }
    };
    let Some(Got {
        message,
        redelivered,
        remaining,
    }) = got
    else {
        crate::metrics::GET_EMPTY.increment(1);
        s.out.method(
            ch.id,
            AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
        );
        return Ok(());
    };
    let stats = feed.stats.clone();
    let tag = ch.consuming.tag();
    let (exchange, routing_key) = crate::delivery::origin(&message);
    s.out.method(
        ch.id,
        AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
            delivery_tag: tag,
            redelivered,
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            message_count: remaining,
        })),
    );
    write_content(s.out, ch.id, &message, s.frame_max);
    let (queue_id, offset) = (message.queue_id, message.offset);
    if m.no_ack {
        feed.settle(vec![(queue_id, offset)], Outcome::Ack);
    } else {
        ch.consuming.unacked.insert(
            tag,
            Unacked {
                feed,
                queue_id,
                offset,
                credit: ch.consuming.get_credit.clone(),
            },
        );
    }
    if m.no_ack {
        crate::metrics::DELIVERED_GET_AUTO_ACK.increment(1);
        count(&stats.get_no_ack, 1);
    } else {
        crate::metrics::DELIVERED_GET_MANUAL_ACK.increment(1);
        count(&stats.get, 1);
    }
    if redelivered {
        crate::metrics::REDELIVERED.increment(1);
        count(&stats.redeliver, 1);
    }
    Ok(())
}

/// The exchange and routing key a message was published with.
/// The content header (properties as stored) and body frames.
fn write_content(out: &mut FrameEncoder, channel: u16, message: &InboundMessage, frame_max: usize) {
    let wire = stored_properties_wire(message.property(PROPERTIES)).unwrap_or_else(|error| {
        static UNREADABLE: crate::logging::Throttle =
            crate::logging::Throttle::new(crate::logging::LOG_INTERVAL);
        if let Some(more) = UNREADABLE.admit() {
            tracing::error!(%error, offset = message.offset, more_since_last_line = more, "Stored AMQP properties are unreadable; delivered without properties.");
        }
        vec![0, 0]
    });
    out.content_raw(channel, CLASS, &wire, &message.body, frame_max);
}

/// Writes one delivery from a feed, or hands it back if its consumer is gone.
/// Returns the feed of a no-ack delivery: writing it freed credit there.
pub fn deliver(
    ch: Option<&mut Channel>,
    out: &mut FrameEncoder,
    frame_max: usize,
    d: Delivery,
) -> Option<Arc<Feed>> {
    // Out of the connection's buffer either way: written below or handed back.
    d.credit
        .gate
        .in_transit
        .fetch_sub(d.message.footprint(), Ordering::AcqRel);
    let Some((ch, no_ack)) = ch.and_then(|ch| {
        let no_ack = ch.consuming.consumers.get(&d.consumer_tag)?.no_ack;
        Some((ch, no_ack))
    }) else {
        d.credit.release(1);
        d.feed.settle(
            vec![(d.message.queue_id, d.message.offset)],
            Outcome::Unsent,
        );
        return None;
    };
    let tag = ch.consuming.tag();
    let (exchange, routing_key) = crate::delivery::origin(&d.message);
    out.method(
        ch.id,
        AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: d.consumer_tag.as_ref().into(),
            delivery_tag: tag,
            redelivered: d.redelivered,
            exchange: exchange.into(),
            routing_key: routing_key.into(),
        })),
    );
    write_content(out, ch.id, &d.message, frame_max);
    let stats = &d.feed.stats;
    if no_ack {
        crate::metrics::DELIVERED_CONSUME_AUTO_ACK.increment(1);
        count(&stats.deliver_no_ack, 1);
    } else {
        crate::metrics::DELIVERED_CONSUME_MANUAL_ACK.increment(1);
        count(&stats.deliver, 1);
    }
    if d.redelivered {
        crate::metrics::REDELIVERED.increment(1);
        count(&stats.redeliver, 1);
    }
    if no_ack {
        // Written: room for the next one (the caller wakes the feed).
        d.credit.release(1);
        return Some(d.feed);
    }
    ch.consuming.unacked.insert(
        tag,
        Unacked {
            feed: d.feed,
            queue_id: d.message.queue_id,
            offset: d.message.offset,
            credit: d.credit,
        },
    );
    None
}

/// The server cancelled a consumer (its queue was deleted).
pub fn cancelled(ch: &mut Channel, out: &mut FrameEncoder, notify: bool, tag: Arc<str>) {
    if ch.consuming.consumers.remove(&tag).is_some() && notify {
        out.method(
            ch.id,
            AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                consumer_tag: tag.as_ref().into(),
                nowait: true,
            })),
        );
    }
}

fn unknown_tag(ch: &Channel, tag: u64, method: u16) -> ProtocolError {
    ProtocolError::Channel(
        ch.id,
        crate::error::ChannelException::new(
            SoftCode::PreconditionFailed,
            format!("unknown delivery tag {tag}"),
        )
        .on_method(CLASS, method),
    )
}

/// Takes the entries a (tag, multiple) pair names; 406 for an unknown tag.
fn take(
    ch: &mut Channel,
    tag: u64,
    multiple: bool,
    method: u16,
) -> Result<BTreeMap<u64, Unacked>, ProtocolError> {
    let unacked = &mut ch.consuming.unacked;
    if multiple {
        if tag != 0 && !unacked.contains_key(&tag) {
            return Err(unknown_tag(ch, tag, method));
        }
        let rest = if tag == 0 {
            BTreeMap::new()
        } else {
            unacked.split_off(&tag.saturating_add(1))
        };
        return Ok(std::mem::replace(unacked, rest));
    }
    match unacked.remove(&tag) {
        Some(entry) => Ok(BTreeMap::from([(tag, entry)])),
        None => Err(unknown_tag(ch, tag, method)),
    }
}

/// Settles now, or at tx.commit on a transactional channel.
fn settle_or_hold(ch: &mut Channel, entries: BTreeMap<u64, Unacked>, outcome: Outcome) {
    match ch.tx.as_mut() {
        Some(tx) => tx.hold_settlement(entries, outcome),
        None => settle(ch, entries.into_values().collect(), outcome),
    }
}

/// A feed and the (message queue, offset) pairs settled with it.
type FeedItems = (Arc<Feed>, Vec<(i32, i64)>);

/// Settles entries with their feeds (one command per feed) and gives credit back.
pub fn settle(ch: &Channel, entries: Vec<Unacked>, outcome: Outcome) {
    if entries.is_empty() {
        return;
    }
    if outcome == Outcome::Ack {
        crate::metrics::ACKED.increment(entries.len() as u64);
    }
    let mut by_feed: Vec<FeedItems> = Vec::new();
    for e in entries {
        e.credit.release(1);
        match by_feed.iter_mut().find(|(f, _)| Arc::ptr_eq(f, &e.feed)) {
            Some((_, items)) => items.push((e.queue_id, e.offset)),
            None => by_feed.push((e.feed, vec![(e.queue_id, e.offset)])),
        }
    }
    let settled: Vec<Arc<Feed>> = by_feed
        .into_iter()
        .map(|(feed, items)| {
            if outcome == Outcome::Ack {
                count(&feed.stats.ack, items.len() as u64);
            }
            feed.settle(items, outcome);
            feed
        })
        .collect();
    // Channel-wide credit freed here may let other queues' consumers go on.
    if ch.consuming.channel_credit.limit() != 0 {
        for consumer in ch.consuming.consumers.values() {
            if !settled.iter().any(|f| Arc::ptr_eq(f, &consumer.feed)) {
                consumer.feed.send(FeedCommand::Wake);
            }
        }
    }
}

pub fn handle_basic_ack(ch: &mut Channel, m: basic::Ack) -> Result<(), ProtocolError> {
    let entries = take(ch, m.delivery_tag, m.multiple, 80)?;
    settle_or_hold(ch, entries, Outcome::Ack);
    Ok(())
}

pub fn handle_basic_nack(ch: &mut Channel, m: basic::Nack) -> Result<(), ProtocolError> {
    let entries = take(ch, m.delivery_tag, m.multiple, 120)?;
    let outcome = if m.requeue {
        Outcome::Requeue
    } else {
        Outcome::Reject
    };
    settle_or_hold(ch, entries, outcome);
    Ok(())
}

pub fn handle_basic_reject(ch: &mut Channel, m: basic::Reject) -> Result<(), ProtocolError> {
    let entries = take(ch, m.delivery_tag, false, 90)?;
    let outcome = if m.requeue {
        Outcome::Requeue
    } else {
        Outcome::Reject
    };
    settle_or_hold(ch, entries, outcome);
    Ok(())
}

/// basic.recover / recover-async: every unacked message is requeued.
pub fn handle_basic_recover(
    ch: &mut Channel,
    s: &mut Session<'_>,
    requeue: bool,
    answer: bool,
) -> Result<(), ProtocolError> {
    if !requeue {
        return Err(
            ConnectionException::new(HardCode::NotImplemented, "requeue=false")
                .on_method(CLASS, if answer { 110 } else { 100 })
                .into(),
        );
    }
    let entries = std::mem::take(&mut ch.consuming.unacked)
        .into_values()
        .collect();
    settle(ch, entries, Outcome::Requeue);
    if answer {
        s.out.method(
            ch.id,
            AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
        );
    }
    Ok(())
}

/// channel.flow from the client: pause or resume this channel's deliveries.
pub fn set_flow(ch: &mut Channel, active: bool) {
    ch.consuming.gate.paused.store(!active, Ordering::Release);
    if active {
        for consumer in ch.consuming.consumers.values() {
            consumer.feed.send(FeedCommand::Wake);
        }
    }
}

pub fn handle_basic_qos(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: basic::Qos,
) -> Result<(), ProtocolError> {
    // prefetch_size is not even parsed by amq-protocol (RabbitMQ ignores it too).
    let count = u32::from(m.prefetch_count);
    if m.global {
        ch.consuming.channel_credit.set_limit(count);
        for consumer in ch.consuming.consumers.values() {
            consumer.feed.send(FeedCommand::Wake);
        }
    } else {
        ch.consuming.consumer_prefetch = count;
    }
    s.out.method(
        ch.id,
        AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
    );
    Ok(())
}

/// A channel is gone (closed by either side, or its connection ended): its
/// unacked messages are requeued and its consumers removed.
pub async fn release(gateway: &Arc<Gateway>, vhost: &Arc<Vhost>, ch: &mut Channel) {
    if let Some((token, _)) = ch.consuming.reply_to.take() {
        gateway.replies.forget(&token);
    }
    // Acknowledgements of a transaction never committed do not count.
    if let Some(mut tx) = ch.tx.take() {
        tx.return_unsettled(&mut ch.consuming.unacked);
    }
    let entries = std::mem::take(&mut ch.consuming.unacked)
        .into_values()
        .collect();
    settle(ch, entries, Outcome::Requeue);
    for (_, consumer) in ch.consuming.consumers.drain() {
        remove_consumer(gateway, vhost, consumer).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unacked_message_costs_a_few_words_not_its_body() {
        // Per unacked message the channel keeps this (plus its map entry and
        // the delivery tag); the feed keeps one offset. Bodies are not kept:
        // a requeued message is read again from RocketMQ.
        assert!(std::mem::size_of::<Unacked>() <= 32);
    }
}
