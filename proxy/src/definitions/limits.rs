//! Limits in definitions, where RabbitMQ puts them: a user's in its
//! "limits" object, a vhost's as a runtime parameter of component
//! "vhost-limits" (name "limits") whose value maps limit names to numbers.
//! A vhost's parameter replaces its limits; a user's "limits" adds to
//! what the user has (as RabbitMQ imports them).
//! Imported after the topology (so a `max-queues` lower than the imported
//! queues does not cut the import short), exported from the store.

use meta::{LimitScope, Snapshot};
use serde_json::{json, Map, Value};

use super::{Definitions, DefinitionsError, Report};

pub(super) const COMPONENT: &str = "vhost-limits";

/// Whether a parameter is a vhost's limits (imported here, not skipped).
pub(super) fn is_vhost_limits(parameter: &Value) -> bool {
    parameter.get("component").and_then(Value::as_str) == Some(COMPONENT)
}

pub(super) async fn import(
    store: &meta::Store,
    defs: &Definitions,
    report: &mut Report,
) -> Result<(), DefinitionsError> {
    for u in &defs.users {
        if !u.limits.is_empty() {
            let exists = store.user(&u.name).await?.is_some();
            apply(store, LimitScope::User, &u.name, exists, &u.limits, report).await?;
        }
    }
    for p in defs.parameters.iter().filter(|p| is_vhost_limits(p)) {
        let vhost = p.get("vhost").and_then(Value::as_str).unwrap_or("/");
        let exists = store.vhost(vhost).await?.is_some();
        match p.get("value") {
            Some(Value::Object(limits)) => {
                // The parameter is the vhost's whole set of limits.
                if exists {
                    for name in store.limits_of(LimitScope::Vhost, vhost).await?.keys() {
                        if !limits.contains_key(name) {
                            store.clear_limit(LimitScope::Vhost, vhost, name).await?;
                            report
                                .created
                                .push(format!("limit {name} of vhost '{vhost}' cleared"));
                        }
                    }
                }
                apply(store, LimitScope::Vhost, vhost, exists, limits, report).await?
            }
            _ => report.skipped.push((
                format!("limits of vhost '{vhost}'"),
                "the parameter's value is not an object of limits".into(),
            )),
        }
    }
    Ok(())
}

async fn apply(
    store: &meta::Store,
    scope: LimitScope,
    owner: &str,
    exists: bool,
    limits: &Map<String, Value>,
    report: &mut Report,
) -> Result<(), DefinitionsError> {
    for (name, value) in limits {
        let what = format!("limit {name} of {} '{owner}'", scope.as_str());
        if !exists {
            report
                .skipped
                .push((what, format!("the {} is not there", scope.as_str())));
            continue;
        }
        if !scope.names().contains(&name.as_str()) {
            report.skipped.push((
                what,
                format!("unknown limit (known: {})", scope.names().join(", ")),
            ));
            continue;
        }
        let Some(value) = crate::registry::limits::value_of(value) else {
            report
                .skipped
                .push((what, format!("not an integer: {value}")));
            continue;
        };
        if store.limits_of(scope, owner).await?.get(name) == Some(&value) {
            report.existing.push(what);
            continue;
        }
        store.set_limit(scope, owner, name, value).await?;
        report.created.push(what);
    }
    Ok(())
}

/// Puts the store's limits where RabbitMQ's export has them.
pub(super) fn export(snapshot: &Snapshot, defs: &mut Definitions) {
    for limit in &snapshot.limits {
        match limit.scope {
            LimitScope::User => {
                if let Some(user) = defs.users.iter_mut().find(|u| u.name == limit.owner) {
                    user.limits.insert(limit.name.clone(), json!(limit.value));
                }
            }
            LimitScope::Vhost => {
                let existing = defs.parameters.iter_mut().find(|p| {
                    is_vhost_limits(p)
                        && p.get("vhost").and_then(Value::as_str) == Some(limit.owner.as_str())
                });
                match existing {
                    Some(p) => {
                        if let Some(Value::Object(value)) = p.get_mut("value") {
                            value.insert(limit.name.clone(), json!(limit.value));
                        }
                    }
                    None => defs.parameters.push(json!({
                        "value": {limit.name.clone(): limit.value},
                        "vhost": limit.owner,
                        "component": COMPONENT,
                        "name": "limits",
                    })),
                }
            }
        }
    }
}
