//! HTTP basic authentication against the meta store's users, and what
//! their tags allow: RabbitMQ's management, policymaker, monitoring and
//! administrator tags open the API; a user without any of them is refused.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::topology::{Access, Permission};
use crate::Gateway;

/// The user a request is made as.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub tags: Vec<String>,
}

/// Tags that open the management API.
const MANAGEMENT_TAGS: &[&str] = &["administrator", "monitoring", "policymaker", "management"];

impl Caller {
    pub fn is_administrator(&self) -> bool {
        self.tags.iter().any(|t| t == "administrator")
    }

    /// Sees every vhost's objects (administrator, monitoring); others see
    /// the vhosts they have a permission in.
    pub fn sees_all(&self) -> bool {
        self.tags
            .iter()
            .any(|t| t == "administrator" || t == "monitoring")
    }

    pub fn permission(&self, gateway: &Gateway, vhost: &str) -> Option<Permission> {
        gateway.topology.permission(&self.name, vhost)
    }

    /// Whether the caller may see a vhost's objects.
    pub fn sees(&self, gateway: &Gateway, vhost: &str) -> bool {
        self.sees_all() || self.permission(gateway, vhost).is_some()
    }

    /// Whether the caller's permission on `vhost` allows `access` to `name`.
    pub fn may(&self, gateway: &Gateway, vhost: &str, access: Access, name: &str) -> bool {
        self.permission(gateway, vhost)
            .is_some_and(|p| p.allows(access, name))
    }
}

/// Why a request is refused before routing.
#[derive(Debug)]
pub enum Refused {
    /// No or wrong credentials (401).
    Login,
    /// Known user without a management tag (401, as RabbitMQ says it).
    NotManagementUser,
}

/// The caller named by an `Authorization: Basic` header, from `peer`
/// (a loopback-only user such as guest is refused from elsewhere).
pub fn authenticate(
    gateway: &Gateway,
    header: Option<&str>,
    peer: std::net::SocketAddr,
) -> Result<Caller, Refused> {
    let encoded = header
        .and_then(|h| h.strip_prefix("Basic "))
        .ok_or(Refused::Login)?;
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| Refused::Login)?;
    let text = String::from_utf8(decoded).map_err(|_| Refused::Login)?;
    let (name, password) = text.split_once(':').ok_or(Refused::Login)?;
    let user = gateway
        .topology
        .user(name)
        .filter(|u| meta::password::verify_password(&u.password_hash, password))
        .ok_or(Refused::Login)?;
    if user.loopback_only && !peer.ip().to_canonical().is_loopback() {
        return Err(Refused::Login);
    }
    let tags: Vec<String> = user.tag_list().into_iter().map(str::to_owned).collect();
    if !tags.iter().any(|t| MANAGEMENT_TAGS.contains(&t.as_str())) {
        return Err(Refused::NotManagementUser);
    }
    Ok(Caller {
        name: name.to_owned(),
        tags,
    })
}
