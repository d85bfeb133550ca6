//! Adding and removing bindings, shared by queue.bind/unbind and
//! exchange.bind/unbind: compiled before anything is stored (so a bad
//! headers binding is refused whole), stored, then applied to the routing table.

use amq_protocol::types::FieldTable;

use super::Session;
use crate::error::{meta_failure, ProtocolError, SoftCode};
use crate::topology::{add_binding, encode_arguments, remove_binding, VhostTopology};

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
    let _changes = vhost.changes.lock().await;
    let source = vhost.read().exchanges.get(&binding.source).cloned();
    let Some(source) = source else {
        return Ok(()); // deleted meanwhile: nothing to bind to, as in RabbitMQ's race
    };
    if source.records.contains(binding) {
        return Ok(());
    }
    // Compile on a copy first so that a bad x-match is refused before anything is stored.
    let mut trial = VhostTopology::default();
    trial.exchanges.insert(binding.source.clone(), source);
    add_binding(&mut trial, binding)
        .map_err(|e| s.channel_error(SoftCode::PreconditionFailed, e, class_id, method_id))?;
    s.gateway
        .store
        .put_binding(binding)
        .await
        .map_err(|e| meta_failure("bind", &e))?;
    let _ = add_binding(&mut vhost.write(), binding);
    Ok(())
}

/// Removes a binding (a missing one is fine, as in RabbitMQ), then the source
/// exchange if it is auto-delete and has no binding left.
pub async fn remove(s: &mut Session<'_>, binding: &meta::Binding) -> Result<(), ProtocolError> {
    let vhost = s.vhost.clone();
    let _changes = vhost.changes.lock().await;
    s.gateway
        .store
        .delete_binding(binding)
        .await
        .map_err(|e| meta_failure("unbind", &e))?;
    remove_binding(&mut vhost.write(), binding);
    crate::registry::exchanges::delete_unused_auto_delete(
        s.gateway,
        &vhost,
        std::slice::from_ref(&binding.source),
    )
    .await
    .map_err(|e| s.refusal(e, 0, 0))
}
