//! Messages over HTTP, as RabbitMQ's API moves them (for operators and
//! tests, not for throughput): `POST /api/exchanges/{vhost}/{exchange}/publish`
//! goes through the one publish path (publish/) and answers once every copy
//! is stored; `POST /api/queues/{vhost}/{queue}/get` takes messages through
//! the queue's feed as basic.get does, then acks, requeues or rejects them
//! as `ackmode` says.

use std::time::Duration;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::ShortString;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::api::{body_object, writable, Call, Reply};
use crate::definitions::{json_to_table, table_to_json};
use crate::delivery::feed::Outcome;
use crate::mapping::properties::{rocketmq_to_properties, PROPERTIES};
use crate::topology::Access;

/// A string field of the body that must be there.
fn required<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, Reply> {
    body.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| Reply::bad_request(&format!("key_missing: '{key}' (a string) is required")))
}

pub(super) async fn publish(c: &Call<'_>, vhost: &str, exchange: &str) -> Reply {
    match try_publish(c, vhost, exchange).await {
        Ok(reply) | Err(reply) => reply,
    }
}

async fn try_publish(c: &Call<'_>, vhost: &str, exchange: &str) -> Result<Reply, Reply> {
    let v = writable(c, vhost, Access::Write, "exchange", exchange)?;
    let name = if exchange == "amq.default" {
        ""
    } else {
        exchange
    };
    if !v.read().has_exchange(name) {
        return Err(Reply::not_found());
    }
    let body = body_object(c)?;
    let routing_key = required(&body, "routing_key")?;
    let payload = required(&body, "payload")?;
    let payload = match required(&body, "payload_encoding")? {
        "string" => Bytes::from(payload.to_owned()),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map(Bytes::from)
            .map_err(|e| Reply::bad_request(&format!("payload is not base64: {e}")))?,
        other => {
            return Err(Reply::bad_request(&format!(
                "payload_encoding '{other}': string or base64"
            )))
        }
    };
    let properties = match body.get("properties") {
        Some(Value::Object(p)) => json_to_properties(p)?,
        None | Some(Value::Null) => BasicProperties::default(),
        Some(other) => {
            return Err(Reply::bad_request(&format!(
                "'properties' must be an object, not {other}"
            )))
        }
    };
    let message = crate::publish::Message {
        exchange: name,
        routing_key,
        properties: &properties,
        body: &payload,
    };
    crate::metrics::PUBLISHED.increment(1);
    let stored =
        crate::publish::publish(c.gateway, &v, message).map_err(|e| Reply::bad_request(&e.0))?;
    let Some(stored) = stored else {
        crate::metrics::UNROUTABLE.increment(1);
        return Ok(Reply::ok(json!({"routed": false})));
    };
    crate::metrics::ROUTED.increment(1);
    match stored.await {
        Ok(()) => Ok(Reply::ok(json!({"routed": true}))),
        Err(e) if e.retry_may_help() => Err(Reply::error(503, "unavailable", &e.to_string())),
        Err(e) => Err(Reply::error(500, "internal_error", &e.to_string())),
    }
}

/// RabbitMQ's JSON properties: the AMQP names, headers as a table.
fn json_to_properties(p: &Map<String, Value>) -> Result<BasicProperties, Reply> {
    let mut out = BasicProperties::default();
    for (key, value) in p {
        let text = || -> Result<ShortString, Reply> {
            match value {
                Value::String(s) => Ok(s.as_str().into()),
                Value::Number(n) => Ok(n.to_string().as_str().into()),
                other => Err(Reply::bad_request(&format!(
                    "property '{key}' must be a string, not {other}"
                ))),
            }
        };
        let octet = || -> Result<u8, Reply> {
            value
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| Reply::bad_request(&format!("property '{key}' must be 0..255")))
        };
        out = match key.as_str() {
            "content_type" => out.with_content_type(text()?),
            "content_encoding" => out.with_content_encoding(text()?),
            "delivery_mode" => out.with_delivery_mode(octet()?),
            "priority" => out.with_priority(octet()?),
            "correlation_id" => out.with_correlation_id(text()?),
            "reply_to" => out.with_reply_to(text()?),
            "expiration" => out.with_expiration(text()?),
            "message_id" => out.with_message_id(text()?),
            "timestamp" => out.with_timestamp(value.as_u64().ok_or_else(|| {
                Reply::bad_request("property 'timestamp' must be seconds since the epoch")
            })?),
            "type" => out.with_type(text()?),
            "user_id" => out.with_user_id(text()?),
            "app_id" => out.with_app_id(text()?),
            "cluster_id" => out.with_cluster_id(text()?),
            "headers" => match value {
                Value::Object(h) => out.with_headers(json_to_table(h)),
                other => {
                    return Err(Reply::bad_request(&format!(
                        "'headers' must be an object, not {other}"
                    )))
                }
            },
            other => return Err(Reply::bad_request(&format!("unknown property '{other}'"))),
        };
    }
    Ok(out)
}

fn properties_to_json(p: &BasicProperties) -> Value {
    let mut out = Map::new();
    let mut text = |key: &str, v: &Option<ShortString>| {
        if let Some(v) = v {
            out.insert(key.to_owned(), json!(v.as_str()));
        }
    };
    text("content_type", p.content_type());
    text("content_encoding", p.content_encoding());
    text("correlation_id", p.correlation_id());
    text("reply_to", p.reply_to());
    text("expiration", p.expiration());
    text("message_id", p.message_id());
    text("type", p.kind());
    text("user_id", p.user_id());
    text("app_id", p.app_id());
    text("cluster_id", p.cluster_id());
    if let Some(mode) = p.delivery_mode() {
        out.insert("delivery_mode".into(), json!(mode));
    }
    if let Some(priority) = p.priority() {
        out.insert("priority".into(), json!(priority));
    }
    if let Some(timestamp) = p.timestamp() {
        out.insert("timestamp".into(), json!(timestamp));
    }
    if let Some(headers) = p.headers() {
        out.insert("headers".into(), Value::Object(table_to_json(headers)));
    }
    Value::Object(out)
}

pub(super) async fn get(c: &Call<'_>, vhost: &str, queue: &str) -> Reply {
    match try_get(c, vhost, queue).await {
        Ok(reply) | Err(reply) => reply,
    }
}

async fn try_get(c: &Call<'_>, vhost: &str, queue: &str) -> Result<Reply, Reply> {
    let v = writable(c, vhost, Access::Read, "queue", queue)?;
    let state = v
        .read()
        .queues
        .get(queue)
        .cloned()
        .ok_or_else(Reply::not_found)?;
    let body = body_object(c)?;
    // rabbitmqadmin sends numbers as strings.
    let number = |key: &str| match body.get(key) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let count = number("count").unwrap_or(1).min(10_000);
    let outcome = match required(&body, "ackmode")? {
        "ack_requeue_false" => Outcome::Ack,
        "ack_requeue_true" | "reject_requeue_true" => Outcome::Requeue,
        "reject_requeue_false" => Outcome::Reject,
        other => return Err(Reply::bad_request(&format!("ackmode '{other}': ack_requeue_true, ack_requeue_false, reject_requeue_true or reject_requeue_false"))),
    };
    let base64 = match required(&body, "encoding")? {
        "auto" => false,
        "base64" => true,
        other => {
            return Err(Reply::bad_request(&format!(
                "encoding '{other}': auto or base64"
            )))
        }
    };
    let truncate = number("truncate").map(|n| n as usize);
    let feed = c.gateway.feeds.get_or_start(&v, &state.record);
    let wait = Duration::from_millis(c.gateway.config.send_timeout_ms);
    let mut taken = Vec::new();
    let mut out = Vec::new();
    for _ in 0..count {
        let got = match tokio::time::timeout(wait, feed.get()).await {
            Ok(Ok(Some(got))) => got,
            _ => break,
        };
        let m = &got.message;
        let properties = rocketmq_to_properties(m.property(PROPERTIES)).unwrap_or_default();
        let payload = match truncate {
            Some(n) if n < m.body.len() => &m.body[..n],
            _ => &m.body[..],
        };
        let (payload, encoding) = match std::str::from_utf8(payload) {
            Ok(text) if !base64 => (text.to_owned(), "string"),
            _ => (
                base64::engine::general_purpose::STANDARD.encode(payload),
                "base64",
            ),
        };
        let (exchange, routing_key) = crate::delivery::origin(m);
        out.push(json!({
            "payload_bytes": m.body.len(),
            "redelivered": got.redelivered,
            "exchange": exchange,
            "routing_key": routing_key,
            "message_count": got.remaining,
            "properties": properties_to_json(&properties),
            "payload": payload,
            "payload_encoding": encoding,
        }));
        taken.push((m.queue_id, m.offset));
    }
    if !taken.is_empty() {
        feed.settle(taken, outcome);
    }
    Ok(Reply::ok(Value::Array(out)))
}
