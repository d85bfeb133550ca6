//! Ending a connection: exceptions become channel.close or
//! connection.close in one place, a shutting-down gateway closes with 320
//! once publishes settle, and when the socket is done unacked messages are
//! requeued, exclusive queues deleted and the last bytes flushed.

use std::time::Duration;

use amq_protocol::protocol::{channel as channel_method, connection, AMQPClass};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{Connection, Opened, State, CLOSE_TIMEOUT, LAST_WRITE_TIMEOUT};
use crate::channel;
use crate::codec::Frame;
use crate::delivery::ToConnection;
use crate::error::{ConnectionException, HardCode, ProtocolError};

impl Connection {
    /// Whether to read the socket: not once closed, and not while shutting
    /// down until connection.close is sent (no new publishes; the close-ok
    /// is read after).
    pub(super) fn reading(&self) -> bool {
        match self.state {
            State::Closed => false,
            State::Closing => true,
            _ => !*self.stopping.borrow(),
        }
    }

    /// The gateway is shutting down: once every publish in flight is
    /// settled and its confirm written, close with 320 as RabbitMQ does.
    /// Unacked messages are requeued and exclusive queues deleted as for
    /// any close (`finish`).
    pub(super) fn stop_if_told(&mut self) {
        if matches!(self.state, State::Closing | State::Closed)
            || !*self.stopping.borrow()
            || !self.pipeline.is_empty()
        {
            return;
        }
        self.send_acks();
        self.raise(
            ConnectionException::new(
                HardCode::ConnectionForced,
                "broker forced connection closure with reason 'shutdown'",
            )
            .into(),
        );
    }

    /// Turns an exception into channel.close or connection.close, in one place.
    pub(super) fn raise(&mut self, error: ProtocolError) {
        match error {
            ProtocolError::Channel(id, e) => {
                tracing::info!(channel = id, code = e.code.id(), text = %e.text, "Channel error; closing the channel.");
                if let Some(ch) = self.channels.remove(&id) {
                    self.released.push(ch);
                }
                self.closing_channels.insert(id);
                self.out.method(
                    id,
                    AMQPClass::Channel(channel_method::AMQPMethod::Close(channel_method::Close {
                        reply_code: e.code.id(),
                        reply_text: e.reply_text().into(),
                        class_id: e.class_id,
                        method_id: e.method_id,
                    })),
                );
            }
            ProtocolError::Connection(e) => {
                if self.state == State::Closing {
                    return;
                }
                tracing::info!(code = e.code.id(), text = %e.text, "Connection error; closing the connection.");
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                        reply_code: e.code.id(),
                        reply_text: e.reply_text().into(),
                        class_id: e.class_id,
                        method_id: e.method_id,
                    })),
                );
                self.state = State::Closing;
                self.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
            }
        }
    }

    pub(super) fn while_closing(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        match frame {
            Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))) => {
                self.state = State::Closed
            }
            Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(_))) => {
                self.out.method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.state = State::Closed;
            }
            _ => {}
        }
        Ok(())
    }

    /// After the socket is done: let sends already handed to RocketMQ finish,
    /// flush what is left, and delete the exclusive queues this connection owned.
    pub(super) async fn finish(&mut self) {
        let drain = self.gateway.config.send_timeout_ms + 1000;
        let _ = tokio::time::timeout(Duration::from_millis(drain), async {
            while let Some(done) = self.pipeline.next().await {
                self.publish_done(done);
            }
        })
        .await;
        self.send_acks();
        // Deliveries that were on their way are handed back (a feed sending
        // after this finds the connection gone and keeps the message).
        self.deliveries.close();
        while let Ok(item) = self.deliveries.try_recv() {
            if let ToConnection::Deliver(d) = item {
                channel::consume::deliver(None, &mut self.out, self.tuning.frame_max, d);
            }
        }
        // Every channel goes: its unacked messages are requeued.
        self.released
            .extend(self.channels.drain().map(|(_, ch)| ch));
        self.release_channels().await;
        if let Some(opened) = self.opened.take() {
            self.delete_exclusive_queues(&opened).await;
        }
        if self.close_ok_owed {
            self.out.method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
            );
        }
        self.flush().await;
        let _ = tokio::time::timeout(LAST_WRITE_TIMEOUT, self.writer.shutdown()).await;
    }

    /// Requeues the unacked messages of closed channels and removes their consumers.
    pub(super) async fn release_channels(&mut self) {
        if self.released.is_empty() {
            return;
        }
        crate::metrics::CHANNELS_CLOSED.increment(self.released.len() as u64);
        let Some(opened) = self.opened.as_ref() else {
            self.released.clear();
            return;
        };
        let (gateway, vhost) = (self.gateway.clone(), opened.vhost.clone());
        for mut ch in std::mem::take(&mut self.released) {
            channel::consume::release(&gateway, &vhost, &mut ch).await;
        }
        self.count_channels();
    }

    pub(super) async fn delete_exclusive_queues(&mut self, opened: &Opened) {
        let owned: Vec<meta::Queue> = opened
            .vhost
            .read()
            .queues
            .values()
            .filter(|q| q.record.exclusive_owner.as_deref() == Some(self.name.as_str()))
            .map(|q| q.record.clone())
            .collect();
        if owned.is_empty() {
            return;
        }
        let _changes = opened.vhost.changes.lock().await;
        for queue in owned {
            if let Err(error) =
                crate::registry::queues::delete(&self.gateway, &opened.vhost, &queue).await
            {
                tracing::error!(queue = %queue.name, %error, "Exclusive queue of a closed connection could not be deleted.");
            }
        }
    }
}
