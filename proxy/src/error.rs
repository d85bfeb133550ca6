//! Errors and the AMQP reply codes they become.
//!
//! Every protocol violation is a typed exception carrying the spec's reply
//! code on the right level: a `ConnectionException` closes the connection
//! (connection.close), a `ChannelException` closes one channel
//! (channel.close). Failures of RocketMQ or the meta store (upstream) and
//! of the gateway itself (internal) are turned into exceptions in exactly one
//! place, `upstream_failure` / `meta_failure`, so their codes can be tested by
//! type.

use std::fmt;

/// Reply codes that close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HardCode {
    ConnectionForced,
    InvalidPath,
    /// Login refused (connection-level 403, sent before the connection is open).
    AccessRefused,
    FrameError,
    SyntaxError,
    CommandInvalid,
    ChannelError,
    UnexpectedFrame,
    ResourceError,
    NotAllowed,
    NotImplemented,
    InternalError,
}

impl HardCode {
    pub fn id(self) -> u16 {
        match self {
            HardCode::ConnectionForced => 320,
            HardCode::InvalidPath => 402,
            HardCode::AccessRefused => 403,
            HardCode::FrameError => 501,
            HardCode::SyntaxError => 502,
            HardCode::CommandInvalid => 503,
            HardCode::ChannelError => 504,
            HardCode::UnexpectedFrame => 505,
            HardCode::ResourceError => 506,
            HardCode::NotAllowed => 530,
            HardCode::NotImplemented => 540,
            HardCode::InternalError => 541,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HardCode::ConnectionForced => "CONNECTION_FORCED",
            HardCode::InvalidPath => "INVALID_PATH",
            HardCode::AccessRefused => "ACCESS_REFUSED",
            HardCode::FrameError => "FRAME_ERROR",
            HardCode::SyntaxError => "SYNTAX_ERROR",
            HardCode::CommandInvalid => "COMMAND_INVALID",
            HardCode::ChannelError => "CHANNEL_ERROR",
            HardCode::UnexpectedFrame => "UNEXPECTED_FRAME",
            HardCode::ResourceError => "RESOURCE_ERROR",
            HardCode::NotAllowed => "NOT_ALLOWED",
            HardCode::NotImplemented => "NOT_IMPLEMENTED",
            HardCode::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// Reply codes that close one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftCode {
    ContentTooLarge,
    NoRoute,
    NoConsumers,
    AccessRefused,
    NotFound,
    ResourceLocked,
    PreconditionFailed,
}

impl SoftCode {
    pub fn id(self) -> u16 {
        match self {
            SoftCode::ContentTooLarge => 311,
            SoftCode::NoRoute => 312,
            SoftCode::NoConsumers => 313,
            SoftCode::AccessRefused => 403,
            SoftCode::NotFound => 404,
            SoftCode::ResourceLocked => 405,
            SoftCode::PreconditionFailed => 406,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SoftCode::ContentTooLarge => "CONTENT_TOO_LARGE",
            SoftCode::NoRoute => "NO_ROUTE",
            SoftCode::NoConsumers => "NO_CONSUMERS",
            SoftCode::AccessRefused => "ACCESS_REFUSED",
            SoftCode::NotFound => "NOT_FOUND",
            SoftCode::ResourceLocked => "RESOURCE_LOCKED",
            SoftCode::PreconditionFailed => "PRECONDITION_FAILED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionException {
    pub code: HardCode,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

impl ConnectionException {
    pub fn new(code: HardCode, text: impl Into<String>) -> Self {
        ConnectionException {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    pub fn on_method(mut self, class_id: u16, method_id: u16) -> Self {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// The reply text as RabbitMQ writes it: `CODE_NAME - explanation`.
    pub fn reply_text(&self) -> String {
        clip(format!("{} - {}", self.code.name(), self.text))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelException {
    pub code: SoftCode,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

impl ChannelException {
    pub fn new(code: SoftCode, text: impl Into<String>) -> Self {
        ChannelException {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    pub fn on_method(mut self, class_id: u16, method_id: u16) -> Self {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    pub fn reply_text(&self) -> String {
        clip(format!("{} - {}", self.code.name(), self.text))
    }
}

/// Reply texts are short strings: at most 255 bytes, cut on a char boundary.
fn clip(mut text: String) -> String {
    if text.len() > 255 {
        let mut end = 255;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// An exception on either level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    Connection(ConnectionException),
    Channel(u16, ChannelException),
}

impl From<ConnectionException> for ProtocolError {
    fn from(e: ConnectionException) -> Self {
        ProtocolError::Connection(e)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Connection(e) => {
                write!(f, "connection error {}: {}", e.code.id(), e.reply_text())
            }
            ProtocolError::Channel(ch, e) => {
                write!(f, "channel {ch} error {}: {}", e.code.id(), e.reply_text())
            }
        }
    }
}

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client sent something wrong.
    Downstream,
    /// RocketMQ or the meta store failed.
    Upstream,
    /// The gateway itself.
    Internal,
}

impl ProtocolError {
    pub fn origin(&self) -> Origin {
        let code = match self {
            ProtocolError::Connection(e) => e.code,
            ProtocolError::Channel(..) => return Origin::Downstream,
        };
        match code {
            HardCode::InternalError => Origin::Upstream,
            HardCode::ConnectionForced => Origin::Internal,
            _ => Origin::Downstream,
        }
    }
}

/// RocketMQ failed while serving a client's method: the connection is closed
/// with 541 INTERNAL_ERROR naming the cause, so the client knows the broker,
/// not its request, is at fault. (RabbitMQ has no closer code.)
pub fn upstream_failure(what: &str, error: &crate::upstream::UpstreamError) -> ProtocolError {
    ProtocolError::Connection(ConnectionException::new(
        HardCode::InternalError,
        format!("RocketMQ {what} failed: {error}"),
    ))
}

/// The meta store failed while serving a client's method.
pub fn meta_failure(what: &str, error: &meta::MetaError) -> ProtocolError {
    ProtocolError::Connection(ConnectionException::new(
        HardCode::InternalError,
        format!("meta store {what} failed: {error}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamError;

    #[test]
    fn upstream_and_meta_failures_close_the_connection_with_541() {
        let e = upstream_failure("send", &UpstreamError::Unavailable("no route".into()));
        assert_eq!(e.origin(), Origin::Upstream);
        assert!(matches!(
            e,
            ProtocolError::Connection(ConnectionException {
                code: HardCode::InternalError,
                ..
            })
        ));
        let e = meta_failure("write", &meta::MetaError::Corrupt("x".into()));
        assert!(matches!(
            e,
            ProtocolError::Connection(ConnectionException {
                code: HardCode::InternalError,
                ..
            })
        ));
    }

    #[test]
    fn reply_texts_fit_a_short_string() {
        let e = ChannelException::new(SoftCode::NotFound, "é".repeat(300));
        assert!(e.reply_text().len() <= 255);
        assert!(e.reply_text().starts_with("NOT_FOUND - "));
    }

    #[test]
    fn codes_match_the_spec() {
        assert_eq!(HardCode::FrameError.id(), 501);
        assert_eq!(HardCode::NotAllowed.id(), 530);
        assert_eq!(SoftCode::PreconditionFailed.id(), 406);
        assert_eq!(SoftCode::NoRoute.id(), 312);
    }
}
