//! /api/exchanges: list, show, declare (PUT) and delete exchanges, through
//! the registry as AMQP's exchange methods.

use serde_json::{json, Value};

use super::api::{
    arguments, body_object, flag, refusal, vhosts_of, visible_vhost, writable, Call, Reply,
};
use super::json;
use super::listing::columns;
use crate::registry::exchanges::{self, ExchangeSpec};
use crate::topology::Access;

pub(super) fn list_exchanges(c: &Call<'_>, one: Option<&str>) -> Reply {
    let vhosts = match vhosts_of(c, one) {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let mut out = Vec::new();
    for vhost in vhosts {
        let t = vhost.read();
        let mut names: Vec<&String> = t.exchanges.keys().collect();
        names.sort();
        // The default exchange is listed first, as RabbitMQ lists it.
        out.push(
            json!({"name": "", "vhost": vhost.name, "type": "direct", "durable": true,
                        "auto_delete": false, "internal": false, "arguments": {}}),
        );
        out.extend(names.into_iter().map(|n| json::exchange(&t.exchanges[n])));
    }
    Reply::ok(columns(c, out))
}

pub(super) fn get_exchange(c: &Call<'_>, vhost: &str, name: &str) -> Reply {
    let Some(v) = visible_vhost(c, vhost) else {
        return Reply::not_found();
    };
    let t = v.read();
    match t.exchanges.get(name) {
        Some(e) => Reply::ok(json::exchange(e)),
        None => Reply::not_found(),
    }
}

pub(super) async fn put_exchange(c: &Call<'_>, vhost: &str, name: &str) -> Reply {
    let run = async {
        let v = writable(c, vhost, Access::Configure, "exchange", name)?;
        let body = body_object(c)?;
        let kind = match body.get("type") {
            Some(Value::String(t)) => t.clone(),
            _ => {
                return Err(Reply::bad_request(
                    "'type' is required (direct, fanout, topic, headers)",
                ))
            }
        };
        let spec = ExchangeSpec {
            name: name.to_owned(),
            kind,
            durable: flag(&body, "durable", true)?,
            auto_delete: flag(&body, "auto_delete", false)?,
            internal: flag(&body, "internal", false)?,
            arguments: arguments(&body)?,
        };
        let existed = v.read().exchanges.contains_key(name);
        exchanges::declare(c.gateway, &v, &spec)
            .await
            .map_err(refusal)?;
        Ok(if existed {
            Reply::no_content()
        } else {
            Reply::created()
        })
    };
    run.await.unwrap_or_else(|reply| reply)
}

pub(super) async fn delete_exchange(c: &Call<'_>, vhost: &str, name: &str) -> Reply {
    let run = async {
        let v = writable(c, vhost, Access::Configure, "exchange", name)?;
        if name.is_empty() || name.starts_with("amq.") {
            return Err(Reply::forbidden(&format!(
                "operation not permitted on exchange '{name}'"
            )));
        }
        let if_unused = c.query.contains_key("if-unused");
        match exchanges::delete(c.gateway, &v, name, if_unused)
            .await
            .map_err(refusal)?
        {
            true => Ok(Reply::no_content()),
            false => Err(Reply::not_found()),
        }
    };
    run.await.unwrap_or_else(|reply| reply)
}
