//! AMQP model -> RocketMQ model, as pure functions: no I/O, no tokio, no
//! RocketMQ client. Everything here is deterministic so that every gateway
//! computes the same answer.
//!
//! - `names`: vhost -> namespace, queue -> topic and consumer group, within
//!   RocketMQ's alphabet and length limit, injective and stable.
//! - `routing`: which queues a message reaches (direct, fanout, topic, headers,
//!   exchange-to-exchange), evaluated at publish time.
//! - `properties`: AMQP basic properties and headers <-> RocketMQ message
//!   properties, exact round trip or a clear refusal.

pub mod names;
pub mod properties;
pub mod routing;
