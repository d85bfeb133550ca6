//! Queues: declare, delete and count them. A queue is a RocketMQ topic (its
//! messages) plus a consumer group (its read position); the meta store
//! decides which topic a queue name has when two gateways declare it at
//! once, and every gateway then uses that one.

use std::sync::Arc;

use amq_protocol::types::FieldTable;

use super::arguments::QueueArguments;
use super::image;
use super::RegistryError;
use crate::delivery::feed::FeedCounts;
use crate::mapping::names;
use crate::topology::{encode_arguments, QueueState, Vhost};
use crate::upstream::{Upstream, UpstreamError};
use crate::Gateway;

/// A queue as a client asks for it.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    /// The connection an exclusive queue belongs to.
    pub exclusive_owner: Option<String>,
    pub arguments: FieldTable,
}

/// What queue.declare found or made.
#[derive(Debug, Clone)]
pub struct Declared {
    pub state: QueueState,
    /// This declare made the queue (it is empty).
    pub created: bool,
}

/// Creates a queue's topic and group, then stores its record unless one
/// of that name exists. Returns the stored record (this one, or the one
/// another gateway stored first, whose topic is then the queue's) and
/// whether it is this one. Used by declare and by definitions import.
pub async fn create(
    store: &meta::Store,
    upstream: &dyn Upstream,
    vhost: &meta::Vhost,
    spec: &QueueSpec,
    arguments: &QueueArguments,
) -> Result<(meta::Queue, bool), RegistryError> {
    let (topic, group) = names::new_queue_names(&vhost.namespace, &spec.name);
    let record = meta::Queue {
        vhost: vhost.name.clone(),
        name: spec.name.clone(),
        durable: spec.durable,
        auto_delete: spec.auto_delete,
        exclusive_owner: spec.exclusive_owner.clone(),
        arguments: encode_arguments(&spec.arguments),
        topic,
        group,
    };
    upstream
        .create_queue(&record.topic, &record.group, arguments.levels())
        .await
        .map_err(RegistryError::upstream("queue.declare"))?;
    let (stored, inserted) = store
        .insert_queue(&record)
        .await
        .map_err(RegistryError::meta("queue.declare"))?;
    if !inserted {
        tracing::info!(vhost = %record.vhost, queue = %record.name, topic = %stored.topic, "Queue declared meanwhile through another gateway; using its topic.");
        if let Err(error) = upstream.delete_queue(&record.topic, &record.group).await {
            tracing::warn!(topic = %record.topic, %error, "Unused topic of a lost declare race not deleted.");
        }
    }
    Ok((stored, inserted))
}

/// queue.declare (not passive) on behalf of `connection`.
pub async fn declare(
    gateway: &Gateway,
    vhost: &Arc<Vhost>,
    spec: QueueSpec,
    connection: &str,
) -> Result<Declared, RegistryError> {
    let arguments = QueueArguments::parse(&spec.arguments, &spec.name, &vhost.name)?;
    crate::metrics::QUEUES_DECLARED.increment(1);
    let _changes = vhost.changes.lock().await;
    let existing = vhost.read().queues.get(&spec.name).cloned();
    if let Some(state) = existing {
        check_owner(&state, connection)?;
        check_equivalent(&state, &spec)?;
        super::expiry::touch(gateway, &state).await;
        return Ok(Declared {
            state,
            created: false,
        });
    }
    super::limits::check_queue_limit(gateway, vhost, &spec.name)?;
    let meta_vhost = meta::Vhost {
        name: vhost.name.clone(),
        namespace: vhost.namespace.clone(),
    };
    let (record, created) = create(
        &gateway.store,
        gateway.upstream.as_ref(),
        &meta_vhost,
        &spec,
        &arguments,
    )
    .await?;
    let (state, replaced) = image::put_queue(vhost, record);
    if let Some(topic) = replaced {
        image::queue_gone(gateway, &topic);
    }
    if !created {
        check_owner(&state, connection)?;
        check_equivalent(&state, &spec)?;
        return Ok(Declared { state, created });
    }
    for key in state.arguments.unapplied() {
        tracing::warn!(vhost = %vhost.name, queue = %spec.name, argument = %key, "Queue argument stored but not applied yet (see docs/mapping.md).");
    }
    if state.arguments.reaps() {
        gateway.feeds.get_or_start(vhost, &state.record);
    }
    super::expiry::touch(gateway, &state).await;
    crate::metrics::QUEUES_CREATED.increment(1);
    tracing::info!(vhost = %vhost.name, queue = %spec.name, topic = %state.record.topic, "Queue declared.");
    Ok(Declared { state, created })
}

/// The queue of a name, if `connection` may use it (405 for another
/// connection's exclusive queue).
pub fn existing(vhost: &Vhost, name: &str, connection: &str) -> Result<QueueState, RegistryError> {
    let state = vhost.read().queues.get(name).cloned();
    let state = state.ok_or_else(|| {
        RegistryError::NotFound(format!("no queue '{name}' in vhost '{}'", vhost.name))
    })?;
    check_owner(&state, connection)?;
    Ok(state)
}

/// 405 when an exclusive queue belongs to another connection.
pub fn check_owner(state: &QueueState, connection: &str) -> Result<(), RegistryError> {
    match &state.record.exclusive_owner {
        Some(owner) if owner != connection => Err(RegistryError::ResourceLocked(format!(
            "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally declared on \
             another connection or the exclusive property value does not match that of the original declaration.",
            state.record.name, state.record.vhost
        ))),
        _ => Ok(()),
    }
}

/// 406 when a declare differs from the queue in a flag or an argument
/// RabbitMQ compares.
fn check_equivalent(state: &QueueState, spec: &QueueSpec) -> Result<(), RegistryError> {
    let current = &state.record;
    let inequivalent = |arg: &str, received: String, now: String| {
        Err(RegistryError::PreconditionFailed(format!(
            "inequivalent arg '{arg}' for queue '{}' in vhost '{}': received '{received}' but current is '{now}'",
            current.name, current.vhost
        )))
    };
    // An exclusive mismatch is 405, as RabbitMQ's exclusive-access check
    // answers it before comparing the rest.
    if spec.exclusive_owner.is_some() != current.exclusive_owner.is_some() {
        return Err(RegistryError::ResourceLocked(format!(
            "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
            current.name, current.vhost
        )));
    }
    let flags = [
        ("durable", spec.durable, current.durable),
        ("auto_delete", spec.auto_delete, current.auto_delete),
    ];
    for (flag, received, now) in flags {
        if received != now {
            return inequivalent(flag, received.to_string(), now.to_string());
        }
    }
    match state.arguments.difference(&spec.arguments) {
        Some((key, received, now)) => inequivalent(key, received, now),
        None => Ok(()),
    }
}

/// Removes a queue from the store and the image, hands its storage back to
/// RocketMQ (in the background: reclaim.rs), then deletes any auto-delete
/// exchange left without bindings. The caller holds the vhost's
/// `changes` lock (or, at start, is the only one changing anything).
pub async fn delete(
    gateway: &Gateway,
    vhost: &Vhost,
    record: &meta::Queue,
) -> Result<(), RegistryError> {
    gateway
        .store
        .delete_queue(&vhost.name, &record.name)
        .await
        .map_err(RegistryError::meta("queue.delete"))?;
    let sources = image::remove_queue(vhost, &record.name)
        .map(|(_, sources)| sources)
        .unwrap_or_default();
    image::queue_gone(gateway, &record.topic);
    gateway
        .reclaims
        .reclaim(
            &gateway.upstream,
            &record.name,
            &record.topic,
            &record.group,
        )
        .await;
    crate::metrics::QUEUES_DELETED.increment(1);
    tracing::info!(vhost = %vhost.name, queue = %record.name, "Queue deleted.");
    super::exchanges::delete_unused_auto_delete(gateway, vhost, &sources).await
}

/// A queue's counts as message_count, consumer_count and the management
/// API say them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub ready: u32,
    /// Handed out through this gateway and not settled.
    pub unacked: u32,
    /// Consumers of every gateway.
    pub consumers: u32,
}

/// Ready messages, unacked ones and consumers (of every gateway). While
/// this gateway consumes the queue, its feed knows what is handed out;
/// otherwise the group's backlog is the count.
pub async fn counts(gateway: &Gateway, state: &QueueState) -> Result<Counts, RegistryError> {
    let topic = &state.record.topic;
    let here = feed_counts(gateway, topic, &state.record.group)
        .await
        .map_err(RegistryError::upstream("message count"))?;
    let others = gateway.consumers_elsewhere(topic).await.count;
    let clamp = |n: u64| n.min(u64::from(u32::MAX)) as u32;
    Ok(Counts {
        ready: clamp(here.ready),
        unacked: clamp(here.unacked),
        consumers: here
            .consumers
            .saturating_add(others.clamp(0, i64::from(u32::MAX)) as u32),
    })
}

/// The counts of many queues, in their order, 16 asked at a time (each asks
/// RocketMQ and the meta store); a queue that cannot be counted counts 0.
pub async fn counts_of(gateway: &Gateway, states: &[QueueState]) -> Vec<Counts> {
    use futures_util::stream::{self, StreamExt};
    stream::iter(states.iter().cloned())
        .map(|state| async move { counts(gateway, &state).await.unwrap_or_default() })
        .buffered(16)
        .collect()
        .await
}

/// What this gateway knows of the queue.
async fn feed_counts(
    gateway: &Gateway,
    topic: &str,
    group: &str,
) -> Result<FeedCounts, UpstreamError> {
    Ok(match gateway.feeds.get(topic) {
        Some(feed) => {
            let partitions = gateway.upstream.partitions(topic, group).await?;
            feed.count(partitions).await
        }
        None => FeedCounts {
            ready: gateway.upstream.backlog(topic, group).await?,
            ..FeedCounts::default()
        },
    })
}

/// The queue's ready messages, as message_count says them.
pub async fn ready_messages(
    gateway: &Gateway,
    topic: &str,
    group: &str,
) -> Result<u64, UpstreamError> {
    Ok(feed_counts(gateway, topic, group).await?.ready)
}

/// Moves the queue's read position past its ready messages (unacked ones
/// stay, as in RabbitMQ). Returns how many were purged.
pub async fn purge(gateway: &Gateway, state: &QueueState) -> Result<u64, RegistryError> {
    let (topic, group) = (&state.record.topic, &state.record.group);
    let purged = match gateway.feeds.get(topic) {
        // A consuming feed moves its read position and commits over them.
        Some(feed) => {
            let partitions = gateway
                .upstream
                .partitions(topic, group)
                .await
                .map_err(RegistryError::upstream("queue.purge"))?;
            feed.purge(partitions).await
        }
        None => gateway
            .upstream
            .purge(topic, group)
            .await
            .map_err(RegistryError::upstream("queue.purge"))?,
    };
    tracing::info!(vhost = %state.record.vhost, queue = %state.record.name, purged, "Queue purged.");
    Ok(purged)
}
