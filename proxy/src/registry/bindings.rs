//! Bindings, for queue.bind/unbind and exchange.bind/unbind alike: compiled
//! before anything is stored (so a bad headers binding is refused whole),
//! stored, then applied to the routing table.

use super::RegistryError;
use crate::topology::{add_binding, remove_binding, Vhost, VhostTopology};
use crate::Gateway;

/// Adds a binding (idempotent). The caller checked that both ends exist.
pub async fn bind(
    gateway: &Gateway,
    vhost: &Vhost,
    binding: &meta::Binding,
) -> Result<(), RegistryError> {
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
    add_binding(&mut trial, binding).map_err(RegistryError::PreconditionFailed)?;
    gateway
        .store
        .put_binding(binding)
        .await
        .map_err(RegistryError::meta("bind"))?;
    let _ = add_binding(&mut vhost.write(), binding);
    Ok(())
}

/// Removes a binding (a missing one is fine, as in RabbitMQ), then the source
/// exchange if it is auto-delete and has no binding left.
pub async fn unbind(
    gateway: &Gateway,
    vhost: &Vhost,
    binding: &meta::Binding,
) -> Result<(), RegistryError> {
    let _changes = vhost.changes.lock().await;
    gateway
        .store
        .delete_binding(binding)
        .await
        .map_err(RegistryError::meta("unbind"))?;
    remove_binding(&mut vhost.write(), binding);
    super::exchanges::delete_unused_auto_delete(
        gateway,
        vhost,
        std::slice::from_ref(&binding.source),
    )
    .await
}
