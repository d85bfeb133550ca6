//! The gateway's meta store: vhosts, users, exchanges, queues and bindings,
//! plus the RocketMQ names the gateway chose for them.
//!
//! `model` holds plain records (no AMQP codec, no RocketMQ client), `store`
//! persists them with sqlx (SQLite embedded by default, PostgreSQL when several
//! gateways share one store) and `password` hashes passwords the way RabbitMQ
//! stores them so that imported users keep theirs.
//!
//! `lease` is runtime state, not topology: which gateway reads which of a
//! queue's message queues (no revision bump).
//!
//! Every change bumps a revision in `meta_revision`; gateways use it to follow
//! changes made by others.

pub mod lease;
pub mod model;
pub mod password;
pub mod queue_use;
pub mod store;
pub mod watch;

pub use model::{
    Binding, DestinationKind, Exchange, Limit, LimitScope, Limits, Permission, Queue, Snapshot,
    User, Vhost,
};
pub use store::{Backend, Change, ChangeKind, MetaError, Store, NOTIFY_CHANNEL};
