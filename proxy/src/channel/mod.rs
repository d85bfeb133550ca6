//! The AMQP channel: its state and one handler per method, a file per class.
//!
//! `handle_method` is one exhaustive match over the methods a client may send
//! on an open channel; adding a method to amq-protocol is a compile error
//! here until it is handled. channel.open / channel.close change the
//! connection's channel table and are handled by the connection.

pub mod basic;
pub mod binding;
pub mod confirm;
pub mod consume;
pub mod exchange;
pub mod queue;
pub mod tx;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{access, channel, AMQPClass};
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;

use crate::codec::content::ContentAssembler;
use crate::codec::FrameEncoder;
use crate::delivery::reply_to;
use crate::error::{ChannelException, ConnectionException, HardCode, ProtocolError, SoftCode};
use crate::registry::RegistryError;
use crate::topology::{Access, Permission, Vhost};
use crate::upstream::UpstreamError;
use crate::Gateway;

/// RocketMQ's answer to one publish, routed back to its channel.
#[derive(Debug)]
pub struct PublishDone {
    pub channel: u16,
    /// Which opening of the channel published it (a reopened channel has a new epoch).
    pub epoch: u64,
    pub tag: Option<u64>,
    pub result: Result<(), UpstreamError>,
}

pub type PublishFuture = Pin<Box<dyn Future<Output = PublishDone> + Send>>;

/// Publishes in flight to RocketMQ, polled by the connection task.
pub type Pipeline = FuturesUnordered<PublishFuture>;

/// What a channel method may use of its connection.
pub struct Session<'a> {
    pub gateway: &'a Arc<Gateway>,
    pub vhost: &'a Arc<Vhost>,
    pub user: &'a str,
    pub permission: &'a Permission,
    /// Identifies the connection that owns exclusive queues.
    pub connection_name: &'a str,
    pub out: &'a mut FrameEncoder,
    pub frame_max: usize,
    pub pipeline: &'a mut Pipeline,
    /// Where this connection's feeds send deliveries.
    pub sink: &'a crate::delivery::ConnectionSink,
    /// Body bytes on their way to this connection's socket.
    pub in_transit: &'a Arc<std::sync::atomic::AtomicUsize>,
}

impl Session<'_> {
    /// 403 unless the user's permission on this vhost allows `access` to `name`.
    pub fn check(
        &self,
        access: Access,
        kind: &str,
        name: &str,
        class_id: u16,
        method_id: u16,
    ) -> Result<(), ProtocolError> {
        if self.permission.allows(access, name) {
            return Ok(());
        }
        let what = match access {
            Access::Configure => "configure",
            Access::Write => "write",
            Access::Read => "read",
        };
        Err(self.channel_error(
            SoftCode::AccessRefused,
            format!(
                "{what} access to {kind} '{}' in vhost '{}' refused for user '{}'",
                display_name(name),
                self.vhost.name,
                self.user
            ),
            class_id,
            method_id,
        ))
    }

    /// The one mapping from a registry error to an AMQP exception: a
    /// refused request closes the channel (or, for what the spec makes a
    /// connection error, the connection); a failed meta store or RocketMQ
    /// closes the connection with 541.
    pub fn refusal(&self, error: RegistryError, class_id: u16, method_id: u16) -> ProtocolError {
        let soft = |code, text| self.channel_error(code, text, class_id, method_id);
        let hard = |code, text| {
            ProtocolError::from(ConnectionException::new(code, text).on_method(class_id, method_id))
        };
        match error {
            RegistryError::NotFound(text) => soft(SoftCode::NotFound, text),
            RegistryError::PreconditionFailed(text) => soft(SoftCode::PreconditionFailed, text),
            RegistryError::ResourceLocked(text) => soft(SoftCode::ResourceLocked, text),
            RegistryError::AccessRefused(text) => soft(SoftCode::AccessRefused, text),
            RegistryError::NotImplemented(text) => hard(HardCode::NotImplemented, text),
            RegistryError::CommandInvalid(text) => hard(HardCode::CommandInvalid, text),
            RegistryError::Meta { doing, error } => crate::error::meta_failure(doing, &error),
            RegistryError::Upstream { doing, error } => {
                crate::error::upstream_failure(doing, &error)
            }
        }
    }

    pub fn channel_error(
        &self,
        code: SoftCode,
        text: String,
        class_id: u16,
        method_id: u16,
    ) -> ProtocolError {
        // The channel id is filled in by `handle_method`'s caller.
        ProtocolError::Channel(
            0,
            ChannelException::new(code, text).on_method(class_id, method_id),
        )
    }
}

/// Whether `method` names a queue or exchange this gateway does not know.
/// Another gateway may have declared it a moment ago; the caller catches up
/// with the meta store before answering 404 (read-your-writes across
/// gateways behind one load balancer).
pub fn names_unknown(vhost: &Vhost, method: &AMQPClass) -> bool {
    use amq_protocol::protocol::{basic, exchange, queue};
    let t = vhost.read();
    // Direct reply-to names are never in the store.
    let queue = |name: &str| {
        !name.is_empty() && !name.starts_with(reply_to::QUEUE) && !t.queues.contains_key(name)
    };
    let exchange = |name: &str| !t.has_exchange(name);
    match method {
        // A mandatory message routed nowhere would be returned: a binding
        // made elsewhere may not have arrived yet (headers are not known
        // here, so a headers exchange may catch up needlessly).
        AMQPClass::Basic(basic::AMQPMethod::Publish(m)) => {
            exchange(m.exchange.as_str())
                || (m.mandatory
                    && !m.routing_key.as_str().starts_with(reply_to::PREFIX)
                    && t.destination_topics(m.exchange.as_str(), &[m.routing_key.as_str()], None)
                        .is_empty())
        }
        AMQPClass::Basic(basic::AMQPMethod::Consume(m)) => queue(m.queue.as_str()),
        AMQPClass::Basic(basic::AMQPMethod::Get(m)) => queue(m.queue.as_str()),
        AMQPClass::Queue(queue::AMQPMethod::Declare(m)) => queue(m.queue.as_str()),
        AMQPClass::Queue(queue::AMQPMethod::Bind(m)) => {
            queue(m.queue.as_str()) || exchange(m.exchange.as_str())
        }
        AMQPClass::Queue(queue::AMQPMethod::Unbind(m)) => {
            queue(m.queue.as_str()) || exchange(m.exchange.as_str())
        }
        AMQPClass::Queue(queue::AMQPMethod::Purge(m)) => queue(m.queue.as_str()),
        AMQPClass::Queue(queue::AMQPMethod::Delete(m)) => queue(m.queue.as_str()),
        AMQPClass::Exchange(exchange::AMQPMethod::Declare(m)) => exchange(m.exchange.as_str()),
        AMQPClass::Exchange(exchange::AMQPMethod::Delete(m)) => exchange(m.exchange.as_str()),
        AMQPClass::Exchange(exchange::AMQPMethod::Bind(m)) => {
            exchange(m.source.as_str()) || exchange(m.destination.as_str())
        }
        AMQPClass::Exchange(exchange::AMQPMethod::Unbind(m)) => {
            exchange(m.source.as_str()) || exchange(m.destination.as_str())
        }
        _ => false,
    }
}

fn display_name(name: &str) -> &str {
    if name.is_empty() {
        "amq.default"
    } else {
        name
    }
}

/// One open channel.
#[derive(Debug)]
pub struct Channel {
    pub id: u16,
    pub epoch: u64,
    pub content: ContentAssembler,
    pub confirms: Option<confirm::Confirms>,
    pub consuming: consume::Consuming,
    /// tx.select was sent: what the open transaction holds.
    pub tx: Option<tx::Transaction>,
    /// The queue most recently declared here, which an empty queue name
    /// stands for (queue::expand_shortcuts).
    pub last_queue: String,
}

impl Channel {
    pub fn new(id: u16, epoch: u64) -> Channel {
        Channel {
            id,
            epoch,
            content: ContentAssembler::default(),
            confirms: None,
            consuming: consume::Consuming::default(),
            tx: None,
            last_queue: String::new(),
        }
    }
}

/// Handles one method on an open channel.
pub async fn handle_method(
    ch: &mut Channel,
    s: &mut Session<'_>,
    method: AMQPClass,
) -> Result<(), ProtocolError> {
    if !ch.content.is_idle() {
        return Err(ConnectionException::new(
            HardCode::UnexpectedFrame,
            format!(
                "expected content header or body for channel {}, got a method frame",
                ch.id
            ),
        )
        .into());
    }
    let mut method = method;
    if let Err((class_id, method_id)) = queue::expand_shortcuts(&ch.last_queue, &mut method) {
        return Err(ProtocolError::Channel(
            ch.id,
            ChannelException::new(SoftCode::NotFound, "no previously declared queue")
                .on_method(class_id, method_id),
        ));
    }
    let result = dispatch(ch, s, method).await;
    // Handlers build channel errors without knowing their channel id.
    result.map_err(|e| match e {
        ProtocolError::Channel(_, ex) => ProtocolError::Channel(ch.id, ex),
        other => other,
    })
}

async fn dispatch(
    ch: &mut Channel,
    s: &mut Session<'_>,
    method: AMQPClass,
) -> Result<(), ProtocolError> {
    use amq_protocol::protocol::{basic as b, confirm as c, exchange as e, queue as q, tx};
    match method {
        AMQPClass::Exchange(m) => match m {
            e::AMQPMethod::Declare(m) => exchange::handle_exchange_declare(ch, s, m).await,
            e::AMQPMethod::Delete(m) => exchange::handle_exchange_delete(ch, s, m).await,
            e::AMQPMethod::Bind(m) => exchange::handle_exchange_bind(ch, s, m).await,
            e::AMQPMethod::Unbind(m) => exchange::handle_exchange_unbind(ch, s, m).await,
            e::AMQPMethod::DeclareOk(_)
            | e::AMQPMethod::DeleteOk(_)
            | e::AMQPMethod::BindOk(_)
            | e::AMQPMethod::UnbindOk(_) => Err(server_method("exchange")),
        },
        AMQPClass::Queue(m) => match m {
            q::AMQPMethod::Declare(m) => queue::handle_queue_declare(ch, s, m).await,
            q::AMQPMethod::Bind(m) => queue::handle_queue_bind(ch, s, m).await,
            q::AMQPMethod::Unbind(m) => queue::handle_queue_unbind(ch, s, m).await,
            q::AMQPMethod::Purge(m) => queue::handle_queue_purge(ch, s, m).await,
            q::AMQPMethod::Delete(m) => queue::handle_queue_delete(ch, s, m).await,
            q::AMQPMethod::DeclareOk(_)
            | q::AMQPMethod::BindOk(_)
            | q::AMQPMethod::UnbindOk(_)
            | q::AMQPMethod::PurgeOk(_)
            | q::AMQPMethod::DeleteOk(_) => Err(server_method("queue")),
        },
        AMQPClass::Basic(m) => match m {
            b::AMQPMethod::Publish(m) => basic::handle_basic_publish(ch, s, m),
            b::AMQPMethod::Qos(m) => consume::handle_basic_qos(ch, s, m),
            b::AMQPMethod::Consume(m) => consume::handle_basic_consume(ch, s, m).await,
            b::AMQPMethod::Cancel(m) => consume::handle_basic_cancel(ch, s, m).await,
            b::AMQPMethod::Get(m) => consume::handle_basic_get(ch, s, m).await,
            b::AMQPMethod::Ack(m) => consume::handle_basic_ack(ch, m),
            b::AMQPMethod::Nack(m) => consume::handle_basic_nack(ch, m),
            b::AMQPMethod::Reject(m) => consume::handle_basic_reject(ch, m),
            b::AMQPMethod::Recover(m) => consume::handle_basic_recover(ch, s, m.requeue, true),
            b::AMQPMethod::RecoverAsync(m) => {
                consume::handle_basic_recover(ch, s, m.requeue, false)
            }
            b::AMQPMethod::QosOk(_)
            | b::AMQPMethod::ConsumeOk(_)
            | b::AMQPMethod::CancelOk(_)
            | b::AMQPMethod::Return(_)
            | b::AMQPMethod::Deliver(_)
            | b::AMQPMethod::GetOk(_)
            | b::AMQPMethod::GetEmpty(_)
            | b::AMQPMethod::RecoverOk(_) => Err(server_method("basic")),
        },
        AMQPClass::Confirm(m) => match m {
            c::AMQPMethod::Select(m) => confirm::handle_confirm_select(ch, s, m),
            c::AMQPMethod::SelectOk(_) => Err(server_method("confirm")),
        },
        AMQPClass::Tx(m) => match m {
            tx::AMQPMethod::Select(_) => self::tx::handle_tx_select(ch, s),
            tx::AMQPMethod::Commit(_) => self::tx::handle_tx_commit(ch, s).await,
            tx::AMQPMethod::Rollback(_) => self::tx::handle_tx_rollback(ch, s),
            tx::AMQPMethod::SelectOk(_)
            | tx::AMQPMethod::CommitOk(_)
            | tx::AMQPMethod::RollbackOk(_) => Err(server_method("tx")),
        },
        AMQPClass::Channel(m) => match m {
            channel::AMQPMethod::Flow(f) => {
                consume::set_flow(ch, f.active);
                s.out.method(
                    ch.id,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: f.active,
                    })),
                );
                Ok(())
            }
            // Our own channel.flow is never sent, so a flow-ok answers nothing.
            channel::AMQPMethod::FlowOk(_) => Ok(()),
            channel::AMQPMethod::Open(_) => Err(ConnectionException::new(
                HardCode::ChannelError,
                format!("second 'channel.open' seen on channel {}", ch.id),
            )
            .on_method(20, 10)
            .into()),
            channel::AMQPMethod::OpenOk(_) => Err(server_method("channel")),
            // Handled by the connection, which owns the channel table.
            channel::AMQPMethod::Close(_) | channel::AMQPMethod::CloseOk(_) => Ok(()),
        },
        AMQPClass::Access(m) => match m {
            // Deprecated in 0-9-1; RabbitMQ answers it and ignores it.
            access::AMQPMethod::Request(_) => {
                s.out.method(
                    ch.id,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                );
                Ok(())
            }
            access::AMQPMethod::RequestOk(_) => Err(server_method("access")),
        },
        AMQPClass::Connection(_) => Err(ConnectionException::new(
            HardCode::CommandInvalid,
            format!("connection method on channel {}", ch.id),
        )
        .into()),
    }
}

/// A method only a server sends.
fn server_method(class: &str) -> ProtocolError {
    ConnectionException::new(
        HardCode::CommandInvalid,
        format!("{class} method that only a server may send"),
    )
    .into()
}

/// Content frames for a channel, in publish order.
pub fn handle_header(
    ch: &mut Channel,
    s: &mut Session<'_>,
    header: AMQPContentHeader,
) -> Result<(), ProtocolError> {
    let max = s.gateway.max_message_size();
    if let Some(content) = ch.content.header(ch.id, header, max)? {
        basic::publish_content(ch, s, content)?;
    }
    Ok(())
}

pub fn handle_body(
    ch: &mut Channel,
    s: &mut Session<'_>,
    body: Bytes,
) -> Result<(), ProtocolError> {
    if let Some(content) = ch.content.body(body)? {
        basic::publish_content(ch, s, content)?;
    }
    Ok(())
}
