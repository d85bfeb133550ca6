//! /api/queues: list, show, declare (PUT), delete and purge, through the
//! registry as AMQP's queue methods.

use serde_json::Value;

use super::api::{
    arguments, body_object, flag, refusal, vhosts_of, visible_vhost, writable, Call, Reply,
};
use super::json;
use super::listing::columns;
use super::peers::{encode, gather, local_only};
use crate::metrics::queue_stats::add_into;
use crate::registry::queues::{self, QueueSpec};
use crate::topology::Access;

pub(super) async fn queue_json(c: &Call<'_>, state: &crate::topology::QueueState) -> Value {
    let counts = queues::counts(c.gateway, state).await.unwrap_or_default();
    let mut one = vec![json::queue(
        &json::node(c.gateway),
        state,
        counts.ready,
        counts.unacked,
        counts.consumers,
    )];
    let r = &state.record;
    add_peer_stats(c, Some(&r.vhost), &mut one).await;
    one.pop().unwrap_or_default()
}

/// Whether a listing needs the queues' counts (RocketMQ is asked for
/// them): not when `?columns=` leaves them all out.
fn counts_wanted(c: &Call<'_>) -> bool {
    c.query.get("columns").is_none_or(|columns| {
        columns
            .split(',')
            .any(|k| k.starts_with("messages") || k == "consumers")
    })
}

/// Each gateway counts the messages it moved through a queue: the
/// message_stats of the other live gateways are added in (unless the
/// caller is such a gateway asking for this one's own).
async fn add_peer_stats(c: &Call<'_>, vhost: Option<&str>, queues: &mut [Value]) {
    if local_only(c) || queues.is_empty() {
        return;
    }
    let path = match vhost {
        Some(v) => format!("queues/{}?columns=vhost,name,message_stats", encode(v)),
        None => "queues?columns=vhost,name,message_stats".to_owned(),
    };
    let theirs = gather(c, &path).await;
    if theirs.is_empty() {
        return;
    }
    let mut at: std::collections::HashMap<(&str, &str), usize> = Default::default();
    for (i, q) in queues.iter().enumerate() {
        at.insert(
            (
                q["vhost"].as_str().unwrap_or_default(),
                q["name"].as_str().unwrap_or_default(),
            ),
            i,
        );
    }
    let places: Vec<(usize, &Value)> = theirs
        .iter()
        .filter_map(|t| {
            let key = (t["vhost"].as_str()?, t["name"].as_str()?);
            Some((*at.get(&key)?, &t["message_stats"]))
        })
        .collect();
    for (i, stats) in places {
        add_into(&mut queues[i]["message_stats"], stats);
    }
}

pub(super) async fn list_queues(c: &Call<'_>, one: Option<&str>) -> Reply {
    let vhosts = match vhosts_of(c, one) {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let mut states = Vec::new();
    for vhost in vhosts {
        let mut of_vhost: Vec<_> = vhost.read().queues.values().cloned().collect();
        of_vhost.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        states.extend(of_vhost);
    }
    let node = json::node(c.gateway);
    let counts = if counts_wanted(c) {
        queues::counts_of(c.gateway, &states).await
    } else {
        vec![Default::default(); states.len()]
    };
    let mut out: Vec<Value> = states
        .iter()
        .zip(counts)
        .map(|(state, n)| json::queue(&node, state, n.ready, n.unacked, n.consumers))
        .collect();
    add_peer_stats(c, one, &mut out).await;
    Reply::ok(columns(c, out))
}

pub(super) async fn get_queue(c: &Call<'_>, vhost: &str, name: &str) -> Reply {
    let Some(v) = visible_vhost(c, vhost) else {
        return Reply::not_found();
    };
    let state = v.read().queues.get(name).cloned();
    match state {
        Some(state) => Reply::ok(queue_json(c, &state).await),
        None => Reply::not_found(),
    }
}

pub(super) async fn put_queue(c: &Call<'_>, vhost: &str, name: &str) -> Reply {
    let run = async {
        let v = writable(c, vhost, Access::Configure, "queue", name)?;
        let body = body_object(c)?;
        if name.starts_with("amq.") {
            return Err(Reply::forbidden(&format!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let spec = QueueSpec {
            name: name.to_owned(),
            durable: flag(&body, "durable", true)?,
            auto_delete: flag(&body, "auto_delete", false)?,
            exclusive_owner: None,
            arguments: arguments(&body)?,
        };
        let declared = queues::declare(c.gateway, &v, spec, "")
            .await
            .map_err(refusal)?;
        Ok(if declared.created {
            Reply::created()
        } else {
            Reply::no_content()
        })
    };
    run.await.unwrap_or_else(|reply| reply)
}

pub(super) async fn delete_queue(c: &Call<'_>, vhost: &str, name: &str) -> Reply {
    let run = async {
        let v = writable(c, vhost, Access::Configure, "queue", name)?;
        let state = v
            .read()
            .queues
            .get(name)
            .cloned()
            .ok_or_else(Reply::not_found)?;
        let counts = queues::counts(c.gateway, &state).await.map_err(refusal)?;
        if c.query.contains_key("if-unused") && counts.consumers > 0 {
            return Err(Reply::bad_request(&format!(
                "queue '{name}' in vhost '{vhost}' in use"
            )));
        }
        if c.query.contains_key("if-empty") && counts.ready > 0 {
            return Err(Reply::bad_request(&format!(
                "queue '{name}' in vhost '{vhost}' not empty"
            )));
        }
        let _changes = v.changes.lock().await;
        queues::delete(c.gateway, &v, &state.record)
            .await
            .map_err(refusal)?;
        Ok(Reply::no_content())
    };
    run.await.unwrap_or_else(|reply| reply)
}

pub(super) async fn purge_queue(c: &Call<'_>, vhost: &str, name: &str) -> Reply {
    let run = async {
        let v = writable(c, vhost, Access::Read, "queue", name)?;
        let state = v
            .read()
            .queues
            .get(name)
            .cloned()
            .ok_or_else(Reply::not_found)?;
        queues::purge(c.gateway, &state).await.map_err(refusal)?;
        Ok(Reply::no_content())
    };
    run.await.unwrap_or_else(|reply| reply)
}
