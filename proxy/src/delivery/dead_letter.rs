//! Dead-lettering: a message rejected without requeue, or expired, in a
//! queue with `x-dead-letter-exchange` is published to that exchange, with
//! the x-death headers RabbitMQ 3.10 writes and without its expiration,
//! before the original is settled.

use std::sync::Arc;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};

use crate::mapping::properties::{
    rocketmq_to_properties, without_expiration, without_headers, PROPERTIES,
};
use crate::publish::Message;
use crate::topology::Vhost;
use crate::upstream::{InboundMessage, UpstreamError};
use crate::Gateway;

pub use crate::registry::arguments::DeadLetter as Target;

/// The queue's dead-letter exchange, if its arguments name one.
pub fn target(vhost: &Vhost, queue: &str) -> Option<Target> {
    vhost
        .read()
        .queues
        .get(queue)?
        .arguments
        .dead_letter
        .clone()
}

/// The reasons RabbitMQ records in x-death.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Rejected,
    Expired,
    /// Refused by a full queue with x-overflow reject-publish-dlx.
    MaxLen,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::MaxLen => "maxlen",
        }
    }
}

fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text.as_bytes().to_vec()))
}

fn text_of(value: Option<&AMQPValue>) -> Option<String> {
    match value? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The message's properties after dying in `queue`: an x-death entry for
/// (queue, reason) is added at the head or, if there is one, counted up and
/// moved to the head; x-first-death-* are set on the first death.
pub fn with_death(
    properties: &BasicProperties,
    queue: &str,
    reason: Reason,
    exchange: &str,
    routing_key: &str,
    now_secs: u64,
) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let same = |v: &AMQPValue| match v {
        AMQPValue::FieldTable(t) => {
            text_of(t.inner().get("queue")).as_deref() == Some(queue)
                && text_of(t.inner().get("reason")).as_deref() == Some(reason.as_str())
        }
        _ => false,
    };
    let previous = deaths.iter().position(same).map(|i| deaths.remove(i));
    let count = match &previous {
        Some(AMQPValue::FieldTable(t)) => match t.inner().get("count") {
            Some(AMQPValue::LongLongInt(n)) => *n + 1,
            Some(AMQPValue::LongInt(n)) => i64::from(*n) + 1,
            _ => 1,
        },
        _ => 1,
    };
    let mut death = FieldTable::default();
    death.insert("count".into(), AMQPValue::LongLongInt(count));
    death.insert("reason".into(), long_string(reason.as_str()));
    death.insert("queue".into(), long_string(queue));
    death.insert("time".into(), AMQPValue::Timestamp(now_secs));
    death.insert("exchange".into(), long_string(exchange));
    // The keys it was routed with: its routing key and its CC's.
    let mut keys = vec![long_string(routing_key)];
    if let Some(AMQPValue::FieldArray(cc)) = headers.inner().get("CC") {
        keys.extend(
            cc.as_slice()
                .iter()
                .filter(|k| matches!(k, AMQPValue::LongString(_)))
                .cloned(),
        );
    }
    death.insert(
        "routing-keys".into(),
        AMQPValue::FieldArray(FieldArray::from(keys)),
    );
    if let Some(expiration) = properties.expiration() {
        death.insert(
            "original-expiration".into(),
            long_string(expiration.as_str()),
        );
    }
    deaths.insert(0, AMQPValue::FieldTable(death));
    if !headers.contains_key("x-first-death-reason") {
        headers.insert("x-first-death-reason".into(), long_string(reason.as_str()));
        headers.insert("x-first-death-queue".into(), long_string(queue));
        headers.insert("x-first-death-exchange".into(), long_string(exchange));
    }
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(deaths)),
    );
    without_expiration(properties).with_headers(headers)
}

/// Reads the message at `offset` back, publishes it to the dead-letter
/// exchange and resolves once every copy is stored.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    gateway: &Arc<Gateway>,
    vhost: &Arc<Vhost>,
    topic: &str,
    queue: &str,
    queue_id: i32,
    offset: i64,
    target: &Target,
) -> Result<(), UpstreamError> {
    let pulled = gateway
        .upstream
        .pull(topic, queue_id, offset, 1, None)
        .await?;
    let Some(message) = pulled.messages.into_iter().find(|m| m.offset == offset) else {
        tracing::error!(%topic, offset, "A rejected message is no longer in RocketMQ; it cannot be dead-lettered.");
        return Ok(());
    };
    republish(gateway, vhost, queue, &message, target, Reason::Rejected).await
}

/// Publishes a message that died in `queue` to the dead-letter exchange,
/// through the one publish path (so a full dead-letter queue refuses it as
/// it refuses a publisher); resolves once every copy is stored.
pub async fn republish(
    gateway: &Arc<Gateway>,
    vhost: &Arc<Vhost>,
    queue: &str,
    message: &InboundMessage,
    target: &Target,
    reason: Reason,
) -> Result<(), UpstreamError> {
    let properties = rocketmq_to_properties(message.property(PROPERTIES))
        .map_err(|e| UpstreamError::Refused(e.to_string()))?;
    let (exchange, routing_key) = super::origin(message);
    let now = gateway.clock.now_secs();
    let mut properties = with_death(&properties, queue, reason, &exchange, &routing_key, now);
    // A new routing key replaces every key: CC and BCC go (RabbitMQ's rule).
    if target.routing_key.is_some() {
        properties = without_sender_selected(properties);
    }
    let new_key = target.routing_key.clone().unwrap_or(routing_key);
    if !vhost.read().has_exchange(&target.exchange) {
        static MISSING: crate::logging::Throttle =
            crate::logging::Throttle::new(crate::logging::LOG_INTERVAL);
        if let Some(more) = MISSING.admit() {
            tracing::warn!(vhost = %vhost.name, %queue, exchange = %target.exchange, reason = reason.as_str(), more_since_last_line = more, "Dead-letter exchange does not exist; the message is dropped, as RabbitMQ drops it.");
        }
        return Ok(());
    }
    let dead = Message {
        exchange: &target.exchange,
        routing_key: &new_key,
        properties: &properties,
        body: &message.body,
    };
    let cycle = cycle_topics(vhost, &properties);
    let stored = crate::publish::publish_except(gateway, vhost, dead, &cycle)
        .map_err(|e| UpstreamError::Refused(e.0))?;
    crate::metrics::DEAD_LETTERED.increment(1);
    match stored {
        // A full dead-letter queue drops it, as RabbitMQ does (and as
        // retrying would refuse it again, forever).
        Some(stored) => match stored.await {
            Err(UpstreamError::QueueFull(why)) => {
                tracing::debug!(vhost = %vhost.name, %queue, %why, "Dead letter refused by a full queue; dropped.");
                Ok(())
            }
            outcome => outcome,
        },
        None => Ok(()),
    }
}

/// The topics of queues a dead letter must not reach again: those it has
/// already died in, when every death was automatic (expired, maxlen) —
/// RabbitMQ drops such a cycle for those queues; a rejection in between
/// breaks it (a consumer decided).
fn cycle_topics(vhost: &Vhost, properties: &BasicProperties) -> Vec<String> {
    let Some(AMQPValue::FieldArray(deaths)) = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death"))
    else {
        return Vec::new();
    };
    let deaths: Vec<&FieldTable> = deaths
        .as_slice()
        .iter()
        .filter_map(|d| match d {
            AMQPValue::FieldTable(t) => Some(t),
            _ => None,
        })
        .collect();
    let field = |t: &FieldTable, key: &str| text_of(t.inner().get(key));
    if deaths
        .iter()
        .any(|d| field(d, "reason").as_deref() == Some(Reason::Rejected.as_str()))
    {
        return Vec::new();
    }
    let topology = vhost.read();
    deaths
        .iter()
        .filter_map(|d| field(d, "queue"))
        .filter_map(|q| topology.queues.get(&q).map(|s| s.record.topic.clone()))
        .collect()
}

/// The properties without the CC and BCC headers.
fn without_sender_selected(properties: BasicProperties) -> BasicProperties {
    without_headers(&properties, &["CC", "BCC"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::ShortString;

    #[test]
    fn x_death_names_every_routing_key_cc_included() {
        let mut headers = FieldTable::default();
        headers.insert(
            "CC".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![long_string("foo")])),
        );
        let p = BasicProperties::default().with_headers(headers);
        let dead = with_death(&p, "q", Reason::Expired, "amq.direct", "test", 1);
        let keys = deaths(&dead)[0].inner().get("routing-keys").cloned();
        assert_eq!(
            keys,
            Some(AMQPValue::FieldArray(FieldArray::from(vec![
                long_string("test"),
                long_string("foo")
            ])))
        );
    }

    #[test]
    fn a_dead_letter_routing_key_drops_cc_and_bcc() {
        let mut headers = FieldTable::default();
        for key in ["CC", "BCC", "kept"] {
            headers.insert(key.into(), AMQPValue::LongString("x".into()));
        }
        let stripped = without_sender_selected(BasicProperties::default().with_headers(headers));
        let keys: Vec<String> = stripped
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .keys()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(keys, ["kept"]);
    }

    fn deaths(p: &BasicProperties) -> Vec<FieldTable> {
        match p.headers().as_ref().and_then(|h| h.inner().get("x-death")) {
            Some(AMQPValue::FieldArray(a)) => a
                .as_slice()
                .iter()
                .map(|v| match v {
                    AMQPValue::FieldTable(t) => t.clone(),
                    other => panic!("x-death entry is not a table: {other:?}"),
                })
                .collect(),
            other => panic!("no x-death array: {other:?}"),
        }
    }

    #[test]
    fn first_death_adds_an_entry_and_first_death_headers() {
        let p = BasicProperties::default().with_expiration(ShortString::from("60000"));
        let p = with_death(&p, "work", Reason::Rejected, "jobs", "job.a", 1_700_000_000);
        let d = deaths(&p);
        assert_eq!(d.len(), 1);
        let e = d[0].inner();
        assert_eq!(e.get("count"), Some(&AMQPValue::LongLongInt(1)));
        assert_eq!(text_of(e.get("reason")).as_deref(), Some("rejected"));
        assert_eq!(text_of(e.get("queue")).as_deref(), Some("work"));
        assert_eq!(text_of(e.get("exchange")).as_deref(), Some("jobs"));
        assert_eq!(e.get("time"), Some(&AMQPValue::Timestamp(1_700_000_000)));
        assert_eq!(
            text_of(e.get("original-expiration")).as_deref(),
            Some("60000")
        );
        assert_eq!(p.expiration(), &None, "a dead letter does not expire again");
        let h = p.headers().clone().unwrap();
        assert_eq!(
            text_of(h.inner().get("x-first-death-queue")).as_deref(),
            Some("work")
        );
        assert_eq!(
            text_of(h.inner().get("x-first-death-reason")).as_deref(),
            Some("rejected")
        );
    }

    #[test]
    fn dying_again_in_the_same_queue_counts_up_and_moves_to_the_head() {
        let p = BasicProperties::default();
        let p = with_death(&p, "a", Reason::Rejected, "x", "k", 1);
        let p = with_death(&p, "b", Reason::Rejected, "x", "k", 2);
        let p = with_death(&p, "a", Reason::Rejected, "x", "k", 3);
        let d = deaths(&p);
        assert_eq!(d.len(), 2);
        assert_eq!(text_of(d[0].inner().get("queue")).as_deref(), Some("a"));
        assert_eq!(d[0].inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(text_of(d[1].inner().get("queue")).as_deref(), Some("b"));
        let h = p.headers().clone().unwrap();
        assert_eq!(
            text_of(h.inner().get("x-first-death-queue")).as_deref(),
            Some("a"),
            "first death headers are not overwritten"
        );
    }
}
