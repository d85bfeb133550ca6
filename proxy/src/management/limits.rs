//! /api/vhost-limits and /api/user-limits: list, set (PUT {"value": N})
//! and clear one limit, as RabbitMQ's API does; setting and clearing are
//! for administrators. The change goes through the registry (written to
//! the meta store, which every gateway follows, and applied here at once).

use meta::LimitScope;
use serde_json::{json, Value};

use super::api::{body_object, refusal, Call, Reply};
use crate::registry::RegistryError;

/// GET: every owner's limits, or one owner's (`[]` when it has none).
pub(super) fn list(c: &Call<'_>, scope: LimitScope, one: Option<&str>) -> Reply {
    let key = match scope {
        LimitScope::Vhost => "vhost",
        LimitScope::User => "user",
    };
    if let Some(owner) = one {
        let known = match scope {
            LimitScope::Vhost => super::api::visible_vhost(c, owner).is_some(),
            LimitScope::User => c.gateway.topology.user(owner).is_some(),
        };
        if !known {
            return Reply::not_found();
        }
    }
    let limits = &c.gateway.topology.limits;
    let listed: Vec<Value> = limits
        .owners()
        .into_iter()
        .filter(|(s, owner)| *s == scope && one.is_none_or(|o| o == owner))
        .filter(|(_, owner)| match scope {
            LimitScope::Vhost => c.caller.sees(c.gateway, owner),
            LimitScope::User => c.caller.is_administrator() || c.caller.name == *owner,
        })
        .map(|(_, owner)| json!({key: owner, "value": limits.of(scope, &owner)}))
        .collect();
    Reply::ok(Value::Array(listed))
}

/// PUT .../{owner}/{name} with {"value": N}.
pub(super) async fn put(c: &Call<'_>, scope: LimitScope, owner: &str, name: &str) -> Reply {
    let run = async {
        admin_only(c)?;
        let body = body_object(c)?;
        let value = match body.get("value") {
            None => return Err(Reply::bad_request("[{key_missing,value}]")),
            Some(value) => crate::registry::limits::value_of(value).ok_or_else(|| {
                Reply::bad_request(&format!("{name} should be a number, actually was {value}"))
            })?,
        };
        crate::registry::limits::set(c.gateway, scope, owner, name, value)
            .await
            .map_err(|e| match (&e, scope) {
                // RabbitMQ's answers for an owner that is not there.
                (RegistryError::NotFound(_), LimitScope::Vhost) => {
                    Reply::error(404, "not_found", "vhost_not_found")
                }
                (RegistryError::NotFound(_), LimitScope::User) => {
                    Reply::bad_request(&format!("no_such_user {owner}"))
                }
                _ => refusal(e),
            })?;
        tracing::info!(scope = scope.as_str(), %owner, limit = %name, value, by = %c.caller.name, "Limit set through the management API.");
        Ok(Reply::no_content())
    };
    run.await.unwrap_or_else(|reply| reply)
}

pub(super) async fn delete(c: &Call<'_>, scope: LimitScope, owner: &str, name: &str) -> Reply {
    let run = async {
        admin_only(c)?;
        crate::registry::limits::clear(c.gateway, scope, owner, name)
            .await
            .map_err(refusal)?;
        tracing::info!(scope = scope.as_str(), %owner, limit = %name, by = %c.caller.name, "Limit cleared through the management API.");
        Ok(Reply::no_content())
    };
    run.await.unwrap_or_else(|reply| reply)
}

fn admin_only(c: &Call<'_>) -> Result<(), Reply> {
    if c.caller.is_administrator() {
        Ok(())
    } else {
        Err(Reply::forbidden("limits are set by administrators"))
    }
}
