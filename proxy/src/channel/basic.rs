//! basic.publish, with mandatory returns and confirms.
//!
//! The method opens content assembly; once the body is complete it is
//! published (publish/: routed now, one RocketMQ message per destination
//! queue) and the sends join the connection's pipeline. Nothing here waits
//! on RocketMQ.

use amq_protocol::frame::AMQPContentHeader;
use amq_protocol::protocol::{basic, AMQPClass};

use super::{Channel, PublishDone, Session};
use crate::codec::content::Content;
use crate::delivery::reply_to;
use crate::error::{ConnectionException, HardCode, ProtocolError, SoftCode};
use crate::publish::Message;
use crate::topology::Access;

const CLASS: u16 = 60;
const PUBLISH: u16 = 40;

pub fn handle_basic_publish(
    ch: &mut Channel,
    s: &mut Session<'_>,
    m: basic::Publish,
) -> Result<(), ProtocolError> {
    if m.immediate {
        return Err(
            ConnectionException::new(HardCode::NotImplemented, "immediate=true")
                .on_method(CLASS, PUBLISH)
                .into(),
        );
    }
    let name = m.exchange.as_str();
    {
        let topology = s.vhost.read();
        if !topology.has_exchange(name) {
            drop(topology);
            return Err(s.channel_error(
                SoftCode::NotFound,
                format!("no exchange '{name}' in vhost '{}'", s.vhost.name),
                CLASS,
                PUBLISH,
            ));
        }
        if topology
            .exchanges
            .get(name)
            .is_some_and(|e| e.record.internal)
        {
            drop(topology);
            return Err(s.channel_error(
                SoftCode::AccessRefused,
                format!(
                    "cannot publish to internal exchange '{name}' in vhost '{}'",
                    s.vhost.name
                ),
                CLASS,
                PUBLISH,
            ));
        }
    }
    s.check(Access::Write, "exchange", name, CLASS, PUBLISH)?;
    ch.content.start(m);
    Ok(())
}

/// A complete message: route it and hand it to RocketMQ (or hold it until
/// tx.commit on a transactional channel).
pub fn publish_content(
    ch: &mut Channel,
    s: &mut Session<'_>,
    content: Content,
) -> Result<(), ProtocolError> {
    // A user-id property must name the connection's user (RabbitMQ's
    // validated user-id), so that consumers can trust it.
    if let Some(claimed) = content.properties.user_id() {
        if claimed.as_str() != s.user {
            return Err(content_refused(
                ch.id,
                format!(
                    "user_id property set to '{}' but authenticated user was '{}'",
                    claimed.as_str(),
                    s.user
                ),
            ));
        }
    }
    let content = with_reply_address(ch, content)?;
    if let Some(tx) = ch.tx.as_mut() {
        if !tx.hold(content) {
            return Err(content_refused(
                ch.id,
                format!(
                    "the transaction holds more than {} MiB of uncommitted messages; commit more often",
                    super::tx::MAX_HELD_BYTES >> 20
                ),
            ));
        }
        return Ok(());
    }
    let send = route(ch, s, content)?;
    let tag = ch.confirms.as_mut().map(|c| c.publish());
    crate::metrics::PUBLISHED.increment(1);
    if tag.is_some() {
        crate::metrics::PUBLISHED_CONFIRM.increment(1);
    }
    let Some(send) = send else {
        // An unroutable message is confirmed at once, after its return.
        if let (Some(tag), Some(confirms)) = (tag, ch.confirms.as_mut()) {
            confirms.settle(tag, true);
        }
        return Ok(());
    };
    let (channel, epoch) = (ch.id, ch.epoch);
    s.pipeline.push(Box::pin(async move {
        PublishDone {
            channel,
            epoch,
            tag,
            result: send.await,
        }
    }));
    Ok(())
}

pub use crate::publish::Stored;

/// A request whose reply_to is amq.rabbitmq.reply-to carries the channel's
/// reply address instead (406 without a reply consumer, as in RabbitMQ).
fn with_reply_address(ch: &Channel, mut content: Content) -> Result<Content, ProtocolError> {
    if content.properties.reply_to().as_ref().map(|r| r.as_str()) != Some(reply_to::QUEUE) {
        return Ok(content);
    }
    let Some((token, _)) = &ch.consuming.reply_to else {
        return Err(content_refused(
            ch.id,
            "fast reply consumer does not exist".to_owned(),
        ));
    };
    let address = format!("{}{token}", reply_to::PREFIX);
    content.properties = content.properties.with_reply_to(address.into());
    Ok(content)
}

/// 406 for a message refused once its content arrived: the channel is
/// named here (content frames do not pass through `handle_method`, which
/// fills it in for method errors).
fn content_refused(channel: u16, text: String) -> ProtocolError {
    ProtocolError::Channel(
        channel,
        crate::error::ChannelException::new(SoftCode::PreconditionFailed, text)
            .on_method(CLASS, PUBLISH),
    )
}

/// Routes a message now and starts storing one copy per destination queue
/// (publish/); None if it reached no queue (a mandatory one is returned first).
pub fn route(
    ch: &mut Channel,
    s: &mut Session<'_>,
    content: Content,
) -> Result<Option<Stored>, ProtocolError> {
    let Content {
        publish,
        properties,
        body,
    } = content;
    // A reply to a direct reply-to requester on this gateway: straight to
    // its channel, never stored (confirmed at once).
    if publish.exchange.as_str().is_empty()
        && s.gateway
            .replies
            .send(publish.routing_key.as_str(), &properties, &body)
    {
        crate::metrics::ROUTED.increment(1);
        return Ok(Some(Box::pin(std::future::ready(Ok(())))));
    }
    let message = Message {
        exchange: publish.exchange.as_str(),
        routing_key: publish.routing_key.as_str(),
        properties: &properties,
        body: &body,
    };
    let stored = crate::publish::publish(s.gateway, s.vhost, message)
        .map_err(|e| content_refused(ch.id, e.0))?;
    match (&stored, publish.mandatory) {
        (Some(_), _) => crate::metrics::ROUTED.increment(1),
        (None, true) => crate::metrics::UNROUTABLE_RETURNED.increment(1),
        (None, false) => crate::metrics::UNROUTABLE.increment(1),
    }
    if stored.is_none() && publish.mandatory {
        let ret = basic::Return {
            reply_code: SoftCode::NoRoute.id(),
            reply_text: "NO_ROUTE".into(),
            exchange: publish.exchange.clone(),
            routing_key: publish.routing_key.clone(),
        };
        s.out
            .method(ch.id, AMQPClass::Basic(basic::AMQPMethod::Return(ret)));
        let header = AMQPContentHeader {
            class_id: CLASS,
            body_size: body.len() as u64,
            properties,
        };
        s.out.content(ch.id, header, &body, s.frame_max);
    }
    Ok(stored)
}
