//! Objects in the JSON shapes RabbitMQ 3.10's management API gives them
//! (the fields tools read: ../shared/operator-surface.md).

use serde_json::{json, Value};

use crate::definitions::table_to_json;
use crate::topology::{decode_arguments, ExchangeState, QueueState};

/// This node's name in every object that has one.
pub fn node(gateway: &crate::Gateway) -> String {
    format!("amqp-gateway@{}", gateway.instance_id)
}

pub fn queue(node: &str, state: &QueueState, ready: u32, unacked: u32, consumers: u32) -> Value {
    let r = &state.record;
    json!({
        "name": r.name,
        "vhost": r.vhost,
        "type": "classic",
        "durable": r.durable,
        "auto_delete": r.auto_delete,
        "exclusive": r.exclusive_owner.is_some(),
        "owner_pid_details": r.exclusive_owner.as_ref().map(|o| json!({"name": o})),
        "arguments": table_to_json(&state.arguments.table),
        "messages": u64::from(ready) + u64::from(unacked),
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "consumers": consumers,
        "state": "running",
        "node": node,
        "message_stats": state.stats.message_stats(),
        "rocketmq_topic": r.topic,
    })
}

pub fn exchange(state: &ExchangeState) -> Value {
    let r = &state.record;
    json!({
        "name": r.name,
        "vhost": r.vhost,
        "type": r.kind,
        "durable": r.durable,
        "auto_delete": r.auto_delete,
        "internal": r.internal,
        "arguments": table_to_json(&state.arguments),
        "user_who_performed_action": "",
    })
}

pub fn binding(b: &meta::Binding) -> Value {
    let arguments = decode_arguments(&b.arguments)
        .map(|t| table_to_json(&t))
        .unwrap_or_default();
    json!({
        "source": b.source,
        "vhost": b.vhost,
        "destination": b.destination,
        "destination_type": b.destination_kind.as_str(),
        "routing_key": b.routing_key,
        "arguments": arguments,
        "properties_key": properties_key(&b.routing_key, &arguments),
    })
}

/// The key RabbitMQ gives a binding in URLs: the routing key (escaped), or
/// `~` for an empty one; with arguments, a hash of them after `~`.
pub fn properties_key(routing_key: &str, arguments: &serde_json::Map<String, Value>) -> String {
    let key = if routing_key.is_empty() {
        "~".to_owned()
    } else {
        routing_key.replace('%', "%25").replace('~', "%7E")
    };
    if arguments.is_empty() {
        key
    } else {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        Value::Object(arguments.clone()).to_string().hash(&mut h);
        format!("{key}~{:x}", h.finish())
    }
}

/// The default exchange's implicit binding of a queue, as RabbitMQ lists it.
pub fn default_binding(vhost: &str, queue: &str) -> Value {
    json!({
        "source": "",
        "vhost": vhost,
        "destination": queue,
        "destination_type": "queue",
        "routing_key": queue,
        "arguments": {},
        "properties_key": queue,
    })
}
