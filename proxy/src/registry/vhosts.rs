//! Deleting a vhost: its queues first (their RocketMQ topics and groups go
//! with them, as with queue.delete), then everything else of it in the
//! meta store; its connections are closed with 320 CONNECTION_FORCED, as
//! RabbitMQ closes them. Other gateways drop the vhost and close their
//! connections to it when their follower reads it gone (`gone`).

use super::{queues, RegistryError};
use crate::Gateway;

pub async fn delete(gateway: &Gateway, name: &str) -> Result<(), RegistryError> {
    let Some(vhost) = gateway.topology.vhost(name) else {
        return Err(RegistryError::NotFound(format!("no vhost '{name}'")));
    };
    {
        let _changes = vhost.changes.lock().await;
        let records: Vec<meta::Queue> = vhost
            .read()
            .queues
            .values()
            .map(|q| q.record.clone())
            .collect();
        for record in records {
            queues::delete(gateway, &vhost, &record).await?;
        }
        gateway
            .store
            .delete_vhost(name)
            .await
            .map_err(RegistryError::meta("vhost.delete"))?;
    }
    gone(gateway, name);
    tracing::info!(vhost = %name, "Vhost deleted.");
    Ok(())
}

/// A vhost is gone (deleted here, or elsewhere as the follower read): it
/// leaves the image and its connections here are closed.
pub fn gone(gateway: &Gateway, name: &str) {
    if gateway.topology.remove_vhost(name).is_none() {
        return;
    }
    for entry in gateway.connections.snapshot() {
        if entry.opened.get().is_some_and(|o| o.vhost == name) {
            entry.close(format!("vhost '{name}' is deleted"));
        }
    }
}
