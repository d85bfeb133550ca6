//! queue.declare / bind / unbind / purge / delete: permission checks and
//! replies around the registry (registry/queues.rs), which does the work.

use amq_protocol::protocol::{queue, AMQPClass};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::{binding, Channel, Session};
use crate::delivery::reply_to;
use crate::error::{ProtocolError, SoftCode};
use crate::registry::queues::{self, QueueSpec};
use crate::topology::{Access, QueueState};

const CLASS: u16 = 50;

pub async fn handle_queue_declare(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: queue::Declare,
) -> Result<(), ProtocolError> {
    let vhost = s.vhost.clone();
    let mut name = m.queue.as_str().to_owned();
    if m.passive && name.starts_with(reply_to::QUEUE) {
        return reply_queue_declare_ok(ch, s, &name, m.nowait);
    }
    if m.passive {
        let state = existing_queue(s, &name, 10)?;
        // A passive declare is a use too (x-expires), as in RabbitMQ.
        crate::registry::expiry::touch(s.gateway, &state).await;
        return declare_ok(ch, s, m.nowait, &state, false).await;
    }
    if name.is_empty() {
        name = server_generated_name();
    } else if name.starts_with("amq.") {
        return Err(s.channel_error(
            SoftCode::AccessRefused,
            format!("queue name '{name}' contains reserved prefix 'amq.*'"),
            CLASS,
            10,
        ));
    }
    s.check(Access::Configure, "queue", &name, CLASS, 10)?;
    let spec = QueueSpec {
        name,
        durable: m.durable,
        auto_delete: m.auto_delete,
        exclusive_owner: m.exclusive.then(|| s.connection_name.to_owned()),
        arguments: m.arguments,
    };
    let declared = queues::declare(s.gateway, &vhost, spec, s.connection_name)
        .await
        .map_err(|e| s.refusal(e, CLASS, 10))?;
    declare_ok(ch, s, m.nowait, &declared.state, declared.created).await
}

/// AMQP's shortcuts for the queue most recently declared on the channel,
/// as RabbitMQ reads them: an empty queue name in queue.bind, unbind,
/// purge, delete, basic.consume and basic.get names that queue, and a
/// queue.bind with an empty queue name and routing key binds with its name
/// as the key. Err (class, method) when the channel declared no queue.
pub fn expand_shortcuts(last: &str, method: &mut AMQPClass) -> Result<(), (u16, u16)> {
    use amq_protocol::protocol::basic;
    let (queue, ids) = match method {
        AMQPClass::Queue(queue::AMQPMethod::Bind(m)) => {
            if m.queue.as_str().is_empty() && m.routing_key.as_str().is_empty() {
                m.routing_key = last.into();
            }
            (&mut m.queue, (CLASS, 20))
        }
        AMQPClass::Queue(queue::AMQPMethod::Unbind(m)) => (&mut m.queue, (CLASS, 50)),
        AMQPClass::Queue(queue::AMQPMethod::Purge(m)) => (&mut m.queue, (CLASS, 30)),
        AMQPClass::Queue(queue::AMQPMethod::Delete(m)) => (&mut m.queue, (CLASS, 40)),
        AMQPClass::Basic(basic::AMQPMethod::Consume(m)) => (&mut m.queue, (60, 20)),
        AMQPClass::Basic(basic::AMQPMethod::Get(m)) => (&mut m.queue, (60, 70)),
        _ => return Ok(()),
    };
    if queue.as_str().is_empty() {
        if last.is_empty() {
            return Err(ids);
        }
        *queue = last.into();
    }
    Ok(())
}

/// Line feeds and carriage returns are taken out of the queue and exchange
/// names of queue and exchange methods, as RabbitMQ takes them out (a name
/// pasted with its newline names the same object).
pub fn strip_line_breaks(method: &mut AMQPClass) {
    use amq_protocol::protocol::exchange;
    use amq_protocol::types::ShortString;
    fn strip(name: &mut ShortString) {
        if name.as_str().contains(['\r', '\n']) {
            *name = name.as_str().replace(['\r', '\n'], "").into();
        }
    }
    match method {
        AMQPClass::Queue(queue::AMQPMethod::Declare(m)) => strip(&mut m.queue),
        AMQPClass::Queue(queue::AMQPMethod::Delete(m)) => strip(&mut m.queue),
        AMQPClass::Queue(queue::AMQPMethod::Purge(m)) => strip(&mut m.queue),
        AMQPClass::Queue(queue::AMQPMethod::Bind(m)) => {
            strip(&mut m.queue);
            strip(&mut m.exchange);
        }
        AMQPClass::Queue(queue::AMQPMethod::Unbind(m)) => {
            strip(&mut m.queue);
            strip(&mut m.exchange);
        }
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(m)) => strip(&mut m.exchange),
        AMQPClass::Exchange(exchange::AMQPMethod::Delete(m)) => strip(&mut m.exchange),
        AMQPClass::Exchange(exchange::AMQPMethod::Bind(m)) => {
            strip(&mut m.source);
            strip(&mut m.destination);
        }
        AMQPClass::Exchange(exchange::AMQPMethod::Unbind(m)) => {
            strip(&mut m.source);
            strip(&mut m.destination);
        }
        _ => {}
    }
}

/// A passive declare of a direct reply-to address: there while its
/// requester consumes (one consumer, no messages), else 404.
fn reply_queue_declare_ok(
    ch: &mut Channel,
    s: &mut Session<'_>,
    name: &str,
    nowait: bool,
) -> Result<(), ProtocolError> {
    if name != reply_to::QUEUE && !s.gateway.replies.exists(name) {
        return Err(s.channel_error(
            SoftCode::NotFound,
            format!("no queue '{name}' in vhost '{}'", s.vhost.name),
            CLASS,
            10,
        ));
    }
    if !nowait {
        s.out.method(
            ch.id,
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                queue: name.into(),
                message_count: 0,
                consumer_count: u32::from(name != reply_to::QUEUE),
            })),
        );
    }
    Ok(())
}

/// `amq.gen-` and 22 random URL-safe characters, as RabbitMQ names them.
fn server_generated_name() -> String {
    let bytes: [u8; 16] = rand::random();
    format!("amq.gen-{}", URL_SAFE_NO_PAD.encode(bytes))
}

pub fn existing_queue(
    s: &Session<'_>,
    name: &str,
    method: u16,
) -> Result<QueueState, ProtocolError> {
    queues::existing(s.vhost, name, s.connection_name).map_err(|e| s.refusal(e, CLASS, method))
}

/// declare-ok with the queue's counts; a queue this declare made is empty
/// (no need to ask RocketMQ).
async fn declare_ok(
    ch: &mut Channel,
    s: &mut Session<'_>,
    nowait: bool,
    state: &QueueState,
    created: bool,
) -> Result<(), ProtocolError> {
    ch.last_queue.clone_from(&state.record.name);
    if nowait {
        return Ok(());
    }
    let (message_count, consumer_count) = if created {
        (0, 0)
    } else {
        let counts = queues::counts(s.gateway, state)
            .await
            .map_err(|e| s.refusal(e, CLASS, 10))?;
        (counts.ready, counts.consumers)
    };
    s.out.method(
        ch.id,
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
            queue: state.record.name.clone().into(),
            message_count,
            consumer_count,
        })),
    );
    Ok(())
}

pub async fn handle_queue_bind(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: queue::Bind,
) -> Result<(), ProtocolError> {
    let kind = meta::DestinationKind::Queue;
    let b = binding::record(
        s,
        m.exchange.as_str(),
        m.queue.as_str(),
        kind,
        m.routing_key.as_str(),
        &m.arguments,
    );
    check_endpoints(s, &b, 20)?;
    binding::add(s, &b, CLASS, 20).await?;
    reply(ch, s, m.nowait, queue::AMQPMethod::BindOk(queue::BindOk {}))
}

pub async fn handle_queue_unbind(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: queue::Unbind,
) -> Result<(), ProtocolError> {
    let kind = meta::DestinationKind::Queue;
    let b = binding::record(
        s,
        m.exchange.as_str(),
        m.queue.as_str(),
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
        false,
        queue::AMQPMethod::UnbindOk(queue::UnbindOk {}),
    )
}

/// Checks a queue.bind (method 20) or queue.unbind (50) as RabbitMQ does:
/// the default exchange and permissions first, then the endpoints. `Ok(false)`
/// means an unbind whose queue or exchange is gone: nothing to remove, and
/// RabbitMQ 3.10 answers unbind-ok (a bind gets 404).
/// queue.unbind's method id.
const UNBIND: u16 = 50;

fn check_endpoints(s: &Session<'_>, b: &meta::Binding, method: u16) -> Result<bool, ProtocolError> {
    if b.source.is_empty() {
        return Err(s.channel_error(
            SoftCode::AccessRefused,
            format!(
                "operation not permitted on the default exchange (queue '{}')",
                b.destination
            ),
            CLASS,
            method,
        ));
    }
    s.check(Access::Write, "queue", &b.destination, CLASS, method)?;
    s.check(Access::Read, "exchange", &b.source, CLASS, method)?;
    let (queue_exists, exchange_exists) = {
        let t = s.vhost.read();
        (
            t.queues.contains_key(&b.destination),
            t.exchanges.contains_key(&b.source),
        )
    };
    if method == UNBIND && !(queue_exists && exchange_exists) {
        return Ok(false);
    }
    existing_queue(s, &b.destination, method)?;
    if !exchange_exists {
        return Err(s.channel_error(
            SoftCode::NotFound,
            format!("no exchange '{}' in vhost '{}'", b.source, s.vhost.name),
            CLASS,
            method,
        ));
    }
    Ok(true)
}

pub async fn handle_queue_purge(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: queue::Purge,
) -> Result<(), ProtocolError> {
    let state = existing_queue(s, m.queue.as_str(), 30)?;
    s.check(Access::Read, "queue", m.queue.as_str(), CLASS, 30)?;
    let purged = queues::purge(s.gateway, &state)
        .await
        .map_err(|e| s.refusal(e, CLASS, 30))?;
    let message_count = purged.min(u64::from(u32::MAX)) as u32;
    reply(
        ch,
        s,
        m.nowait,
        queue::AMQPMethod::PurgeOk(queue::PurgeOk { message_count }),
    )
}

pub async fn handle_queue_delete(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: queue::Delete,
) -> Result<(), ProtocolError> {
    let vhost = s.vhost.clone();
    let Some(state) = vhost.read().queues.get(m.queue.as_str()).cloned() else {
        // RabbitMQ answers delete-ok for a queue that does not exist.
        return reply(
            ch,
            s,
            m.nowait,
            queue::AMQPMethod::DeleteOk(queue::DeleteOk { message_count: 0 }),
        );
    };
    queues::check_owner(&state, s.connection_name).map_err(|e| s.refusal(e, CLASS, 40))?;
    s.check(Access::Configure, "queue", m.queue.as_str(), CLASS, 40)?;
    let counts = queues::counts(s.gateway, &state)
        .await
        .map_err(|e| s.refusal(e, CLASS, 40))?;
    let (count, consumers) = (counts.ready, counts.consumers);
    if m.if_unused && consumers > 0 {
        return Err(s.channel_error(
            SoftCode::PreconditionFailed,
            format!("queue '{}' in vhost '{}' in use", m.queue, vhost.name),
            CLASS,
            40,
        ));
    }
    if m.if_empty && count > 0 {
        return Err(s.channel_error(
            SoftCode::PreconditionFailed,
            format!("queue '{}' in vhost '{}' not empty", m.queue, vhost.name),
            CLASS,
            40,
        ));
    }
    let _changes = vhost.changes.lock().await;
    queues::delete(s.gateway, &vhost, &state.record)
        .await
        .map_err(|e| s.refusal(e, CLASS, 40))?;
    reply(
        ch,
        s,
        m.nowait,
        queue::AMQPMethod::DeleteOk(queue::DeleteOk {
            message_count: count,
        }),
    )
}

fn reply(
    ch: &Channel,
    s: &mut Session<'_>,
    nowait: bool,
    method: queue::AMQPMethod,
) -> Result<(), ProtocolError> {
    if !nowait {
        s.out.method(ch.id, AMQPClass::Queue(method));
    }
    Ok(())
}
