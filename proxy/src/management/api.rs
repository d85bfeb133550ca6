//! Routing a request to its answer. Paths, methods, status codes and error
//! bodies follow RabbitMQ 3.10's management API: 401 without valid
//! credentials, 403 for a call the user's tags or permissions do not allow,
//! 404 for an unknown object, 400 with a reason for a bad body, 413 past
//! `MAX_BODY`. Topology changes go through the registry, as AMQP's do.
//! (Over 500 lines for the route table, one match that lists every path.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::auth::{self, Caller, Refused};
use super::bindings::{kind_of, Selection};
use super::json;
use crate::definitions::json_to_table;
use crate::registry::RegistryError;
use crate::topology::{Access, Vhost};
use crate::Gateway;
use meta::LimitScope;

/// The largest request body read (definitions uploads included).
const MAX_BODY: usize = 8 << 20;

/// A status and a JSON body.
pub struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    pub(super) fn ok(body: Value) -> Reply {
        Reply { status: 200, body }
    }

    pub(super) fn no_content() -> Reply {
        Reply {
            status: 204,
            body: Value::Null,
        }
    }

    pub(super) fn created() -> Reply {
        Reply {
            status: 201,
            body: Value::Null,
        }
    }

    /// RabbitMQ's error shape: `{"error": ..., "reason": ...}`.
    pub fn error(status: u16, error: &str, reason: &str) -> Reply {
        Reply {
            status,
            body: json!({"error": error, "reason": reason}),
        }
    }

    /// Any status with this body.
    pub(super) fn error_status(status: u16, body: Value) -> Reply {
        Reply { status, body }
    }

    pub(super) fn not_found() -> Reply {
        Reply::error(404, "Object Not Found", "Not Found")
    }

    pub(super) fn forbidden(reason: &str) -> Reply {
        Reply::error(403, "access_refused", reason)
    }

    pub(super) fn bad_request(reason: &str) -> Reply {
        Reply::error(400, "bad_request", reason)
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut builder = Response::builder().status(status);
        if self.status == 401 {
            builder = builder.header("www-authenticate", "Basic realm=\"RabbitMQ Management\"");
        }
        let body = if self.body.is_null() {
            Bytes::new()
        } else {
            builder = builder.header("content-type", "application/json");
            Bytes::from(self.body.to_string())
        };
        builder
            .body(Full::new(body))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }
}

/// A registry error as the API says it.
pub(super) fn refusal(error: RegistryError) -> Reply {
    match error {
        RegistryError::NotFound(r) => Reply::error(404, "Object Not Found", &r),
        RegistryError::PreconditionFailed(r) => Reply::error(400, "bad_request", &r),
        RegistryError::ResourceLocked(r) => Reply::error(400, "bad_request", &r),
        RegistryError::AccessRefused(r) => Reply::forbidden(&r),
        RegistryError::NotImplemented(r) | RegistryError::CommandInvalid(r) => {
            Reply::bad_request(&r)
        }
        // 503 tells the caller to try again; a refusal by RocketMQ will
        // not change by retrying.
        failure if failure.retry_may_help() => {
            Reply::error(503, "unavailable", &failure.to_string())
        }
        failure => Reply::error(500, "internal_error", &failure.to_string()),
    }
}

/// One request: the caller, the decoded path after `/api/`, the query, the body.
pub(super) struct Call<'a> {
    pub(super) gateway: &'a Arc<Gateway>,
    pub(super) caller: Caller,
    pub(super) method: Method,
    pub(super) path: Vec<String>,
    pub(super) query: HashMap<String, String>,
    pub(super) body: Bytes,
    /// The `X-Reason` header (a connection's close reason).
    pub(super) reason: Option<String>,
    /// The caller's Authorization header, for asking other gateways.
    pub(super) authorization: Option<String>,
    /// The body's Content-Type (a multipart definitions upload).
    pub(super) content_type: Option<String>,
}

pub async fn answer(
    gateway: &Arc<Gateway>,
    peer: SocketAddr,
    request: Request<hyper::body::Incoming>,
) -> Reply {
    let (parts, body) = request.into_parts();
    let path: Vec<String> = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    if path.first().map(String::as_str) != Some("api") {
        return Reply::not_found();
    }
    let header = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let caller = match auth::authenticate(gateway, header, peer) {
        Ok(caller) => caller,
        Err(Refused::Login) => return Reply::error(401, "not_authorized", "Login failed"),
        Err(Refused::NotManagementUser) => {
            return Reply::error(401, "not_authorised", "Not management user")
        }
    };
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Reply::error(
                413,
                "request_too_large",
                &format!("bodies are limited to {MAX_BODY} bytes"),
            )
        }
    };
    let query = parts
        .uri
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .map(|(k, v)| (percent_decode(k), percent_decode(v)))
                .collect()
        })
        .unwrap_or_default();
    let reason = parts
        .headers
        .get("x-reason")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let content_type = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let call = Call {
        reason,
        content_type,
        authorization: header.map(str::to_owned),
        gateway,
        caller,
        method: parts.method,
        path: path[1..].to_vec(),
        query,
        body,
    };
    route(&call).await
}

async fn route(c: &Call<'_>) -> Reply {
    let p: Vec<&str> = c.path.iter().map(String::as_str).collect();
    match (&c.method, p.as_slice()) {
        (&Method::GET, ["overview"]) => overview(c).await,
        (&Method::GET, ["whoami"]) => {
            Reply::ok(json!({"name": c.caller.name, "tags": c.caller.tags}))
        }
        (&Method::GET, ["vhosts"]) => vhosts(c),
        (&Method::GET, ["vhosts", name]) => match visible_vhost(c, name) {
            Some(v) => Reply::ok(json!({"name": v.name, "tracing": false})),
            None => Reply::not_found(),
        },
        (&Method::PUT, ["vhosts", name]) => super::users::put_vhost(c, name).await,
        (&Method::DELETE, ["vhosts", name]) => super::users::delete_vhost(c, name).await,
        (&Method::GET, ["queues"]) => super::queues::list_queues(c, None).await,
        (&Method::GET, ["queues", vhost]) => super::queues::list_queues(c, Some(vhost)).await,
        (&Method::GET, ["queues", vhost, name]) => super::queues::get_queue(c, vhost, name).await,
        (&Method::PUT, ["queues", vhost, name]) => super::queues::put_queue(c, vhost, name).await,
        (&Method::DELETE, ["queues", vhost, name]) => {
            super::queues::delete_queue(c, vhost, name).await
        }
        (&Method::DELETE, ["queues", vhost, name, "contents"]) => {
            super::queues::purge_queue(c, vhost, name).await
        }
        (&Method::GET, ["exchanges"]) => super::exchanges::list_exchanges(c, None),
        (&Method::GET, ["exchanges", vhost]) => super::exchanges::list_exchanges(c, Some(vhost)),
        (&Method::GET, ["exchanges", vhost, name]) => {
            super::exchanges::get_exchange(c, vhost, name)
        }
        (&Method::PUT, ["exchanges", vhost, name]) => {
            super::exchanges::put_exchange(c, vhost, name).await
        }
        (&Method::DELETE, ["exchanges", vhost, name]) => {
            super::exchanges::delete_exchange(c, vhost, name).await
        }
        (&Method::GET, ["bindings"]) => super::bindings::list_bindings(c, None),
        (&Method::GET, ["bindings", vhost]) => super::bindings::list_bindings(c, Some(vhost)),
        (&Method::GET, ["bindings", vhost, "e", source, kind @ ("q" | "e"), destination]) => {
            let selection = Selection {
                source: Some(source),
                destination: Some((kind_of(kind), destination)),
                properties_key: None,
            };
            super::bindings::list_selected(c, vhost, selection)
        }
        (method, ["bindings", vhost, "e", source, kind @ ("q" | "e"), destination, key])
            if *method == Method::GET || *method == Method::DELETE =>
        {
            let selection = Selection {
                source: Some(source),
                destination: Some((kind_of(kind), destination)),
                properties_key: Some(key),
            };
            if *method == Method::GET {
                super::bindings::list_selected(c, vhost, selection)
            } else {
                super::bindings::unbind(c, vhost, selection).await
            }
        }
        (
            &Method::GET,
            ["exchanges", vhost, name, "bindings", side @ ("source" | "destination")],
        ) => {
            let selection = match *side {
                "source" => Selection {
                    source: Some(name),
                    destination: None,
                    properties_key: None,
                },
                _ => Selection {
                    source: None,
                    destination: Some(("exchange", name)),
                    properties_key: None,
                },
            };
            super::bindings::list_selected(c, vhost, selection)
        }
        (&Method::GET, ["queues", vhost, name, "bindings"]) => {
            let selection = Selection {
                source: None,
                destination: Some(("queue", name)),
                properties_key: None,
            };
            super::bindings::list_selected(c, vhost, selection)
        }
        (&Method::POST, ["bindings", vhost, "e", source, kind @ ("q" | "e"), destination]) => {
            super::bindings::bind(c, vhost, source, kind, destination).await
        }
        (&Method::GET, ["users"]) => super::users::list_users(c, None).await,
        (&Method::GET, ["users", name]) => super::users::list_users(c, Some(name)).await,
        (&Method::PUT, ["users", name]) => super::users::put_user(c, name).await,
        (&Method::DELETE, ["users", name]) => super::users::delete_user(c, name).await,
        (&Method::GET, ["permissions"]) => super::users::list_permissions(c, None, None).await,
        (&Method::GET, ["permissions", vhost, user]) => {
            super::users::list_permissions(c, Some(vhost), Some(user)).await
        }
        (&Method::GET, ["vhosts", vhost, "permissions"]) => {
            super::users::list_permissions(c, Some(vhost), None).await
        }
        (&Method::GET, ["users", user, "permissions"]) => {
            super::users::list_permissions(c, None, Some(user)).await
        }
        (&Method::DELETE, ["permissions", vhost, user]) => {
            super::users::delete_permission(c, vhost, user).await
        }
        (&Method::PUT, ["permissions", vhost, user]) => {
            super::users::put_permission(c, vhost, user).await
        }
        (&Method::GET, ["connections"]) => super::connections::list_connections(c, None).await,
        (&Method::GET, ["vhosts", vhost, "connections"]) => {
            super::connections::list_connections(c, Some(vhost)).await
        }
        (&Method::GET, ["connections", name]) => super::connections::get_connection(c, name).await,
        (&Method::DELETE, ["connections", name]) => {
            super::connections::close_connection(c, name).await
        }
        (&Method::GET, ["connections", name, "channels"]) => {
            super::connections::list_channels(c, None, Some(name)).await
        }
        (&Method::GET, ["channels"]) => super::connections::list_channels(c, None, None).await,
        (&Method::GET, ["vhosts", vhost, "channels"]) => {
            super::connections::list_channels(c, Some(vhost), None).await
        }
        (&Method::GET, ["consumers"]) => super::connections::list_consumers(c, None).await,
        (&Method::GET, ["consumers", vhost]) => {
            super::connections::list_consumers(c, Some(vhost)).await
        }
        (&Method::GET, ["nodes"]) => super::connections::list_nodes(c, None).await,
        (&Method::GET, ["nodes", name]) => super::connections::list_nodes(c, Some(name)).await,
        (&Method::GET, ["definitions"]) => super::definitions::export(c, None).await,
        (&Method::POST, ["definitions"]) => super::definitions::import(c, None).await,
        (&Method::GET, ["definitions", vhost]) => super::definitions::export(c, Some(vhost)).await,
        (&Method::POST, ["definitions", vhost]) => super::definitions::import(c, Some(vhost)).await,
        (&Method::POST, ["exchanges", vhost, name, "publish"]) => {
            super::messages::publish(c, vhost, name).await
        }
        (&Method::POST, ["queues", vhost, name, "get"]) => {
            super::messages::get(c, vhost, name).await
        }
        (&Method::GET, ["health", "checks", check @ ..]) => super::health::check(c, check),
        (&Method::GET, ["vhost-limits"]) => super::limits::list(c, LimitScope::Vhost, None),
        (&Method::GET, ["vhost-limits", vhost]) => {
            super::limits::list(c, LimitScope::Vhost, Some(vhost))
        }
        (&Method::PUT, ["vhost-limits", vhost, name]) => {
            super::limits::put(c, LimitScope::Vhost, vhost, name).await
        }
        (&Method::DELETE, ["vhost-limits", vhost, name]) => {
            super::limits::delete(c, LimitScope::Vhost, vhost, name).await
        }
        (&Method::GET, ["user-limits"]) => super::limits::list(c, LimitScope::User, None),
        (&Method::GET, ["user-limits", user]) => {
            super::limits::list(c, LimitScope::User, Some(user))
        }
        (&Method::PUT, ["user-limits", user, name]) => {
            super::limits::put(c, LimitScope::User, user, name).await
        }
        (&Method::DELETE, ["user-limits", user, name]) => {
            super::limits::delete(c, LimitScope::User, user, name).await
        }
        // None can exist: the gateway takes queue arguments, not policies.
        (
            &Method::GET,
            ["policies" | "operator-policies" | "parameters" | "global-parameters", ..],
        ) => Reply::ok(json!([])),
        (
            &Method::PUT,
            ["policies" | "operator-policies" | "parameters" | "global-parameters", ..],
        ) => Reply::bad_request(
            "policies and runtime parameters are not supported by the gateway: \
                 give queues their x-arguments at declaration (docs/mapping.md)",
        ),
        _ => Reply::not_found(),
    }
}

pub(super) fn visible_vhost(c: &Call<'_>, name: &str) -> Option<std::sync::Arc<Vhost>> {
    c.gateway
        .topology
        .vhost(name)
        .filter(|_| c.caller.sees(c.gateway, name))
}

/// The vhosts a listing covers: one (404 if unknown or not visible) or all visible.
pub(super) fn vhosts_of(
    c: &Call<'_>,
    one: Option<&str>,
) -> Result<Vec<std::sync::Arc<Vhost>>, Reply> {
    match one {
        Some(name) => visible_vhost(c, name)
            .map(|v| vec![v])
            .ok_or_else(Reply::not_found),
        None => {
            let mut all: Vec<_> = c
                .gateway
                .topology
                .vhosts()
                .into_iter()
                .filter(|v| c.caller.sees(c.gateway, &v.name))
                .collect();
            all.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(all)
        }
    }
}

fn vhosts(c: &Call<'_>) -> Reply {
    match vhosts_of(c, None) {
        Ok(all) => Reply::ok(Value::Array(
            all.iter()
                .map(|v| json!({"name": v.name, "tracing": false}))
                .collect(),
        )),
        Err(reply) => reply,
    }
}

async fn overview(c: &Call<'_>) -> Reply {
    let mut exchanges = 0usize;
    let mut states = Vec::new();
    for vhost in vhosts_of(c, None).unwrap_or_default() {
        exchanges += vhost.read().exchanges.len();
        states.extend(vhost.read().queues.values().cloned().collect::<Vec<_>>());
    }
    let queues = states.len();
    let counts = crate::registry::queues::counts_of(c.gateway, &states).await;
    let ready: u64 = counts.iter().map(|n| u64::from(n.ready)).sum();
    let unacked: u64 = counts.iter().map(|n| u64::from(n.unacked)).sum();
    let consumers: u64 = counts.iter().map(|n| u64::from(n.consumers)).sum();
    let open = c.gateway.connections.totals();
    let amqp = c
        .gateway
        .amqp_address
        .get()
        .copied()
        .unwrap_or(c.gateway.config.listen);
    Reply::ok(json!({
        "management_version": "3.10.8",
        "rabbitmq_version": "3.10.8",
        "product_name": "amqp-gateway",
        "product_version": env!("CARGO_PKG_VERSION"),
        "cluster_name": "amqp-gateway",
        "node": json::node(c.gateway),
        "queue_totals": {"messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked},
        // Connections and channels: this gateway's (docs/mapping.md).
        "object_totals": {"queues": queues, "exchanges": exchanges, "consumers": consumers, "connections": open.connections, "channels": open.channels},
        "message_stats": c.gateway.rates.message_stats(),
        "listeners": [{"node": json::node(c.gateway), "protocol": "amqp", "ip_address": amqp.ip().to_string(), "port": amqp.port()}],
    }))
}

/// The JSON object of a PUT/POST body (an empty body is `{}`).
pub(super) fn body_object(c: &Call<'_>) -> Result<Map<String, Value>, Reply> {
    if c.body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&c.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Reply::bad_request("the body must be a JSON object")),
        Err(e) => Err(Reply::bad_request(&format!("malformed JSON: {e}"))),
    }
}

pub(super) fn flag(body: &Map<String, Value>, key: &str, default: bool) -> Result<bool, Reply> {
    match body.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
        Some(other) => Err(Reply::bad_request(&format!(
            "'{key}' must be a boolean, not {other}"
        ))),
    }
}

pub(super) fn arguments(
    body: &Map<String, Value>,
) -> Result<amq_protocol::types::FieldTable, Reply> {
    match body.get("arguments") {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(Value::Object(map)) => Ok(json_to_table(map)),
        Some(other) => Err(Reply::bad_request(&format!(
            "'arguments' must be an object, not {other}"
        ))),
    }
}

/// The vhost of a write, when the caller may configure `name` in it.
pub(super) fn writable(
    c: &Call<'_>,
    vhost: &str,
    access: Access,
    kind: &str,
    name: &str,
) -> Result<std::sync::Arc<Vhost>, Reply> {
    let v = c
        .gateway
        .topology
        .vhost(vhost)
        .ok_or_else(Reply::not_found)?;
    if !c.caller.may(c.gateway, vhost, access, name) {
        return Err(Reply::forbidden(&format!(
            "access to {kind} '{name}' in vhost '{vhost}' refused for user '{}'",
            c.caller.name
        )));
    }
    Ok(v)
}

/// `%2F` and friends in a path segment or query value (`+` stays as is in
/// paths, as RabbitMQ's router reads them).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(high << 4 | low);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("%2F"), "/");
        assert_eq!(percent_decode("a%20b%2"), "a b%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(
            percent_decode("%é"),
            "%é",
            "no panic inside a multibyte char"
        );
    }
}
