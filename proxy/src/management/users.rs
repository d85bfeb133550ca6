//! /api/users and /api/permissions: list, create or change (PUT) and
//! delete; and creating vhosts. For administrators, as RabbitMQ allows. A change is written to the meta store
//! (other gateways follow it) and applied here at once, so the user can log
//! in over AMQP right after the answer.

use serde_json::{json, Map, Value};

use super::api::{body_object, refusal, Call, Reply};

fn admin_only(c: &Call<'_>) -> Result<(), Reply> {
    if c.caller.is_administrator() {
        Ok(())
    } else {
        Err(Reply::forbidden(
            "users and permissions are for administrators",
        ))
    }
}

fn text<'a>(body: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Reply::bad_request(&format!(
            "'{key}' must be a string, not {other}"
        ))),
    }
}

fn user_json(c: &Call<'_>, u: &meta::User) -> Value {
    let tags = u.tag_list();
    let limits = c
        .gateway
        .topology
        .limits
        .of(meta::LimitScope::User, &u.name);
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": tags,
        "limits": limits,
    })
}

pub(super) async fn list_users(c: &Call<'_>, one: Option<&str>) -> Reply {
    if let Err(reply) = admin_only(c) {
        return reply;
    }
    match one {
        Some(name) => match c.gateway.store.user(name).await {
            Ok(Some(u)) => Reply::ok(user_json(c, &u)),
            Ok(None) => Reply::not_found(),
            Err(e) => Reply::error(503, "unavailable", &e.to_string()),
        },
        None => match c.gateway.store.snapshot().await {
            Ok(s) => Reply::ok(Value::Array(
                s.users.iter().map(|u| user_json(c, u)).collect(),
            )),
            Err(e) => Reply::error(503, "unavailable", &e.to_string()),
        },
    }
}

/// PUT /api/users/{name}: `password` (hashed here) or `password_hash`
/// (RabbitMQ's salted SHA-256), and `tags` (a comma-separated string or a list).
pub(super) async fn put_user(c: &Call<'_>, name: &str) -> Reply {
    let run = async {
        admin_only(c)?;
        let body = body_object(c)?;
        let existing = c
            .gateway
            .store
            .user(name)
            .await
            .map_err(|e| Reply::error(503, "unavailable", &e.to_string()))?;
        let password_hash = match (text(&body, "password")?, text(&body, "password_hash")?) {
            (Some(password), _) => meta::password::hash_password(password),
            (None, Some(hash)) if meta::password::is_valid_hash(hash) => hash.to_owned(),
            (None, Some(_)) => {
                return Err(Reply::bad_request(
                    "password_hash is not a salted SHA-256 hash in RabbitMQ's format",
                ))
            }
            (None, None) => match &existing {
                Some(u) => u.password_hash.clone(),
                None => {
                    return Err(Reply::bad_request(
                        "'password' or 'password_hash' is required",
                    ))
                }
            },
        };
        let tags = match body.get("tags") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            Some(other) => {
                return Err(Reply::bad_request(&format!(
                    "'tags' must be a string or a list, not {other}"
                )))
            }
        };
        let user = meta::User {
            name: name.to_owned(),
            password_hash,
            tags,
            // RabbitMQ's default loopback_users.
            loopback_only: name == "guest",
        };
        c.gateway
            .store
            .put_user(&user)
            .await
            .map_err(|e| Reply::error(503, "unavailable", &e.to_string()))?;
        c.gateway.topology.put_user(user);
        tracing::info!(user = %name, by = %c.caller.name, "User set through the management API.");
        Ok(if existing.is_some() {
            Reply::no_content()
        } else {
            Reply::created()
        })
    };
    run.await.unwrap_or_else(|reply| reply)
}

/// Permissions, all or those of one vhost and/or one user
/// (`/api/vhosts/{vh}/permissions`, `/api/users/{u}/permissions`,
/// `/api/permissions/{vh}/{u}`, the last one object or 404).
pub(super) async fn list_permissions(
    c: &Call<'_>,
    vhost: Option<&str>,
    user: Option<&str>,
) -> Reply {
    if let Err(reply) = admin_only(c) {
        return reply;
    }
    if vhost.is_some_and(|v| c.gateway.topology.vhost(v).is_none())
        || user.is_some_and(|u| c.gateway.topology.user(u).is_none())
    {
        return Reply::not_found();
    }
    let snapshot = match c.gateway.store.snapshot().await {
        Ok(s) => s,
        Err(e) => return Reply::error(503, "unavailable", &e.to_string()),
    };
    let mut out: Vec<Value> = snapshot
        .permissions
        .iter()
        .filter(|p| vhost.is_none_or(|v| p.vhost == v) && user.is_none_or(|u| p.user == u))
        .map(|p| {
            json!({"user": p.user, "vhost": p.vhost, "configure": p.configure,
                   "write": p.write, "read": p.read})
        })
        .collect();
    match (vhost, user) {
        (Some(_), Some(_)) => out.pop().map(Reply::ok).unwrap_or_else(Reply::not_found),
        _ => Reply::ok(Value::Array(out)),
    }
}

/// PUT /api/permissions/{vhost}/{user}: `configure`, `write`, `read`
/// patterns (an empty one grants nothing, as in RabbitMQ).
pub(super) async fn put_permission(c: &Call<'_>, vhost: &str, user: &str) -> Reply {
    let run = async {
        admin_only(c)?;
        let body = body_object(c)?;
        if c.gateway.topology.vhost(vhost).is_none() || c.gateway.topology.user(user).is_none() {
            return Err(Reply::not_found());
        }
        let pattern = |key: &str| -> Result<String, Reply> {
            let pattern = text(&body, key)?.unwrap_or_default().to_owned();
            regex::Regex::new(&pattern)
                .map_err(|e| Reply::bad_request(&format!("'{key}' is not a valid pattern: {e}")))?;
            Ok(pattern)
        };
        let (configure, write, read) = (pattern("configure")?, pattern("write")?, pattern("read")?);
        let permission = meta::Permission {
            user: user.to_owned(),
            vhost: vhost.to_owned(),
            configure,
            write,
            read,
        };
        c.gateway
            .store
            .put_permission(&permission)
            .await
            .map_err(|e| Reply::error(503, "unavailable", &e.to_string()))?;
        c.gateway.topology.put_permission(&permission);
        Ok(Reply::created())
    };
    run.await.unwrap_or_else(|reply| reply)
}

/// DELETE /api/users/{name}: the user and its permissions. (Its open AMQP
/// connections stay until they close; RabbitMQ closes them.)
pub(super) async fn delete_user(c: &Call<'_>, name: &str) -> Reply {
    let run = async {
        admin_only(c)?;
        if name == c.caller.name {
            return Err(Reply::bad_request("a user cannot delete itself"));
        }
        let deleted = c
            .gateway
            .store
            .delete_user(name)
            .await
            .map_err(|e| Reply::error(503, "unavailable", &e.to_string()))?;
        if !deleted {
            return Err(Reply::not_found());
        }
        for vhost in c.gateway.topology.vhosts() {
            c.gateway.topology.remove_permission(name, &vhost.name);
        }
        c.gateway.topology.remove_user(name);
        tracing::info!(user = %name, by = %c.caller.name, "User deleted through the management API.");
        Ok(Reply::no_content())
    };
    run.await.unwrap_or_else(|reply| reply)
}

/// DELETE /api/permissions/{vhost}/{user}.
pub(super) async fn delete_permission(c: &Call<'_>, vhost: &str, user: &str) -> Reply {
    let run = async {
        admin_only(c)?;
        let deleted = c
            .gateway
            .store
            .delete_permission(user, vhost)
            .await
            .map_err(|e| Reply::error(503, "unavailable", &e.to_string()))?;
        if !deleted {
            return Err(Reply::not_found());
        }
        c.gateway.topology.remove_permission(user, vhost);
        Ok(Reply::no_content())
    };
    run.await.unwrap_or_else(|reply| reply)
}

/// PUT /api/vhosts/{name}: creates the vhost (204 if it is there) and, as
/// RabbitMQ's API does, grants its creator full permissions on it.
pub(super) async fn put_vhost(c: &Call<'_>, name: &str) -> Reply {
    let run = async {
        admin_only(c)?;
        if name.is_empty() {
            return Err(Reply::bad_request("a vhost needs a name"));
        }
        if c.gateway.topology.vhost(name).is_some() {
            return Ok(Reply::no_content());
        }
        let unavailable = |e: meta::MetaError| Reply::error(503, "unavailable", &e.to_string());
        let vhost = meta::Vhost {
            name: name.to_owned(),
            namespace: crate::mapping::names::vhost_namespace(name),
        };
        c.gateway
            .store
            .put_vhost(&vhost)
            .await
            .map_err(unavailable)?;
        c.gateway.topology.add_vhost(&vhost.name, &vhost.namespace);
        let permission = meta::Permission {
            user: c.caller.name.clone(),
            vhost: name.to_owned(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        };
        c.gateway
            .store
            .put_permission(&permission)
            .await
            .map_err(unavailable)?;
        c.gateway.topology.put_permission(&permission);
        tracing::info!(vhost = %name, by = %c.caller.name, "Vhost created through the management API.");
        Ok(Reply::created())
    };
    run.await.unwrap_or_else(|reply| reply)
}

pub(super) async fn delete_vhost(c: &Call<'_>, name: &str) -> Reply {
    if let Err(reply) = admin_only(c) {
        return reply;
    }
    match crate::registry::vhosts::delete(c.gateway, name).await {
        Ok(()) => {
            tracing::info!(vhost = %name, by = %c.caller.name, "Vhost deleted through the management API.");
            Reply::no_content()
        }
        Err(crate::registry::RegistryError::NotFound(_)) => Reply::not_found(),
        Err(e) => refusal(e),
    }
}
