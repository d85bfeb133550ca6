//! The domain layer: declaring, deleting, counting and purging queues;
//! declaring and deleting exchanges; binding and unbinding. It is the only
//! writer of the meta store's topology and of the in-memory image (`image`,
//! which the follower applies through too). AMQP handlers, definitions import and the HTTP API
//! call it; they check permissions and turn a `RegistryError` into their own
//! answer (a reply code, a report line, a status).

pub mod arguments;
pub mod bindings;
mod error;
pub mod exchanges;
pub mod expiry;
pub mod image;
pub mod limits;
pub mod queues;
pub mod reclaim;
pub mod vhosts;

pub use error::RegistryError;
