//! exchange.declare / delete / bind / unbind. Exchanges exist only in the
//! meta store and the gateways' routing tables: RocketMQ stores queues, and
//! routing is decided at publish time (docs/architecture.md).

use amq_protocol::protocol::{exchange, AMQPClass};
use amq_protocol::types::FieldTable;

use super::{binding, Channel, Session};
use crate::error::{meta_failure, ConnectionException, HardCode, ProtocolError, SoftCode};
use crate::mapping::routing::ExchangeKind;
use crate::topology::{encode_arguments, Access};

const CLASS: u16 = 40;

pub async fn handle_exchange_declare(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: exchange::Declare,
) -> Result<(), ProtocolError> {
    let name = m.exchange.as_str();
    let vhost = s.vhost.clone();
    if m.passive {
        if !vhost.read().has_exchange(name) {
            return Err(not_found(s, name, 10));
        }
        return reply(
            ch,
            s,
            m.nowait,
            exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {}),
        );
    }
    if name.is_empty() {
        return Err(s.channel_error(
            SoftCode::AccessRefused,
            "operation not permitted on the default exchange".into(),
            CLASS,
            10,
        ));
    }
    if name.starts_with("amq.") {
        return Err(s.channel_error(
            SoftCode::AccessRefused,
            format!("exchange name '{name}' contains reserved prefix 'amq.*'"),
            CLASS,
            10,
        ));
    }
    let Some(kind) = ExchangeKind::parse(m.kind.as_str()) else {
        return Err(ConnectionException::new(
            HardCode::CommandInvalid,
            format!("unknown exchange type '{}'", m.kind),
        )
        .on_method(CLASS, 10)
        .into());
    };
    s.check(Access::Configure, "exchange", name, CLASS, 10)?;
    let _changes = vhost.changes.lock().await;
    if let Some(existing) = vhost.read().exchanges.get(name) {
        let current = &existing.record;
        let inequivalent = |arg: &str, received: String, current: String| {
            s.channel_error(
                SoftCode::PreconditionFailed,
                format!(
                    "inequivalent arg '{arg}' for exchange '{name}' in vhost '{}': received '{received}' but current is '{current}'",
                    vhost.name
                ),
                CLASS,
                10,
            )
        };
        if existing.kind != kind {
            return Err(inequivalent(
                "type",
                kind.as_str().into(),
                existing.kind.as_str().into(),
            ));
        }
        if current.durable != m.durable {
            return Err(inequivalent(
                "durable",
                m.durable.to_string(),
                current.durable.to_string(),
            ));
        }
        if current.auto_delete != m.auto_delete {
            return Err(inequivalent(
                "auto_delete",
                m.auto_delete.to_string(),
                current.auto_delete.to_string(),
            ));
        }
        if current.internal != m.internal {
            return Err(inequivalent(
                "internal",
                m.internal.to_string(),
                current.internal.to_string(),
            ));
        }
        if !same_arguments(&existing.arguments, &m.arguments) {
            return Err(inequivalent(
                "arguments",
                format!("{:?}", m.arguments),
                format!("{:?}", existing.arguments),
            ));
        }
        return reply(
            ch,
            s,
            m.nowait,
            exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {}),
        );
    }
    let record = meta::Exchange {
        vhost: vhost.name.clone(),
        name: name.to_owned(),
        kind: kind.as_str().to_owned(),
        durable: m.durable,
        auto_delete: m.auto_delete,
        internal: m.internal,
        arguments: encode_arguments(&m.arguments),
    };
    warn_unapplied_arguments(&m.arguments, name);
    s.gateway
        .store
        .put_exchange(&record)
        .await
        .map_err(|e| meta_failure("exchange.declare", &e))?;
    crate::registry::image::put_exchange(&vhost, &record)
        .map_err(|e| ConnectionException::new(HardCode::InternalError, e))?;
    tracing::info!(vhost = %vhost.name, exchange = %name, kind = kind.as_str(), "Exchange declared.");
    reply(
        ch,
        s,
        m.nowait,
        exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {}),
    )
}

/// RabbitMQ compares arguments as tables; so do we.
fn same_arguments(a: &FieldTable, b: &FieldTable) -> bool {
    a == b
}

/// Arguments whose behaviour the gateway does not implement yet are kept but
/// said out loud, never silently ignored.
fn warn_unapplied_arguments(arguments: &FieldTable, exchange: &str) {
    for key in arguments.inner().keys() {
        if key.as_str() == "alternate-exchange" {
            tracing::warn!(exchange = %exchange, argument = %key, "Exchange argument stored but not applied yet (see docs/mapping.md).");
        }
    }
}

pub async fn handle_exchange_delete(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: exchange::Delete,
) -> Result<(), ProtocolError> {
    let name = m.exchange.as_str();
    let vhost = s.vhost.clone();
    if name.is_empty() || name.starts_with("amq.") {
        return Err(s.channel_error(
            SoftCode::AccessRefused,
            format!(
                "operation not permitted on exchange '{}'",
                super::display_name(name)
            ),
            CLASS,
            20,
        ));
    }
    s.check(Access::Configure, "exchange", name, CLASS, 20)?;
    let _changes = vhost.changes.lock().await;
    {
        let topology = vhost.read();
        if !topology.exchanges.contains_key(name) {
            drop(topology);
            // RabbitMQ 3.10 answers delete-ok for an exchange that is not there.
            if !m.nowait {
                s.out.method(
                    ch.id,
                    AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                );
            }
            return Ok(());
        }
        if m.if_unused && topology.exchange_in_use(name) {
            drop(topology);
            return Err(s.channel_error(
                SoftCode::PreconditionFailed,
                format!("exchange '{name}' in vhost '{}' in use", vhost.name),
                CLASS,
                20,
            ));
        }
    }
    s.gateway
        .store
        .delete_exchange(&vhost.name, name)
        .await
        .map_err(|e| meta_failure("exchange.delete", &e))?;
    crate::registry::image::remove_exchange(&vhost, name);
    tracing::info!(vhost = %vhost.name, exchange = %name, "Exchange deleted.");
    reply(
        ch,
        s,
        m.nowait,
        exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {}),
    )
}

pub async fn handle_exchange_bind(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: exchange::Bind,
) -> Result<(), ProtocolError> {
    let kind = meta::DestinationKind::Exchange;
    let b = binding::record(
        s,
        m.source.as_str(),
        m.destination.as_str(),
        kind,
        m.routing_key.as_str(),
        &m.arguments,
    );
    check_endpoints(s, &b, 30)?;
    binding::add(s, &b, CLASS, 30).await?;
    reply(
        ch,
        s,
        m.nowait,
        exchange::AMQPMethod::BindOk(exchange::BindOk {}),
    )
}

pub async fn handle_exchange_unbind(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: exchange::Unbind,
) -> Result<(), ProtocolError> {
    let kind = meta::DestinationKind::Exchange;
    let b = binding::record(
        s,
        m.source.as_str(),
        m.destination.as_str(),
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
        m.nowait,
        exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {}),
    )
}

/// Both exchanges exist, neither is the default one, and the user may read
/// the source and write the destination.
/// Checks an exchange.bind (method 30) or exchange.unbind (40) as RabbitMQ
/// does: the default exchange and permissions first, then the endpoints.
/// `Ok(false)` means an unbind whose source or destination is gone: nothing
/// to remove, and RabbitMQ 3.10 answers unbind-ok (a bind gets 404).
fn check_endpoints(s: &Session<'_>, b: &meta::Binding, method: u16) -> Result<bool, ProtocolError> {
    if b.source.is_empty() || b.destination.is_empty() {
        return Err(s.channel_error(
            SoftCode::AccessRefused,
            "operation not permitted on the default exchange".into(),
            CLASS,
            method,
        ));
    }
    s.check(Access::Write, "exchange", &b.destination, CLASS, method)?;
    s.check(Access::Read, "exchange", &b.source, CLASS, method)?;
    for name in [&b.source, &b.destination] {
        if !s.vhost.read().exchanges.contains_key(name.as_str()) {
            if method == UNBIND {
                return Ok(false);
            }
            return Err(not_found(s, name, method));
        }
    }
    Ok(true)
}

/// exchange.unbind's method id.
const UNBIND: u16 = 40;

fn not_found(s: &Session<'_>, name: &str, method: u16) -> ProtocolError {
    s.channel_error(
        SoftCode::NotFound,
        format!("no exchange '{name}' in vhost '{}'", s.vhost.name),
        CLASS,
        method,
    )
}

fn reply(
    ch: &Channel,
    s: &mut Session<'_>,
    nowait: bool,
    method: exchange::AMQPMethod,
) -> Result<(), ProtocolError> {
    if !nowait {
        s.out.method(ch.id, AMQPClass::Exchange(method));
    }
    Ok(())
}
