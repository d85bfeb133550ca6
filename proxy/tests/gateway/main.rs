#![recursion_limit = "512"]
//! The gateway against a real RocketMQ, driven by lapin and by a raw client;
//! fast/ runs gateways on an in-memory upstream under a held tokio clock.
//! One integration-test binary for the crate (link time on 2 cores).

mod connection;
mod consume;
mod fast;
mod features;
mod harness;
mod limits;
mod management;
mod meta;
mod probe;
mod prometheus;
mod publish;
mod raw;
mod semantics;
mod shutdown;
mod tls;
mod topology;

/// The AMQP reply code carried by a lapin error, if it is a protocol error.
pub fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}
