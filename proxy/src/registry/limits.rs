//! RabbitMQ's vhost and user limits: the image every gateway follows, the
//! changes (the management API and definitions import make them here), and
//! the checks at connection.open, channel.open and queue.declare, with
//! RabbitMQ's codes and texts.
//!
//! Connections and channels count over every gateway: this one's from its
//! roster, the others' as they announced them with their last heartbeat
//! (at most about a second old; `Usage`). As with RabbitMQ's cluster-wide
//! counters, opens at several gateways within that second may pass a limit
//! by a few. Queues count in the vhost's image, which every gateway shares.
//! A negative limit is no limit; 0 refuses every new one.

use std::collections::HashMap;
use std::sync::RwLock;

use meta::{Limit, LimitScope, Limits};
use serde::{Deserialize, Serialize};

use super::RegistryError;
use crate::connection::roster::Roster;
use crate::Gateway;

/// Every vhost's and user's limits, as the store holds them.
#[derive(Debug, Default)]
pub struct LimitsImage {
    by_owner: RwLock<HashMap<(LimitScope, String), Limits>>,
}

impl LimitsImage {
    pub fn from_snapshot(limits: &[Limit]) -> LimitsImage {
        let image = LimitsImage::default();
        {
            let mut map = image.write();
            for l in limits {
                map.entry((l.scope, l.owner.clone()))
                    .or_default()
                    .insert(l.name.clone(), l.value);
            }
        }
        image
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<(LimitScope, String), Limits>> {
        self.by_owner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<(LimitScope, String), Limits>> {
        self.by_owner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces one owner's limits (none: forgotten).
    pub fn set(&self, scope: LimitScope, owner: &str, limits: Limits) {
        let mut map = self.write();
        if limits.is_empty() {
            map.remove(&(scope, owner.to_owned()));
        } else {
            map.insert((scope, owner.to_owned()), limits);
        }
    }

    /// The limit in force: None when unset or negative (no limit).
    pub fn get(&self, scope: LimitScope, owner: &str, name: &str) -> Option<u64> {
        let value = *self.read().get(&(scope, owner.to_owned()))?.get(name)?;
        u64::try_from(value).ok()
    }

    pub fn of(&self, scope: LimitScope, owner: &str) -> Limits {
        self.read()
            .get(&(scope, owner.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Owners with limits, sorted.
    pub fn owners(&self) -> Vec<(LimitScope, String)> {
        let mut owners: Vec<_> = self.read().keys().cloned().collect();
        owners.sort();
        owners
    }
}

/// Open connections and channels per vhost and user.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default, rename = "vc", skip_serializing_if = "HashMap::is_empty")]
    pub vhost_connections: HashMap<String, u64>,
    #[serde(default, rename = "uc", skip_serializing_if = "HashMap::is_empty")]
    pub user_connections: HashMap<String, u64>,
    #[serde(default, rename = "uch", skip_serializing_if = "HashMap::is_empty")]
    pub user_channels: HashMap<String, u64>,
}

impl Usage {
    /// This gateway's open connections (those past connection.open), with
    /// the channels they last reported; `except` left out.
    pub fn of_roster(roster: &Roster, except: Option<u64>) -> Usage {
        let mut usage = Usage::default();
        for entry in roster.snapshot() {
            if Some(entry.id) == except {
                continue;
            }
            let Some(opened) = entry.opened.get() else {
                continue;
            };
            *usage
                .vhost_connections
                .entry(opened.vhost.clone())
                .or_default() += 1;
            *usage
                .user_connections
                .entry(opened.user.clone())
                .or_default() += 1;
            *usage.user_channels.entry(opened.user.clone()).or_default() +=
                u64::from(entry.channels.load(std::sync::atomic::Ordering::Relaxed));
        }
        usage
    }

    pub fn add(&mut self, other: &Usage) {
        for (mine, theirs) in [
            (&mut self.vhost_connections, &other.vhost_connections),
            (&mut self.user_connections, &other.user_connections),
            (&mut self.user_channels, &other.user_channels),
        ] {
            for (k, v) in theirs {
                *mine.entry(k.clone()).or_default() += v;
            }
        }
    }

    /// Everywhere: this gateway's roster (but `except`) and the others'
    /// announcements.
    fn everywhere(gateway: &Gateway, except: Option<u64>) -> Usage {
        let mut usage = Usage::of_roster(&gateway.connections, except);
        usage.add(
            &gateway
                .usage_elsewhere
                .read()
                .unwrap_or_else(|p| p.into_inner()),
        );
        usage
    }
}

/// Why connection.open is refused (530), if it is: the vhost's or the
/// user's connection limit is reached.
pub fn connection_refused(gateway: &Gateway, vhost: &str, user: &str) -> Option<String> {
    let limits = &gateway.topology.limits;
    let vhost_limit = limits.get(LimitScope::Vhost, vhost, "max-connections");
    let user_limit = limits.get(LimitScope::User, user, "max-connections");
    if vhost_limit.is_none() && user_limit.is_none() {
        return None;
    }
    let usage = Usage::everywhere(gateway, None);
    if let Some(limit) = vhost_limit {
        if usage.vhost_connections.get(vhost).copied().unwrap_or(0) >= limit {
            return Some(format!(
                "access to vhost '{vhost}' refused for user '{user}': connection limit ({limit}) is reached"
            ));
        }
    }
    if let Some(limit) = user_limit {
        if usage.user_connections.get(user).copied().unwrap_or(0) >= limit {
            return Some(format!(
                "connection refused for user '{user}': user connection limit ({limit}) is reached"
            ));
        }
    }
    None
}

/// Why channel.open is refused, if it is: the user's channels, on every
/// connection, would pass its limit. `connection` is the opening
/// connection's roster id and `open_here` its channels now (exact, where
/// the roster's count may be a turn old).
pub fn channel_refused(
    gateway: &Gateway,
    user: &str,
    connection: u64,
    open_here: usize,
) -> Option<String> {
    let limit = gateway
        .topology
        .limits
        .get(LimitScope::User, user, "max-channels")?;
    let usage = Usage::everywhere(gateway, Some(connection));
    let open = usage.user_channels.get(user).copied().unwrap_or(0) + open_here as u64;
    (open >= limit).then(|| {
        format!(
            "number of channels opened for user '{user}' has reached the maximum allowed user limit of ({limit})"
        )
    })
}

/// Refuses a new queue (406) when the vhost holds as many as its limit.
pub fn check_queue_limit(
    gateway: &Gateway,
    vhost: &crate::topology::Vhost,
    queue: &str,
) -> Result<(), RegistryError> {
    let Some(limit) = gateway
        .topology
        .limits
        .get(LimitScope::Vhost, &vhost.name, "max-queues")
    else {
        return Ok(());
    };
    if vhost.read().queues.len() as u64 >= limit {
        return Err(RegistryError::PreconditionFailed(format!(
            "cannot declare queue '{queue}': queue limit in vhost '{}' ({limit}) is reached",
            vhost.name
        )));
    }
    Ok(())
}

/// A limit's value as RabbitMQ takes it: a JSON integer (not a string or
/// a float, as RabbitMQ refuses them).
pub fn value_of(value: &serde_json::Value) -> Option<i64> {
    value.as_i64()
}

/// Sets one limit of a vhost or user that exists; an unknown limit name is
/// refused with the names there are.
pub async fn set(
    gateway: &Gateway,
    scope: LimitScope,
    owner: &str,
    name: &str,
    value: i64,
) -> Result<(), RegistryError> {
    check(gateway, scope, owner, name)?;
    gateway
        .store
        .set_limit(scope, owner, name, value)
        .await
        .map_err(RegistryError::meta("set limit"))?;
    refresh(gateway, scope, owner).await
}

/// Clears one limit; whether it was set.
pub async fn clear(
    gateway: &Gateway,
    scope: LimitScope,
    owner: &str,
    name: &str,
) -> Result<bool, RegistryError> {
    check(gateway, scope, owner, name)?;
    let cleared = gateway
        .store
        .clear_limit(scope, owner, name)
        .await
        .map_err(RegistryError::meta("clear limit"))?;
    refresh(gateway, scope, owner).await?;
    Ok(cleared)
}

/// This gateway's image of the owner's limits, as stored now (the others
/// follow the change from the store).
async fn refresh(gateway: &Gateway, scope: LimitScope, owner: &str) -> Result<(), RegistryError> {
    let limits = gateway
        .store
        .limits_of(scope, owner)
        .await
        .map_err(RegistryError::meta("read limits"))?;
    gateway.topology.limits.set(scope, owner, limits);
    Ok(())
}

fn check(
    gateway: &Gateway,
    scope: LimitScope,
    owner: &str,
    name: &str,
) -> Result<(), RegistryError> {
    if !scope.names().contains(&name) {
        return Err(RegistryError::CommandInvalid(format!(
            "Unrecognised terms [{name}] in {}limits (known: {})",
            match scope {
                LimitScope::Vhost => "",
                LimitScope::User => "user-",
            },
            scope.names().join(", ")
        )));
    }
    let exists = match scope {
        LimitScope::Vhost => gateway.topology.vhost(owner).is_some(),
        LimitScope::User => gateway.topology.user(owner).is_some(),
    };
    if !exists {
        return Err(RegistryError::NotFound(format!(
            "no {} '{owner}'",
            scope.as_str()
        )));
    }
    Ok(())
}
