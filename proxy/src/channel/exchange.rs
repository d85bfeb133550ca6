//! exchange.declare / delete / bind / unbind: permission checks and replies
//! around the registry (registry/exchanges.rs, registry/bindings.rs).

use amq_protocol::protocol::{exchange, AMQPClass};

use super::{binding, Channel, Session};
use crate::error::{ProtocolError, SoftCode};
use crate::registry::exchanges::{self, ExchangeSpec};
use crate::topology::Access;

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
    // RabbitMQ's order: the name, the type, then the permission.
    exchanges::check_name(name)
        .and_then(|()| exchanges::kind(m.kind.as_str()))
        .map_err(|e| s.refusal(e, CLASS, 10))?;
    s.check(Access::Configure, "exchange", name, CLASS, 10)?;
    let spec = ExchangeSpec {
        name: name.to_owned(),
        kind: m.kind.to_string(),
        durable: m.durable,
        auto_delete: m.auto_delete,
        internal: m.internal,
        arguments: m.arguments,
    };
    exchanges::declare(s.gateway, &vhost, &spec)
        .await
        .map_err(|e| s.refusal(e, CLASS, 10))?;
    reply(
        ch,
        s,
        m.nowait,
        exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {}),
    )
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
    // RabbitMQ 3.10 answers delete-ok for an exchange that is not there.
    exchanges::delete(s.gateway, &vhost, name, m.if_unused)
        .await
        .map_err(|e| s.refusal(e, CLASS, 20))?;
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
        binding::remove(s, &b, CLASS, UNBIND).await?;
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
