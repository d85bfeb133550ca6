//! What one connection may open and hold: channels up to the negotiated
//! channel_max and the user's channel limit (registry/limits.rs), and
//! message bodies still arriving up to `max_connection_content_bytes`.

use amq_protocol::protocol::{channel as channel_method, AMQPClass};

use super::Connection;
use crate::channel::Channel;
use crate::error::{ConnectionException, HardCode, ProtocolError};

impl Connection {
    pub(super) fn open_channel(&mut self, id: u16) -> Result<(), ProtocolError> {
        if id > self.tuning.channel_max {
            return Err(ConnectionException::new(
                HardCode::ChannelError,
                format!(
                    "channel {id} is above the negotiated channel_max {}",
                    self.tuning.channel_max
                ),
            )
            .on_method(20, 10)
            .into());
        }
        if let Some(text) = crate::registry::limits::channel_refused(
            &self.gateway,
            &self.user,
            self.listed.id(),
            self.channels.len(),
        ) {
            // The whole connection, on no method: RabbitMQ's answer.
            return Err(ConnectionException::new(HardCode::NotAllowed, text).into());
        }
        self.next_epoch += 1;
        self.channels.insert(id, Channel::new(id, self.next_epoch));
        crate::metrics::CHANNELS_OPENED.increment(1);
        self.out.method(
            id,
            AMQPClass::Channel(channel_method::AMQPMethod::OpenOk(
                channel_method::OpenOk {},
            )),
        );
        Ok(())
    }

    /// Bodies still arriving on all channels may hold at most
    /// `max_connection_content_bytes` (never less than one message of the
    /// largest size): a client cannot make the gateway hold 2,047 channels'
    /// worth of unfinished 128 MiB bodies.
    pub(super) fn check_content_held(&self, arriving: usize) -> Result<(), ProtocolError> {
        let config = &self.gateway.config;
        let cap = config
            .max_connection_content_bytes
            .max(config.max_message_size);
        // A channel holds at most one body of at most max_message_size:
        // with few channels the cap cannot be reached, and no frame pays
        // for a walk over the channels.
        if (self.channels.len() as u64).saturating_mul(config.max_message_size) <= cap {
            return Ok(());
        }
        let held: usize = self.channels.values().map(|c| c.content.pending()).sum();
        if (held + arriving) as u64 > cap {
            return Err(ConnectionException::new(
                HardCode::ResourceError,
                format!(
                    "message bodies still arriving on this connection's channels would hold more than {cap} bytes (max_connection_content_bytes)"
                ),
            )
            .into());
        }
        Ok(())
    }
}
