//! What a registry change can fail with: the client's request was refused
//! (each kind is one AMQP reply code, chosen in `channel::refusal`, and one
//! line of an import report), or the meta store or RocketMQ failed (a retry
//! may help).

use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The queue or exchange is not there (404).
    #[error("{0}")]
    NotFound(String),
    /// Arguments or flags that are invalid or differ from what exists (406).
    #[error("{0}")]
    PreconditionFailed(String),
    /// An exclusive queue of another connection (405).
    #[error("{0}")]
    ResourceLocked(String),
    /// A reserved name or the default exchange (403).
    #[error("{0}")]
    AccessRefused(String),
    /// A feature the gateway does not have (540).
    #[error("{0}")]
    NotImplemented(String),
    /// A request that makes no sense, such as an unknown exchange type (503).
    #[error("{0}")]
    CommandInvalid(String),
    #[error("meta store {doing} failed: {error}")]
    Meta {
        doing: &'static str,
        error: meta::MetaError,
    },
    #[error("RocketMQ {doing} failed: {error}")]
    Upstream {
        doing: &'static str,
        error: UpstreamError,
    },
}

impl RegistryError {
    /// Whether the same request may succeed later (the store or RocketMQ
    /// failed), rather than being refused for what it asks.
    pub fn retry_may_help(&self) -> bool {
        match self {
            RegistryError::Meta { error, .. } => error.retry_may_help(),
            RegistryError::Upstream { error, .. } => error.retry_may_help(),
            _ => false,
        }
    }

    pub fn meta(doing: &'static str) -> impl FnOnce(meta::MetaError) -> RegistryError {
        move |error| RegistryError::Meta { doing, error }
    }

    pub fn upstream(doing: &'static str) -> impl FnOnce(UpstreamError) -> RegistryError {
        move |error| RegistryError::Upstream { doing, error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_of_the_stores_that_may_pass_are_worth_a_retry() {
        let upstream = |error| RegistryError::Upstream {
            doing: "create",
            error,
        };
        assert!(upstream(UpstreamError::Unavailable("timeout".into())).retry_may_help());
        assert!(!upstream(UpstreamError::Refused("no permission".into())).retry_may_help());
        assert!(!upstream(UpstreamError::QueueFull("q".into())).retry_may_help());
        let meta = |error| RegistryError::Meta {
            doing: "insert",
            error,
        };
        assert!(!meta(meta::MetaError::Corrupt("x".into())).retry_may_help());
        assert!(!RegistryError::NotFound("q".into()).retry_may_help());
        assert!(!RegistryError::PreconditionFailed("ttl".into()).retry_may_help());
    }
}
