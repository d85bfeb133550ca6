//! Exchanges: they exist only in the meta store and the gateways' routing
//! tables (RocketMQ stores queues; routing is decided at publish time).

use amq_protocol::types::{AMQPValue, FieldTable};

use super::image;
use super::RegistryError;
use crate::mapping::routing::ExchangeKind;
use crate::topology::{encode_arguments, Vhost};
use crate::Gateway;

/// An exchange as a client asks for it.
#[derive(Debug, Clone)]
pub struct ExchangeSpec {
    pub name: String,
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// 403 for the default exchange and the reserved `amq.` prefix, which
/// clients may not declare.
pub fn check_name(name: &str) -> Result<(), RegistryError> {
    if name.is_empty() {
        return Err(RegistryError::AccessRefused(
            "operation not permitted on the default exchange".into(),
        ));
    }
    if name.starts_with("amq.") {
        return Err(RegistryError::AccessRefused(format!(
            "exchange name '{name}' contains reserved prefix 'amq.*'"
        )));
    }
    Ok(())
}

/// 503 for a type the gateway does not know.
pub fn kind(name: &str) -> Result<ExchangeKind, RegistryError> {
    ExchangeKind::parse(name)
        .ok_or_else(|| RegistryError::CommandInvalid(format!("unknown exchange type '{name}'")))
}

/// exchange.declare (not passive): creates the exchange, or checks that
/// the one there is equivalent (406 otherwise).
pub async fn declare(
    gateway: &Gateway,
    vhost: &Vhost,
    spec: &ExchangeSpec,
) -> Result<(), RegistryError> {
    check_name(&spec.name)?;
    let kind = kind(&spec.kind)?;
    let _changes = vhost.changes.lock().await;
    if let Some(existing) = vhost.read().exchanges.get(&spec.name) {
        let current = &existing.record;
        let differs = [
            (
                "type",
                kind.as_str().to_owned(),
                existing.kind.as_str().to_owned(),
            ),
            (
                "durable",
                spec.durable.to_string(),
                current.durable.to_string(),
            ),
            (
                "auto_delete",
                spec.auto_delete.to_string(),
                current.auto_delete.to_string(),
            ),
            (
                "internal",
                spec.internal.to_string(),
                current.internal.to_string(),
            ),
            (
                "alternate-exchange",
                format!("{:?}", alternate_of(&spec.arguments)),
                format!("{:?}", alternate_of(&existing.arguments)),
            ),
        ];
        // Of the arguments RabbitMQ compares only alternate-exchange (others
        // mean nothing to an exchange); so do we.
        return match differs.into_iter().find(|(_, received, now)| received != now) {
            Some((arg, received, now)) => Err(RegistryError::PreconditionFailed(format!(
                "inequivalent arg '{arg}' for exchange '{}' in vhost '{}': received '{received}' but current is '{now}'",
                spec.name, vhost.name
            ))),
            None => Ok(()),
        };
    }
    let record = meta::Exchange {
        vhost: vhost.name.clone(),
        name: spec.name.clone(),
        kind: kind.as_str().to_owned(),
        durable: spec.durable,
        auto_delete: spec.auto_delete,
        internal: spec.internal,
        arguments: encode_arguments(&spec.arguments),
    };
    gateway
        .store
        .put_exchange(&record)
        .await
        .map_err(RegistryError::meta("exchange.declare"))?;
    image::put_exchange(vhost, &record).map_err(|e| RegistryError::Meta {
        doing: "exchange.declare",
        error: meta::MetaError::Corrupt(e),
    })?;
    tracing::info!(vhost = %vhost.name, exchange = %spec.name, kind = kind.as_str(), "Exchange declared.");
    Ok(())
}

/// exchange.delete: false when there was no such exchange (RabbitMQ 3.10
/// answers delete-ok then); 406 with `if_unused` when bindings use it.
pub async fn delete(
    gateway: &Gateway,
    vhost: &Vhost,
    name: &str,
    if_unused: bool,
) -> Result<bool, RegistryError> {
    let _changes = vhost.changes.lock().await;
    {
        let topology = vhost.read();
        if !topology.exchanges.contains_key(name) {
            return Ok(false);
        }
        if if_unused && topology.exchange_in_use(name) {
            return Err(RegistryError::PreconditionFailed(format!(
                "exchange '{name}' in vhost '{}' in use",
                vhost.name
            )));
        }
    }
    gateway
        .store
        .delete_exchange(&vhost.name, name)
        .await
        .map_err(RegistryError::meta("exchange.delete"))?;
    let sources = image::remove_exchange(vhost, name);
    tracing::info!(vhost = %vhost.name, exchange = %name, "Exchange deleted.");
    delete_unused_auto_delete(gateway, vhost, &sources).await?;
    Ok(true)
}

/// Deletes the auto-delete exchanges among `sources` that have no binding
/// left (RabbitMQ deletes one when its last binding goes), and in turn
/// those that lose their last binding by that (exchange-to-exchange
/// bindings to a deleted exchange go with it).
pub async fn delete_unused_auto_delete(
    gateway: &Gateway,
    vhost: &Vhost,
    sources: &[String],
) -> Result<(), RegistryError> {
    let mut pending = sources.to_vec();
    while let Some(source) = pending.pop() {
        let unused = vhost
            .read()
            .exchanges
            .get(&source)
            .is_some_and(|e| e.record.auto_delete && e.bindings.is_empty());
        if !unused {
            continue;
        }
        gateway
            .store
            .delete_exchange(&vhost.name, &source)
            .await
            .map_err(RegistryError::meta("auto-delete"))?;
        pending.extend(image::remove_exchange(vhost, &source));
        tracing::info!(vhost = %vhost.name, exchange = %source, "Auto-delete exchange deleted.");
    }
    Ok(())
}

/// An exchange's `alternate-exchange` argument, whatever its string type.
fn alternate_of(arguments: &FieldTable) -> Option<String> {
    match arguments.inner().get("alternate-exchange")? {
        AMQPValue::LongString(name) => Some(name.to_string()),
        AMQPValue::ShortString(name) => Some(name.to_string()),
        other => Some(format!("{other:?}")),
    }
}
