//! Connections, channels, consumers and nodes: what is open on this
//! gateway, from its connection roster, in RabbitMQ's shapes. A caller
//! tagged administrator or monitoring sees every connection; others see
//! their own. `DELETE /api/connections/{name}` closes one with 320, as
//! RabbitMQ does ("Closed via management plugin", or the `X-Reason`
//! header).
//!
//! Listings cover every live gateway (peers.rs asks the others); with
//! `?local=true` a gateway answers for itself only.

use std::sync::Arc;

use serde_json::{json, Value};

use super::api::{Call, Reply};
use super::listing::columns;
use super::peers;
use crate::connection::roster::{ChannelView, Entry};

/// The connections the caller may see, of one vhost or all.
fn visible(c: &Call<'_>, vhost: Option<&str>) -> Vec<Arc<Entry>> {
    c.gateway
        .connections
        .snapshot()
        .into_iter()
        .filter(|e| match e.opened.get() {
            Some(o) => {
                (c.caller.sees_all() || o.user == c.caller.name)
                    && vhost.is_none_or(|v| o.vhost == v)
            }
            None => false,
        })
        .collect()
}

fn connection_json(c: &Call<'_>, e: &Entry) -> Value {
    let node = super::node_name(c.gateway);
    let o = e.opened.get();
    json!({
        "name": e.name,
        "node": node,
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "state": "running",
        "user": o.map(|o| o.user.as_str()),
        "user_who_performed_action": o.map(|o| o.user.as_str()),
        "vhost": o.map(|o| o.vhost.as_str()),
        "host": e.local.ip().to_string(),
        "port": e.local.port(),
        "peer_host": e.peer.ip().to_string(),
        "peer_port": e.peer.port(),
        "ssl": e.tls,
        "connected_at": e.connected_at_ms,
        "channels": e.channels.load(std::sync::atomic::Ordering::Relaxed),
        "channel_max": o.map(|o| o.channel_max),
        "frame_max": o.map(|o| o.frame_max),
        "timeout": o.map(|o| o.heartbeat),
        "auth_mechanism": o.map(|o| o.auth_mechanism.as_str()),
        "client_properties": o.map_or(json!({}), |o| o.client_properties.clone()),
        "user_provided_name": o.and_then(|o| o.client_properties.get("connection_name").cloned()),
    })
}

pub(super) async fn list_connections(c: &Call<'_>, vhost: Option<&str>) -> Reply {
    if let Some(v) = vhost {
        if super::api::visible_vhost(c, v).is_none() {
            return Reply::not_found();
        }
    }
    let items = visible(c, vhost)
        .iter()
        .map(|e| connection_json(c, e))
        .collect();
    Reply::ok(columns(c, with_peers(c, items).await))
}

/// This gateway's objects and, unless asked for its own only, the other
/// gateways'.
async fn with_peers(c: &Call<'_>, mut items: Vec<Value>) -> Vec<Value> {
    if !peers::local_only(c) {
        items.extend(peers::gather(c, &peers::same_path(c)).await);
    }
    items
}

pub(super) async fn get_connection(c: &Call<'_>, name: &str) -> Reply {
    if let Some(e) = visible(c, None).into_iter().find(|e| e.name == name) {
        return Reply::ok(connection_json(c, &e));
    }
    if !peers::local_only(c) {
        let all = peers::gather(c, "connections").await;
        if let Some(found) = all.into_iter().find(|o| o["name"] == name) {
            return Reply::ok(found);
        }
    }
    Reply::not_found()
}

pub(super) async fn close_connection(c: &Call<'_>, name: &str) -> Reply {
    let Some(e) = visible(c, None).into_iter().find(|e| e.name == name) else {
        if !peers::local_only(c) && peers::delete_anywhere(c, &peers::same_path(c)).await {
            return Reply::no_content();
        }
        return Reply::not_found();
    };
    let owner = e.opened.get().is_some_and(|o| o.user == c.caller.name);
    if !c.caller.is_administrator() && !owner {
        return Reply::forbidden("only administrators close other users' connections");
    }
    let reason = c
        .reason
        .clone()
        .unwrap_or_else(|| "Closed via management plugin".to_owned());
    if e.close(reason) {
        Reply::no_content()
    } else {
        Reply::not_found()
    }
}

/// Every channel of the given connections, with its connection.
async fn channels_of(entries: Vec<Arc<Entry>>) -> Vec<(Arc<Entry>, ChannelView)> {
    let mut all = Vec::new();
    for e in entries {
        for view in e.describe().await.unwrap_or_default() {
            all.push((e.clone(), view));
        }
    }
    all
}

fn channel_json(c: &Call<'_>, e: &Entry, ch: &ChannelView) -> Value {
    let o = e.opened.get();
    json!({
        "name": format!("{} ({})", e.name, ch.number),
        "number": ch.number,
        "node": super::node_name(c.gateway),
        "user": o.map(|o| o.user.as_str()),
        "user_who_performed_action": o.map(|o| o.user.as_str()),
        "vhost": o.map(|o| o.vhost.as_str()),
        "state": "running",
        "connection_details": {
            "name": e.name,
            "peer_host": e.peer.ip().to_string(),
            "peer_port": e.peer.port(),
        },
        "consumer_count": ch.consumers.len(),
        "prefetch_count": ch.prefetch_count,
        "global_prefetch_count": ch.global_prefetch_count,
        "confirm": ch.confirm,
        "transactional": ch.transactional,
        "messages_unacknowledged": ch.messages_unacknowledged,
        "messages_unconfirmed": ch.messages_unconfirmed,
        "messages_uncommitted": ch.messages_uncommitted,
        "acks_uncommitted": 0,
    })
}

pub(super) async fn list_channels(
    c: &Call<'_>,
    vhost: Option<&str>,
    connection: Option<&str>,
) -> Reply {
    if let Some(v) = vhost {
        if super::api::visible_vhost(c, v).is_none() {
            return Reply::not_found();
        }
    }
    let mut entries = visible(c, vhost);
    if let Some(name) = connection {
        entries.retain(|e| e.name == name);
    }
    let items = channels_of(entries)
        .await
        .iter()
        .map(|(e, ch)| channel_json(c, e, ch))
        .collect();
    Reply::ok(columns(c, with_peers(c, items).await))
}

pub(super) async fn list_consumers(c: &Call<'_>, vhost: Option<&str>) -> Reply {
    if let Some(v) = vhost {
        if super::api::visible_vhost(c, v).is_none() {
            return Reply::not_found();
        }
    }
    let node = super::node_name(c.gateway);
    let mut items = Vec::new();
    for (e, ch) in channels_of(visible(c, vhost)).await {
        let o = e.opened.get();
        for consumer in &ch.consumers {
            items.push(json!({
                "consumer_tag": consumer.tag,
                "queue": {"name": consumer.queue, "vhost": o.map(|o| o.vhost.as_str())},
                "ack_required": consumer.ack_required,
                "prefetch_count": ch.prefetch_count,
                "exclusive": false,
                "active": true,
                "activity_status": "up",
                "arguments": {},
                "channel_details": {
                    "name": format!("{} ({})", e.name, ch.number),
                    "number": ch.number,
                    "connection_name": e.name,
                    "node": node,
                    "peer_host": e.peer.ip().to_string(),
                    "peer_port": e.peer.port(),
                    "user": o.map(|o| o.user.as_str()),
                },
            }));
        }
    }
    Reply::ok(columns(c, with_peers(c, items).await))
}

/// The live gateways, each a node.
pub(super) async fn list_nodes(c: &Call<'_>, one: Option<&str>) -> Reply {
    let live = match c
        .gateway
        .store
        .live_gateways(c.gateway.clock.now_ms())
        .await
    {
        Ok(live) => live,
        Err(error) => return Reply::error(503, "unavailable", &error.to_string()),
    };
    let here = c.gateway.instance_id.as_str();
    let mut nodes: Vec<Value> = live
        .iter()
        .map(|id| {
            let mut node = json!({
                "name": format!("amqp-gateway@{id}"),
                "type": "disc",
                "running": true,
            });
            if id == here {
                let t = c.gateway.connections.totals();
                node["uptime"] = json!(c.gateway.clock.now_ms() - c.gateway.started_ms);
                node["connections"] = json!(t.connections);
                node["channels"] = json!(t.channels);
                node["consumers"] = json!(t.consumers);
            }
            node
        })
        .collect();
    nodes.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    match one {
        Some(name) => match nodes.into_iter().find(|n| n["name"] == name) {
            Some(n) => Reply::ok(n),
            None => Reply::not_found(),
        },
        None => Reply::ok(columns(c, nodes)),
    }
}
