//! The in-memory image of a vhost's queues and exchanges: the one place that
//! changes it, for this gateway's own changes (after the meta store took
//! them) and for what the follower reads from the store's log alike. Each
//! change is one swap under the vhost's short write lock.

use crate::mapping::routing::Destination;
use crate::topology::{exchange_state, push_binding, QueueState, Vhost, VhostTopology};
use crate::Gateway;

/// Sets a queue to its stored record. Returns its state and the topic it
/// had before if that was another (an incarnation this gateway no longer
/// reads: the caller lets it go with `queue_gone`).
pub fn put_queue(vhost: &Vhost, record: meta::Queue) -> (QueueState, Option<String>) {
    let mut state = QueueState::new(record);
    let mut topology = vhost.write();
    // The same incarnation keeps its counts.
    if let Some(old) = topology.queues.get(&state.record.name) {
        if old.record.topic == state.record.topic {
            state.stats = old.stats.clone();
        }
    }
    let old = topology
        .queues
        .insert(state.record.name.clone(), state.clone());
    drop(topology);
    let replaced = old
        .map(|o| o.record.topic)
        .filter(|topic| *topic != state.record.topic);
    (state, replaced)
}

/// Removes a queue and every binding to it. Returns what it was and the
/// exchanges that had bindings to it (auto-delete candidates).
pub fn remove_queue(vhost: &Vhost, name: &str) -> Option<(QueueState, Vec<String>)> {
    let mut topology = vhost.write();
    let state = topology.queues.remove(name)?;
    let sources = unbind_all_to(&mut topology, Destination::Queue(name.to_owned()));
    Some((state, sources))
}

/// Sets an exchange to its stored record, keeping its bindings (they
/// follow their own changes).
pub fn put_exchange(vhost: &Vhost, record: &meta::Exchange) -> Result<(), String> {
    let mut state = exchange_state(record)?;
    let mut topology = vhost.write();
    if let Some(old) = topology.exchanges.remove(&record.name) {
        state.bindings = old.bindings;
        state.records = old.records;
    }
    topology.exchanges.insert(record.name.clone(), state);
    Ok(())
}

/// Removes an exchange and every binding to it.
/// Returns the exchanges that had bindings to it (auto-delete candidates).
pub fn remove_exchange(vhost: &Vhost, name: &str) -> Vec<String> {
    let mut topology = vhost.write();
    topology.exchanges.remove(name);
    unbind_all_to(&mut topology, Destination::Exchange(name.to_owned()))
}

/// Removes every binding to `destination`; the exchanges that had one.
fn unbind_all_to(topology: &mut VhostTopology, destination: Destination) -> Vec<String> {
    let sources = topology
        .exchanges
        .iter()
        .filter(|(_, e)| e.bindings.iter().any(|b| b.destination == destination))
        .map(|(n, _)| n.clone())
        .collect();
    topology.remove_bindings_to(&destination);
    sources
}

/// Sets an exchange's bindings to the stored ones; a binding that cannot be
/// compiled is skipped with an error line.
pub fn set_bindings(vhost: &Vhost, source: &str, bindings: &[meta::Binding]) {
    let mut topology = vhost.write();
    let Some(exchange) = topology.exchanges.get_mut(source) else {
        return;
    };
    exchange.bindings.clear();
    exchange.records.clear();
    for b in bindings {
        if let Err(error) = push_binding(exchange, b) {
            tracing::error!(vhost = %b.vhost, source = %b.source, %error, "Stored binding skipped.");
        }
    }
}

/// A queue's topic is no longer read here: its consumers are cancelled
/// (basic.cancel to clients that asked for it), its admission count and
/// RocketMQ client state dropped.
pub fn queue_gone(gateway: &Gateway, topic: &str) {
    gateway.feeds.stop(topic);
    gateway.admissions.forget(topic);
    gateway.upstream.forget_topic(topic);
}
