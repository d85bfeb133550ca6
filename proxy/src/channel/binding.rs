//! The stored form of a binding, and adding or removing one through the
//! registry (registry/bindings.rs), shared by queue.bind/unbind and
//! exchange.bind/unbind.

use amq_protocol::types::FieldTable;

use super::Session;
use crate::error::ProtocolError;
use crate::topology::encode_arguments;

/// The stored form of a binding of this session's vhost.
pub fn record(
    s: &Session<'_>,
    source: &str,
    destination: &str,
    kind: meta::DestinationKind,
    key: &str,
    arguments: &FieldTable,
) -> meta::Binding {
    meta::Binding {
        vhost: s.vhost.name.clone(),
        source: source.to_owned(),
        destination: destination.to_owned(),
        destination_kind: kind,
        routing_key: key.to_owned(),
        arguments: encode_arguments(arguments),
    }
}

/// Adds a binding (idempotent). `class_id`/`method_id` name the method for errors.
pub async fn add(
    s: &mut Session<'_>,
    binding: &meta::Binding,
    class_id: u16,
    method_id: u16,
) -> Result<(), ProtocolError> {
    let vhost = s.vhost.clone();
    crate::registry::bindings::bind(s.gateway, &vhost, binding)
        .await
        .map_err(|e| s.refusal(e, class_id, method_id))
}

/// Removes a binding (a missing one is fine, as in RabbitMQ), then the source
/// exchange if it is auto-delete and has no binding left.
pub async fn remove(
    s: &mut Session<'_>,
    binding: &meta::Binding,
    class_id: u16,
    method_id: u16,
) -> Result<(), ProtocolError> {
    let vhost = s.vhost.clone();
    crate::registry::bindings::unbind(s.gateway, &vhost, binding)
        .await
        .map_err(|e| s.refusal(e, class_id, method_id))
}
