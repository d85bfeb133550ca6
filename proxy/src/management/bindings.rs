//! /api/bindings and the bindings of one exchange or queue: list, add
//! (POST), show and delete one by its properties key, through the registry
//! as AMQP's queue.bind / exchange.bind and their unbinds.

use serde_json::Value;

use super::api::{
    arguments, body_object, refusal, vhosts_of, visible_vhost, writable, Call, Reply,
};
use super::json;
use super::listing::columns;
use crate::registry::bindings;
use crate::topology::{encode_arguments, Access, Vhost};

/// A vhost's bindings as RabbitMQ lists them: each queue's default binding
/// first, then the bindings of each exchange, by name.
fn of_vhost(vhost: &Vhost) -> Vec<Value> {
    let t = vhost.read();
    let mut queues: Vec<&String> = t.queues.keys().collect();
    queues.sort();
    let mut out: Vec<Value> = queues
        .into_iter()
        .map(|q| json::default_binding(&vhost.name, q))
        .collect();
    let mut sources: Vec<&String> = t.exchanges.keys().collect();
    sources.sort();
    for s in sources {
        out.extend(t.exchanges[s].records.iter().map(json::binding));
    }
    out
}

pub(super) fn list_bindings(c: &Call<'_>, one: Option<&str>) -> Reply {
    let vhosts = match vhosts_of(c, one) {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let out = vhosts.iter().flat_map(|v| of_vhost(v)).collect();
    Reply::ok(columns(c, out))
}

/// Which bindings of a vhost a path names.
#[derive(Debug, Clone, Copy)]
pub(super) struct Selection<'a> {
    pub source: Option<&'a str>,
    /// "queue" or "exchange", with the destination's name.
    pub destination: Option<(&'a str, &'a str)>,
    pub properties_key: Option<&'a str>,
}

impl Selection<'_> {
    fn keeps(&self, b: &Value) -> bool {
        self.source.is_none_or(|s| b["source"] == s)
            && self
                .destination
                .is_none_or(|(kind, d)| b["destination_type"] == kind && b["destination"] == d)
            && self.properties_key.is_none_or(|k| b["properties_key"] == k)
    }
}

/// The destination kind a path segment names ("q" or "e").
pub(super) fn kind_of(segment: &str) -> &'static str {
    if segment == "q" {
        "queue"
    } else {
        "exchange"
    }
}

/// Bindings of an existing exchange or queue, or between two objects
/// (`GET /api/bindings/{vh}/e/{s}/q/{d}` and the like); 404 when the vhost
/// or a named object does not exist.
pub(super) fn list_selected(c: &Call<'_>, vhost: &str, selection: Selection<'_>) -> Reply {
    let Some(v) = visible_vhost(c, vhost) else {
        return Reply::not_found();
    };
    {
        let t = v.read();
        let source_there = selection
            .source
            .is_none_or(|s| s.is_empty() || t.exchanges.contains_key(s));
        let destination_there = selection.destination.is_none_or(|(kind, d)| match kind {
            "queue" => t.queues.contains_key(d),
            _ => t.exchanges.contains_key(d),
        });
        if !source_there || !destination_there {
            return Reply::not_found();
        }
    }
    let out: Vec<Value> = of_vhost(&v)
        .into_iter()
        .filter(|b| selection.keeps(b))
        .collect();
    if selection.properties_key.is_some() {
        return match out.into_iter().next() {
            Some(one) => Reply::ok(one),
            None => Reply::not_found(),
        };
    }
    Reply::ok(columns(c, out))
}

/// `DELETE /api/bindings/{vh}/e/{s}/{q|e}/{d}/{props}`.
pub(super) async fn unbind(c: &Call<'_>, vhost: &str, selection: Selection<'_>) -> Reply {
    let run = async {
        let (kind, destination) = selection.destination.unwrap_or(("queue", ""));
        let v = writable(c, vhost, Access::Write, kind, destination)?;
        let source = selection.source.unwrap_or_default();
        if source.is_empty() {
            return Err(Reply::forbidden(
                "operation not permitted on the default exchange",
            ));
        }
        let record = v
            .read()
            .exchanges
            .get(source)
            .and_then(|e| {
                e.records
                    .iter()
                    .find(|b| selection.keeps(&json::binding(b)))
                    .cloned()
            })
            .ok_or_else(Reply::not_found)?;
        bindings::unbind(c.gateway, &v, &record)
            .await
            .map_err(refusal)?;
        Ok(Reply::no_content())
    };
    run.await.unwrap_or_else(|reply| reply)
}

pub(super) async fn bind(
    c: &Call<'_>,
    vhost: &str,
    source: &str,
    kind: &str,
    destination: &str,
) -> Reply {
    let run = async {
        let (access_kind, destination_kind) = match kind {
            "q" => ("queue", meta::DestinationKind::Queue),
            _ => ("exchange", meta::DestinationKind::Exchange),
        };
        let v = writable(c, vhost, Access::Write, access_kind, destination)?;
        if !c.caller.may(c.gateway, vhost, Access::Read, source) {
            return Err(Reply::forbidden(&format!(
                "read access to exchange '{source}' refused"
            )));
        }
        if source.is_empty() {
            return Err(Reply::forbidden(
                "operation not permitted on the default exchange",
            ));
        }
        let body = body_object(c)?;
        let routing_key = match body.get("routing_key") {
            None => String::new(),
            Some(Value::String(k)) => k.clone(),
            Some(other) => {
                return Err(Reply::bad_request(&format!(
                    "'routing_key' must be a string, not {other}"
                )))
            }
        };
        {
            let t = v.read();
            let there = match destination_kind {
                meta::DestinationKind::Queue => t.queues.contains_key(destination),
                meta::DestinationKind::Exchange => t.exchanges.contains_key(destination),
            };
            if !t.exchanges.contains_key(source) || !there {
                return Err(Reply::not_found());
            }
        }
        let binding = meta::Binding {
            vhost: vhost.to_owned(),
            source: source.to_owned(),
            destination: destination.to_owned(),
            destination_kind,
            routing_key,
            arguments: encode_arguments(&arguments(&body)?),
        };
        bindings::bind(c.gateway, &v, &binding)
            .await
            .map_err(refusal)?;
        Ok(Reply::created())
    };
    run.await.unwrap_or_else(|reply| reply)
}
