//! Plain records as the store keeps them. Arguments are kept as the AMQP
//! field-table wire encoding, opaque here: the proxy decodes them.

/// A virtual host; the proxy maps it to a RocketMQ namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vhost {
    pub name: String,
    /// The namespace prefix chosen for this vhost's RocketMQ resources.
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// RabbitMQ's `rabbit_password_hashing_sha256` format: base64(salt ++ sha256(salt ++ password)).
    pub password_hash: String,
    pub tags: String,
    /// Only accepted from loopback peers (RabbitMQ's `loopback_users`).
    pub loopback_only: bool,
}

impl User {
    /// The user's tags (stored comma-separated, as RabbitMQ 3.8 wrote them).
    pub fn tag_list(&self) -> Vec<&str> {
        self.tags
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect()
    }
}

/// configure / write / read regular expressions of one user on one vhost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub vhost: String,
    pub name: String,
    /// "direct", "fanout", "topic" or "headers".
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub vhost: String,
    pub name: String,
    pub durable: bool,
    pub auto_delete: bool,
    /// The connection that owns an exclusive queue.
    pub exclusive_owner: Option<String>,
    pub arguments: Vec<u8>,
    /// The RocketMQ topic holding this queue's messages.
    pub topic: String,
    /// The RocketMQ consumer group whose progress is this queue's read position.
    pub group: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DestinationKind {
    Queue,
    Exchange,
}

impl DestinationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Queue => "queue",
            DestinationKind::Exchange => "exchange",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "queue" => Some(DestinationKind::Queue),
            "exchange" => Some(DestinationKind::Exchange),
            _ => None,
        }
    }
}

/// Two bindings are the same binding when all fields are equal (as in RabbitMQ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub vhost: String,
    pub source: String,
    pub destination: String,
    pub destination_kind: DestinationKind,
    pub routing_key: String,
    pub arguments: Vec<u8>,
}

/// Whose limit: a vhost's or a user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitScope {
    Vhost,
    User,
}

impl LimitScope {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::Vhost => "vhost",
            LimitScope::User => "user",
        }
    }

    pub fn parse(text: &str) -> Option<LimitScope> {
        match text {
            "vhost" => Some(LimitScope::Vhost),
            "user" => Some(LimitScope::User),
            _ => None,
        }
    }

    /// The limits RabbitMQ knows for this scope.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            LimitScope::Vhost => &["max-connections", "max-queues"],
            LimitScope::User => &["max-connections", "max-channels"],
        }
    }
}

/// One limit of one vhost or user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub scope: LimitScope,
    pub owner: String,
    pub name: String,
    pub value: i64,
}

/// A vhost's or user's limits by name.
pub type Limits = std::collections::BTreeMap<String, i64>;

/// Everything the store holds, read at once.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: i64,
    pub vhosts: Vec<Vhost>,
    pub users: Vec<User>,
    pub permissions: Vec<Permission>,
    pub exchanges: Vec<Exchange>,
    pub queues: Vec<Queue>,
    pub bindings: Vec<Binding>,
    pub limits: Vec<Limit>,
}
