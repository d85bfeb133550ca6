//! queue.declare / bind / unbind / purge / delete. A queue is a RocketMQ topic
//! (its messages) plus a consumer group (its read position); declare-ok's
//! message_count is the group's backlog on the topic.

use amq_protocol::protocol::{queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::exchange::delete_unused_auto_delete;
use super::{binding, Channel, Session};
use crate::error::{
    meta_failure, upstream_failure, ConnectionException, HardCode, ProtocolError, SoftCode,
};
use crate::mapping::routing::Destination;
use crate::topology::{encode_arguments, Access, QueueState, Vhost};
use crate::upstream::UpstreamError;
use crate::Gateway;

const CLASS: u16 = 50;

/// The arguments RabbitMQ compares when a queue is declared again.
const EQUIVALENCE_ARGUMENTS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
];

/// Arguments that are stored but whose behaviour is not implemented yet.
const UNAPPLIED_ARGUMENTS: &[&str] = &[
    "x-expires",
    "x-max-length-bytes",
    "x-single-active-consumer",
];

/// The arguments of a queue that are stored but not applied (logged at
/// declare, reported by import): x-max-length applies with x-overflow
/// reject-publish or reject-publish-dlx, not with drop-head (the default).
pub fn unapplied_arguments(arguments: &FieldTable) -> Vec<String> {
    let rejects = crate::topology::reject_publish(arguments).is_some();
    arguments
        .inner()
        .keys()
        .map(|key| key.as_str())
        .filter(|key| {
            UNAPPLIED_ARGUMENTS.contains(key)
                || (!rejects && matches!(*key, "x-max-length" | "x-overflow"))
        })
        .map(str::to_owned)
        .collect()
}

pub async fn handle_queue_declare(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: queue::Declare,
) -> Result<(), ProtocolError> {
    let vhost = s.vhost.clone();
    let mut name = m.queue.as_str().to_owned();
    if m.passive {
        let state = existing_queue(s, &name, 10)?;
        return declare_ok(ch, s, m.nowait, &state).await;
    }
    if name.is_empty() {
        name = server_generated_name();
    } else if name.starts_with("amq.") {
        return Err(s.channel_error(
            SoftCode::AccessRefused,
            format!("queue name '{name}' contains reserved prefix 'amq.*'"),
            CLASS,
            10,
        ));
    }
    s.check(Access::Configure, "queue", &name, CLASS, 10)?;
    check_queue_type(&m.arguments)?;
    check_numeric_arguments(s, &name, &m.arguments)?;
    let _changes = vhost.changes.lock().await;
    let existing = vhost.read().queues.get(&name).cloned();
    if let Some(state) = existing {
        check_owner(s, &state, 10)?;
        check_equivalent(s, &state, &m)?;
        return declare_ok(ch, s, m.nowait, &state).await;
    }
    let (topic, group) = vhost.new_queue_names(&name);
    let record = meta::Queue {
        vhost: vhost.name.clone(),
        name: name.clone(),
        durable: m.durable,
        auto_delete: m.auto_delete,
        exclusive_owner: m.exclusive.then(|| s.connection_name.to_owned()),
        arguments: encode_arguments(&m.arguments),
        topic,
        group,
    };
    for key in unapplied_arguments(&m.arguments) {
        tracing::warn!(vhost = %vhost.name, queue = %name, argument = %key, "Queue argument stored but not applied yet (see docs/mapping.md).");
    }
    s.gateway
        .upstream
        .create_queue(
            &record.topic,
            &record.group,
            crate::topology::max_priority(&m.arguments).map(|max| i32::from(max) + 1),
        )
        .await
        .map_err(|e| upstream_failure("queue.declare", &e))?;
    s.gateway
        .store
        .put_queue(&record)
        .await
        .map_err(|e| meta_failure("queue.declare", &e))?;
    let state = QueueState {
        record,
        arguments: m.arguments.clone(),
    };
    vhost.write().queues.insert(name.clone(), state.clone());
    if crate::expires(&state.arguments) {
        s.gateway.feeds.get_or_start(&vhost, &state.record);
    }
    tracing::info!(vhost = %vhost.name, queue = %name, topic = %state.record.topic, "Queue declared.");
    ch.consuming.last_queue = Some(name.clone());
    if m.nowait {
        return Ok(());
    }
    // A new queue is empty: no need to ask RocketMQ.
    s.out.method(
        ch.id,
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
            queue: name.into(),
            message_count: 0,
            consumer_count: 0,
        })),
    );
    Ok(())
}

/// `amq.gen-` and 22 random URL-safe characters, as RabbitMQ names them.
fn server_generated_name() -> String {
    let bytes: [u8; 16] = rand::random();
    format!("amq.gen-{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn check_queue_type(arguments: &FieldTable) -> Result<(), ProtocolError> {
    let kind = match arguments.inner().get("x-queue-type") {
        None => return Ok(()),
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        Some(_) => String::new(),
    };
    match kind.as_str() {
        // Both are stored the same way: in a RocketMQ topic.
        "classic" | "quorum" => Ok(()),
        other => Err(ConnectionException::new(
            HardCode::NotImplemented,
            format!(
                "x-queue-type '{other}' is not supported by this gateway (classic and quorum are)"
            ),
        )
        .on_method(CLASS, 10)
        .into()),
    }
}

/// The queue arguments the gateway applies must be integers in range, as
/// RabbitMQ checks them (406 otherwise).
fn check_numeric_arguments(
    s: &Session<'_>,
    queue: &str,
    arguments: &FieldTable,
) -> Result<(), ProtocolError> {
    for (key, max) in [
        ("x-message-ttl", i64::from(u32::MAX)),
        ("x-max-priority", 255),
        ("x-max-length", i64::MAX),
        ("x-max-length-bytes", i64::MAX),
    ] {
        let Some(value) = arguments.inner().get(key) else {
            continue;
        };
        let problem = match crate::topology::integer_argument(value) {
            None => "not an integer".to_owned(),
            Some(n) if n < 0 => format!("negative ({n})"),
            Some(n) if n > max => format!("above the maximum {max} ({n})"),
            Some(_) => continue,
        };
        return Err(s.channel_error(
            SoftCode::PreconditionFailed,
            format!(
                "invalid arg '{key}' for queue '{queue}' in vhost '{}': {problem}",
                s.vhost.name
            ),
            CLASS,
            10,
        ));
    }
    if let Some(value) = arguments.inner().get("x-overflow") {
        let text = crate::topology::text_argument(value);
        if !matches!(
            text.as_deref(),
            Some("drop-head" | "reject-publish" | "reject-publish-dlx")
        ) {
            return Err(s.channel_error(
                SoftCode::PreconditionFailed,
                format!(
                    "invalid arg 'x-overflow' for queue '{queue}' in vhost '{}': {value:?} is not drop-head, reject-publish or reject-publish-dlx",
                    s.vhost.name
                ),
                CLASS,
                10,
            ));
        }
    }
    Ok(())
}

fn check_equivalent(
    s: &Session<'_>,
    state: &QueueState,
    m: &queue::Declare,
) -> Result<(), ProtocolError> {
    let current = &state.record;
    let inequivalent = |arg: &str, received: String, now: String| {
        Err(s.channel_error(
            SoftCode::PreconditionFailed,
            format!(
                "inequivalent arg '{arg}' for queue '{}' in vhost '{}': received '{received}' but current is '{now}'",
                current.name, current.vhost
            ),
            CLASS,
            10,
        ))
    };
    if current.durable != m.durable {
        return inequivalent(
            "durable",
            m.durable.to_string(),
            current.durable.to_string(),
        );
    }
    if current.auto_delete != m.auto_delete {
        return inequivalent(
            "auto_delete",
            m.auto_delete.to_string(),
            current.auto_delete.to_string(),
        );
    }
    if current.exclusive_owner.is_some() != m.exclusive {
        return inequivalent(
            "exclusive",
            m.exclusive.to_string(),
            current.exclusive_owner.is_some().to_string(),
        );
    }
    for key in EQUIVALENCE_ARGUMENTS {
        let (received, now) = (
            m.arguments.inner().get(*key),
            state.arguments.inner().get(*key),
        );
        if received != now {
            return inequivalent(key, format!("{received:?}"), format!("{now:?}"));
        }
    }
    Ok(())
}

/// 405 when an exclusive queue belongs to another connection.
fn check_owner(s: &Session<'_>, state: &QueueState, method: u16) -> Result<(), ProtocolError> {
    match &state.record.exclusive_owner {
        Some(owner) if owner != s.connection_name => Err(s.channel_error(
            SoftCode::ResourceLocked,
            format!(
                "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally declared on \
                 another connection or the exclusive property value does not match that of the original declaration.",
                state.record.name, state.record.vhost
            ),
            CLASS,
            method,
        )),
        _ => Ok(()),
    }
}

pub fn existing_queue(
    s: &Session<'_>,
    name: &str,
    method: u16,
) -> Result<QueueState, ProtocolError> {
    let state = s.vhost.read().queues.get(name).cloned();
    let state = state.ok_or_else(|| {
        s.channel_error(
            SoftCode::NotFound,
            format!("no queue '{name}' in vhost '{}'", s.vhost.name),
            CLASS,
            method,
        )
    })?;
    check_owner(s, &state, method)?;
    Ok(state)
}

async fn declare_ok(
    ch: &mut Channel,
    s: &mut Session<'_>,
    nowait: bool,
    state: &QueueState,
) -> Result<(), ProtocolError> {
    ch.consuming.last_queue = Some(state.record.name.clone());
    if nowait {
        return Ok(());
    }
    let (message_count, consumer_count) = counts(s.gateway, state).await?;
    s.out.method(
        ch.id,
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
            queue: state.record.name.clone().into(),
            message_count,
            consumer_count,
        })),
    );
    Ok(())
}

/// Ready messages and consumers. While this gateway consumes the queue, its
/// feed knows what is handed out; otherwise the group's backlog is the count.
async fn counts(gateway: &crate::Gateway, state: &QueueState) -> Result<(u32, u32), ProtocolError> {
    let topic = &state.record.topic;
    let (ready, consumers) = ready_and_consumers(gateway, topic, &state.record.group)
        .await
        .map_err(|e| upstream_failure("message count", &e))?;
    let others = gateway.consumers_elsewhere(topic).await.count;
    let consumers = consumers.saturating_add(others.clamp(0, i64::from(u32::MAX)) as u32);
    Ok((ready.min(u64::from(u32::MAX)) as u32, consumers))
}

/// The queue's ready messages and this gateway's consumers of it.
async fn ready_and_consumers(
    gateway: &crate::Gateway,
    topic: &str,
    group: &str,
) -> Result<(u64, u32), UpstreamError> {
    Ok(match gateway.feeds.get(topic) {
        Some(feed) => {
            let partitions = gateway.upstream.partitions(topic, group).await?;
            feed.count(partitions).await
        }
        None => (gateway.upstream.backlog(topic, group).await?, 0),
    })
}

/// The queue's ready messages, as message_count says them.
pub async fn ready_messages(
    gateway: &crate::Gateway,
    topic: &str,
    group: &str,
) -> Result<u64, UpstreamError> {
    Ok(ready_and_consumers(gateway, topic, group).await?.0)
}

pub async fn handle_queue_bind(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: queue::Bind,
) -> Result<(), ProtocolError> {
    let kind = meta::DestinationKind::Queue;
    let b = binding::record(
        s,
        m.exchange.as_str(),
        m.queue.as_str(),
        kind,
        m.routing_key.as_str(),
        &m.arguments,
    );
    check_endpoints(s, &b, 20)?;
    binding::add(s, &b, CLASS, 20).await?;
    reply(ch, s, m.nowait, queue::AMQPMethod::BindOk(queue::BindOk {}))
}

pub async fn handle_queue_unbind(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: queue::Unbind,
) -> Result<(), ProtocolError> {
    let kind = meta::DestinationKind::Queue;
    let b = binding::record(
        s,
        m.exchange.as_str(),
        m.queue.as_str(),
        kind,
        m.routing_key.as_str(),
        &m.arguments,
    );
    if check_endpoints(s, &b, UNBIND)? {
        binding::remove(s, &b).await?;
    }
    reply(
        ch,
        s,
        false,
        queue::AMQPMethod::UnbindOk(queue::UnbindOk {}),
    )
}

/// Checks a queue.bind (method 20) or queue.unbind (50) as RabbitMQ does:
/// the default exchange and permissions first, then the endpoints. `Ok(false)`
/// means an unbind whose queue or exchange is gone: nothing to remove, and
/// RabbitMQ 3.10 answers unbind-ok (a bind gets 404).
/// queue.unbind's method id.
const UNBIND: u16 = 50;

fn check_endpoints(s: &Session<'_>, b: &meta::Binding, method: u16) -> Result<bool, ProtocolError> {
    if b.source.is_empty() {
        return Err(s.channel_error(
            SoftCode::AccessRefused,
            format!(
                "operation not permitted on the default exchange (queue '{}')",
                b.destination
            ),
            CLASS,
            method,
        ));
    }
    s.check(Access::Write, "queue", &b.destination, CLASS, method)?;
    s.check(Access::Read, "exchange", &b.source, CLASS, method)?;
    let (queue_exists, exchange_exists) = {
        let t = s.vhost.read();
        (
            t.queues.contains_key(&b.destination),
            t.exchanges.contains_key(&b.source),
        )
    };
    if method == UNBIND && !(queue_exists && exchange_exists) {
        return Ok(false);
    }
    existing_queue(s, &b.destination, method)?;
    if !exchange_exists {
        return Err(s.channel_error(
            SoftCode::NotFound,
            format!("no exchange '{}' in vhost '{}'", b.source, s.vhost.name),
            CLASS,
            method,
        ));
    }
    Ok(true)
}

pub async fn handle_queue_purge(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: queue::Purge,
) -> Result<(), ProtocolError> {
    let state = existing_queue(s, m.queue.as_str(), 30)?;
    s.check(Access::Read, "queue", m.queue.as_str(), CLASS, 30)?;
    let (topic, group) = (&state.record.topic, &state.record.group);
    // Unacked messages are not purged (as in RabbitMQ): a consuming feed
    // moves its read position past the ready ones and commits over them.
    let purged = match s.gateway.feeds.get(topic) {
        Some(feed) => {
            let partitions = s
                .gateway
                .upstream
                .partitions(topic, group)
                .await
                .map_err(|e| upstream_failure("queue.purge", &e))?;
            feed.purge(partitions).await
        }
        None => s
            .gateway
            .upstream
            .purge(topic, group)
            .await
            .map_err(|e| upstream_failure("queue.purge", &e))?,
    };
    tracing::info!(vhost = %s.vhost.name, queue = %m.queue, purged, "Queue purged.");
    let message_count = purged.min(u64::from(u32::MAX)) as u32;
    reply(
        ch,
        s,
        m.nowait,
        queue::AMQPMethod::PurgeOk(queue::PurgeOk { message_count }),
    )
}

pub async fn handle_queue_delete(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: queue::Delete,
) -> Result<(), ProtocolError> {
    let vhost = s.vhost.clone();
    let Some(state) = vhost.read().queues.get(m.queue.as_str()).cloned() else {
        // RabbitMQ answers delete-ok for a queue that does not exist.
        return reply(
            ch,
            s,
            m.nowait,
            queue::AMQPMethod::DeleteOk(queue::DeleteOk { message_count: 0 }),
        );
    };
    check_owner(s, &state, 40)?;
    s.check(Access::Configure, "queue", m.queue.as_str(), CLASS, 40)?;
    let (count, consumers) = counts(s.gateway, &state).await?;
    if m.if_unused && consumers > 0 {
        return Err(s.channel_error(
            SoftCode::PreconditionFailed,
            format!("queue '{}' in vhost '{}' in use", m.queue, vhost.name),
            CLASS,
            40,
        ));
    }
    if m.if_empty && count > 0 {
        return Err(s.channel_error(
            SoftCode::PreconditionFailed,
            format!("queue '{}' in vhost '{}' not empty", m.queue, vhost.name),
            CLASS,
            40,
        ));
    }
    let _changes = vhost.changes.lock().await;
    delete_queue(s.gateway, &vhost, &state.record).await?;
    reply(
        ch,
        s,
        m.nowait,
        queue::AMQPMethod::DeleteOk(queue::DeleteOk {
            message_count: count,
        }),
    )
}

/// Removes a queue from RocketMQ, the store and the routing table, then any
/// auto-delete exchange left without bindings. The caller holds `changes`
/// (or, at start, is the only one changing anything).
pub async fn delete_queue(
    gateway: &Gateway,
    vhost: &Vhost,
    record: &meta::Queue,
) -> Result<(), ProtocolError> {
    gateway
        .store
        .delete_queue(&vhost.name, &record.name)
        .await
        .map_err(|e| meta_failure("queue.delete", &e))?;
    let sources: Vec<String> = {
        let mut topology = vhost.write();
        topology.queues.remove(&record.name);
        let destination = Destination::Queue(record.name.clone());
        let sources = topology
            .exchanges
            .iter()
            .filter(|(_, e)| e.bindings.iter().any(|b| b.destination == destination))
            .map(|(n, _)| n.clone())
            .collect();
        topology.remove_bindings_to(&destination);
        sources
    };
    // Its consumers are cancelled (basic.cancel to clients that asked for it).
    gateway.feeds.stop(&record.topic);
    gateway.admissions.forget(&record.topic);
    if let Err(error) = gateway.store.forget_topic(&record.topic).await {
        tracing::warn!(queue = %record.name, %error, "Read leases of a deleted queue were not removed; they lapse on their own.");
    }
    gateway
        .upstream
        .delete_queue(&record.topic, &record.group)
        .await
        .map_err(|e| upstream_failure("queue.delete", &e))?;
    tracing::info!(vhost = %vhost.name, queue = %record.name, "Queue deleted.");
    delete_unused_auto_delete(gateway, vhost, &sources).await
}

fn reply(
    ch: &Channel,
    s: &mut Session<'_>,
    nowait: bool,
    method: queue::AMQPMethod,
) -> Result<(), ProtocolError> {
    if !nowait {
        s.out.method(ch.id, AMQPClass::Queue(method));
    }
    Ok(())
}
