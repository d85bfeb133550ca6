//! Exchanges: they exist only in the meta store and the gateways' routing
//! tables (RocketMQ stores queues; routing is decided at publish time).

use super::image;
use super::RegistryError;
use crate::topology::Vhost;
use crate::Gateway;

/// Deletes the auto-delete exchanges among `sources` that have no binding
/// left (RabbitMQ deletes one when its last binding goes).
pub async fn delete_unused_auto_delete(
    gateway: &Gateway,
    vhost: &Vhost,
    sources: &[String],
) -> Result<(), RegistryError> {
    for source in sources {
        let unused = vhost
            .read()
            .exchanges
            .get(source)
            .is_some_and(|e| e.record.auto_delete && e.bindings.is_empty());
        if !unused {
            continue;
        }
        gateway
            .store
            .delete_exchange(&vhost.name, source)
            .await
            .map_err(RegistryError::meta("auto-delete"))?;
        image::remove_exchange(vhost, source);
        tracing::info!(vhost = %vhost.name, exchange = %source, "Auto-delete exchange deleted.");
    }
    Ok(())
}
