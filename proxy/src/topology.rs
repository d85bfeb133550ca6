//! The gateway's in-memory image of the meta store: per vhost, its exchanges
//! with their compiled bindings and its queues with their RocketMQ names;
//! users and permissions. Publishing reads it under a short read lock and never
//! waits on I/O; changes are written to the meta store first, then applied here.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use amq_protocol::types::{AMQPValue, FieldTable};
use regex::Regex;

use crate::mapping::names;
use crate::mapping::routing::{
    Destination, ExchangeGraph, ExchangeKind, HeadersSpec, RouteBinding,
};
use crate::metrics::queue_stats::QueueStats;
use crate::registry::arguments::QueueArguments;

/// The exchanges every vhost has, as RabbitMQ creates them.
pub const BUILTIN_EXCHANGES: &[(&str, ExchangeKind)] = &[
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

#[derive(Debug, Clone)]
pub struct ExchangeState {
    pub record: meta::Exchange,
    pub kind: ExchangeKind,
    pub arguments: FieldTable,
    /// Its `alternate-exchange` argument.
    pub alternate: Option<String>,
    pub bindings: Vec<RouteBinding>,
    /// The bindings as stored, in the same order as `bindings`.
    pub records: Vec<meta::Binding>,
}

#[derive(Debug, Clone)]
pub struct QueueState {
    pub record: meta::Queue,
    /// Read once, when the record is loaded or changed.
    pub arguments: QueueArguments,
    /// Message counts on this gateway (kept while the topic stays).
    pub stats: Arc<QueueStats>,
}

impl QueueState {
    /// The state of a stored record; arguments that cannot be read are
    /// left unapplied (logged).
    pub fn new(record: meta::Queue) -> QueueState {
        let table = decode_arguments(&record.arguments).unwrap_or_else(|error| {
            tracing::error!(vhost = %record.vhost, queue = %record.name, %error, "Stored queue arguments unreadable; none applied.");
            FieldTable::default()
        });
        QueueState {
            arguments: QueueArguments::read(&table),
            record,
            stats: Arc::default(),
        }
    }
}

/// One vhost's exchanges and queues.
#[derive(Debug, Default)]
pub struct VhostTopology {
    pub exchanges: HashMap<String, ExchangeState>,
    pub queues: HashMap<String, QueueState>,
}

impl ExchangeGraph for VhostTopology {
    fn exchange(&self, name: &str) -> Option<(ExchangeKind, &[RouteBinding])> {
        self.exchanges
            .get(name)
            .map(|e| (e.kind, e.bindings.as_slice()))
    }

    fn alternate(&self, name: &str) -> Option<&str> {
        self.exchanges.get(name)?.alternate.as_deref()
    }
}

impl VhostTopology {
    /// The exchange of a name, counting the default exchange "" which routes
    /// to the queue named by the routing key and cannot be declared.
    pub fn has_exchange(&self, name: &str) -> bool {
        name.is_empty() || self.exchanges.contains_key(name)
    }

    /// The RocketMQ topics of the queues a message published to `exchange`
    /// with `routing_key` reaches ("" is the default exchange: the queue
    /// named by the routing key).
    pub fn destination_topics(
        &self,
        exchange: &str,
        routing_keys: &[&str],
        headers: Option<&FieldTable>,
    ) -> Vec<Target> {
        let target = |q: &QueueState| Target {
            topic: q.record.topic.clone(),
            max_priority: q.arguments.max_priority,
            limit: q.arguments.reject_publish().map(|rule| Limited {
                queue: q.record.name.clone(),
                group: q.record.group.clone(),
                rule,
            }),
            stats: q.stats.clone(),
        };
        if let ([key], true) = (routing_keys, exchange.is_empty()) {
            return self.queues.get(*key).map(target).into_iter().collect();
        }
        if exchange.is_empty() {
            let mut named: Vec<&str> = routing_keys.to_vec();
            named.sort_unstable();
            named.dedup();
            return named
                .into_iter()
                .filter_map(|key| self.queues.get(key).map(target))
                .collect();
        }
        crate::mapping::routing::route(self, exchange, routing_keys, headers)
            .iter()
            .filter_map(|q| self.queues.get(q).map(target))
            .collect()
    }

    /// Whether anything is bound to or from an exchange (for if-unused).
    pub fn exchange_in_use(&self, name: &str) -> bool {
        let from = self
            .exchanges
            .get(name)
            .is_some_and(|e| !e.bindings.is_empty());
        let to = self.exchanges.values().any(|e| {
            e.bindings
                .iter()
                .any(|b| matches!(&b.destination, Destination::Exchange(d) if d == name))
        });
        from || to
    }

    pub fn remove_bindings_to(&mut self, destination: &Destination) {
        for e in self.exchanges.values_mut() {
            for i in (0..e.bindings.len()).rev() {
                if &e.bindings[i].destination == destination {
                    e.bindings.remove(i);
                    e.records.remove(i);
                }
            }
        }
    }
}

/// A vhost: its namespace on RocketMQ, its topology, and a lock that
/// serialises topology changes (declare, bind, delete) within this gateway.
#[derive(Debug)]
pub struct Vhost {
    pub name: String,
    pub namespace: String,
    topology: RwLock<VhostTopology>,
    pub changes: tokio::sync::Mutex<()>,
}

impl Vhost {
    pub fn new(name: &str, namespace: &str) -> Vhost {
        let mut topology = VhostTopology::default();
        for (exchange, kind) in BUILTIN_EXCHANGES {
            topology.exchanges.insert(
                (*exchange).to_owned(),
                builtin_exchange(name, exchange, *kind),
            );
        }
        Vhost {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            topology: RwLock::new(topology),
            changes: Default::default(),
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, VhostTopology> {
        // A panic while holding the lock cannot leave the maps half-written
        // (every change is a single insert/remove), so a poisoned lock is usable.
        self.topology.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, VhostTopology> {
        self.topology.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The topic and group of a queue being declared (a new incarnation).
    pub fn new_queue_names(&self, queue: &str) -> (String, String) {
        names::new_queue_names(&self.namespace, queue)
    }
}

fn builtin_exchange(vhost: &str, name: &str, kind: ExchangeKind) -> ExchangeState {
    ExchangeState {
        record: meta::Exchange {
            vhost: vhost.to_owned(),
            name: name.to_owned(),
            kind: kind.as_str().to_owned(),
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: Vec::new(),
        },
        kind,
        arguments: FieldTable::default(),
        alternate: None,
        bindings: Vec::new(),
        records: Vec::new(),
    }
}

/// A user's permissions on one vhost, compiled.
#[derive(Debug, Clone)]
pub struct Permission {
    pub configure: Regex,
    pub write: Regex,
    pub read: Regex,
}

/// What a permission check is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Configure,
    Write,
    Read,
}

impl Permission {
    /// RabbitMQ matches names against the pattern unanchored; the default
    /// exchange is checked as "amq.default".
    pub fn allows(&self, access: Access, name: &str) -> bool {
        let name = if name.is_empty() { "amq.default" } else { name };
        let re = match access {
            Access::Configure => &self.configure,
            Access::Write => &self.write,
            Access::Read => &self.read,
        };
        re.is_match(name)
    }
}

/// RabbitMQ reads an empty pattern as `^$`: it grants nothing (a name is
/// never empty when checked; the default exchange is "amq.default").
fn permission_pattern(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(if pattern.is_empty() { "^$" } else { pattern })
}

/// Users, permissions and vhosts of this gateway.
#[derive(Debug, Default)]
pub struct Topology {
    vhosts: RwLock<HashMap<String, Arc<Vhost>>>,
    users: RwLock<HashMap<String, meta::User>>,
    permissions: RwLock<HashMap<(String, String), Permission>>,
    /// Vhosts' and users' limits (registry/limits.rs).
    pub limits: crate::registry::limits::LimitsImage,
}

impl Topology {
    /// Builds the topology from a meta snapshot. Records that cannot be read
    /// (bad regex, bad arguments) are skipped with an error log, never fatal.
    pub fn from_snapshot(snapshot: &meta::Snapshot) -> Topology {
        let topology = Topology {
            limits: crate::registry::limits::LimitsImage::from_snapshot(&snapshot.limits),
            ..Topology::default()
        };
        for v in &snapshot.vhosts {
            topology.add_vhost(&v.name, &v.namespace);
        }
        for u in &snapshot.users {
            topology.put_user(u.clone());
        }
        for p in &snapshot.permissions {
            topology.put_permission(p);
        }
        for e in &snapshot.exchanges {
            if let Some(vhost) = topology.vhost(&e.vhost) {
                match exchange_state(e) {
                    Ok(state) => {
                        vhost.write().exchanges.insert(e.name.clone(), state);
                    }
                    Err(error) => {
                        tracing::error!(vhost = %e.vhost, exchange = %e.name, %error, "Stored exchange skipped.")
                    }
                }
            }
        }
        for q in &snapshot.queues {
            if let Some(vhost) = topology.vhost(&q.vhost) {
                vhost
                    .write()
                    .queues
                    .insert(q.name.clone(), QueueState::new(q.clone()));
            }
        }
        for b in &snapshot.bindings {
            if let Some(vhost) = topology.vhost(&b.vhost) {
                let mut topo = vhost.write();
                if let Err(error) = add_binding(&mut topo, b) {
                    tracing::error!(vhost = %b.vhost, source = %b.source, %error, "Stored binding skipped.");
                }
            }
        }
        topology
    }

    pub fn add_vhost(&self, name: &str, namespace: &str) {
        self.vhosts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), Arc::new(Vhost::new(name, namespace)));
    }

    pub fn vhosts(&self) -> Vec<Arc<Vhost>> {
        self.vhosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn remove_vhost(&self, name: &str) -> Option<Arc<Vhost>> {
        self.vhosts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
    }

    pub fn vhost(&self, name: &str) -> Option<Arc<Vhost>> {
        self.vhosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn put_user(&self, user: meta::User) {
        self.users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user.name.clone(), user);
    }

    pub fn remove_user(&self, name: &str) {
        self.users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    pub fn remove_permission(&self, user: &str, vhost: &str) {
        self.permissions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(user.to_owned(), vhost.to_owned()));
    }

    /// Every user's name (the follower's reconciliation).
    pub fn user_names(&self) -> Vec<String> {
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        users.keys().cloned().collect()
    }

    /// Every (user, vhost) with a permission (the follower's reconciliation).
    pub fn permission_keys(&self) -> Vec<(String, String)> {
        let permissions = self.permissions.read().unwrap_or_else(|p| p.into_inner());
        permissions.keys().cloned().collect()
    }

    pub fn user(&self, name: &str) -> Option<meta::User> {
        self.users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn put_permission(&self, p: &meta::Permission) {
        let compiled = (|| {
            Ok::<_, regex::Error>(Permission {
                configure: permission_pattern(&p.configure)?,
                write: permission_pattern(&p.write)?,
                read: permission_pattern(&p.read)?,
            })
        })();
        match compiled {
            Ok(c) => {
                self.permissions
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((p.user.clone(), p.vhost.clone()), c);
            }
            Err(error) => {
                tracing::error!(user = %p.user, vhost = %p.vhost, %error, "Permission with a bad pattern skipped.")
            }
        }
    }

    pub fn permission(&self, user: &str, vhost: &str) -> Option<Permission> {
        self.permissions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(user.to_owned(), vhost.to_owned()))
            .cloned()
    }
}

/// Where a published message goes: one queue's topic.
#[derive(Debug, Clone)]
pub struct Target {
    pub topic: String,
    /// Its queue's x-max-priority.
    pub max_priority: Option<u8>,
    /// Its queue refuses publishes when full.
    pub limit: Option<Limited>,
    /// Its queue's counts.
    pub stats: Arc<QueueStats>,
}

/// A destination queue with a length limit that refuses publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    pub queue: String,
    pub group: String,
    pub rule: RejectPublish,
}

/// A queue's length limit that refuses publishes (channel/overflow.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectPublish {
    pub max_length: u64,
    /// reject-publish-dlx: the refused message is dead-lettered.
    pub dead_letter: bool,
}

/// A string argument, long or short.
pub fn text_argument(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The message queue a message of `priority` goes to in a queue whose
/// highest level is `max` (none: any message queue).
pub fn priority_level(max: Option<u8>, priority: Option<u8>) -> Option<i32> {
    max.map(|max| i32::from(priority.unwrap_or(0).min(max)))
}

/// An integer argument (x-message-ttl, x-max-priority...) of any integer
/// type a client may send it as.
pub fn integer_argument(value: &AMQPValue) -> Option<i64> {
    Some(match value {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    })
}

pub fn decode_arguments(raw: &[u8]) -> Result<FieldTable, String> {
    if raw.is_empty() {
        return Ok(FieldTable::default());
    }
    if crate::codec::depth::table_depth(raw, 0) > crate::codec::depth::MAX_DEPTH {
        return Err("arguments nested too deep".to_owned());
    }
    match amq_protocol::types::parsing::parse_field_table(raw) {
        Ok(([], table)) => Ok(table),
        _ => Err("unreadable arguments".to_owned()),
    }
}

/// Encodes field-table arguments for the store.
pub fn encode_arguments(table: &FieldTable) -> Vec<u8> {
    if table.inner().is_empty() {
        return Vec::new();
    }
    cookie_factory::gen_simple(
        amq_protocol::types::generation::gen_field_table(table),
        Vec::new(),
    )
    .unwrap_or_default()
}

pub fn exchange_state(e: &meta::Exchange) -> Result<ExchangeState, String> {
    let kind = ExchangeKind::parse(&e.kind)
        .ok_or_else(|| format!("unknown exchange type {:?}", e.kind))?;
    let arguments = decode_arguments(&e.arguments)?;
    let alternate = match arguments.inner().get("alternate-exchange") {
        Some(AMQPValue::LongString(name)) => Some(name.to_string()),
        Some(AMQPValue::ShortString(name)) => Some(name.to_string()),
        _ => None,
    };
    Ok(ExchangeState {
        record: e.clone(),
        kind,
        arguments,
        alternate,
        bindings: Vec::new(),
        records: Vec::new(),
    })
}

/// Compiles a stored binding into the source exchange's routing table.
pub fn add_binding(topology: &mut VhostTopology, b: &meta::Binding) -> Result<(), String> {
    let source = topology
        .exchanges
        .get_mut(&b.source)
        .ok_or_else(|| format!("no exchange {:?}", b.source))?;
    if source.records.iter().any(|r| r == b) {
        return Ok(());
    }
    push_binding(source, b)
}

/// Adds a binding known not to be there yet (bindings read from the store are unique).
pub fn push_binding(source: &mut ExchangeState, b: &meta::Binding) -> Result<(), String> {
    let headers = if source.kind == ExchangeKind::Headers {
        Some(HeadersSpec::from_arguments(&decode_arguments(
            &b.arguments,
        )?)?)
    } else {
        None
    };
    let destination = match b.destination_kind {
        meta::DestinationKind::Queue => Destination::Queue(b.destination.clone()),
        meta::DestinationKind::Exchange => Destination::Exchange(b.destination.clone()),
    };
    source.bindings.push(RouteBinding {
        destination,
        routing_key: b.routing_key.clone(),
        headers,
    });
    source.records.push(b.clone());
    Ok(())
}

/// Removes a binding; returns whether it existed.
pub fn remove_binding(topology: &mut VhostTopology, b: &meta::Binding) -> bool {
    let Some(source) = topology.exchanges.get_mut(&b.source) else {
        return false;
    };
    match source.records.iter().position(|r| r == b) {
        Some(i) => {
            source.records.remove(i);
            source.bindings.remove(i);
            true
        }
        None => false,
    }
}
