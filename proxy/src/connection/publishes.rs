//! Publishes in flight: RocketMQ's answers become confirms (acks gathered
//! per turn, nacks at once), and a connection whose pipeline stays full is
//! told so (connection.blocked) and read no further until it drains.

use amq_protocol::protocol::{connection, AMQPClass};
use futures_util::StreamExt;
use tokio::time::Instant;

use super::{Connection, State};
use crate::channel::PublishDone;
use crate::logging::{Throttle, LOG_INTERVAL};

impl Connection {
    pub(super) fn track_backpressure(&mut self, room: bool) {
        if room {
            self.full_since = None;
            if self.blocked && self.pipeline.len() <= self.gateway.config.max_in_flight / 2 {
                self.blocked = false;
                tracing::info!("Publishing resumed; connection unblocked.");
                if self.client.connection_blocked {
                    self.out.method(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::Unblocked(
                            connection::Unblocked {},
                        )),
                    );
                }
            }
        } else if self.full_since.is_none() {
            self.full_since = Some(Instant::now());
        }
    }

    pub(super) fn block(&mut self) {
        self.blocked = true;
        crate::metrics::BLOCKED.increment(1);
        tracing::warn!(
            in_flight = self.pipeline.len(),
            "RocketMQ is slow; stopped reading and blocked the connection."
        );
        if self.client.connection_blocked && self.state == State::Open {
            let reason = format!(
                "RocketMQ is slow: {} publishes waiting to be stored",
                self.pipeline.len()
            );
            self.out.method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
                    reason: reason.into(),
                })),
            );
        }
    }

    /// RocketMQ answered one publish.
    pub(super) fn publish_done(&mut self, done: PublishDone) {
        let stored = done.result.is_ok();
        if let Err(error) = &done.result {
            crate::metrics::SEND_FAILED.increment(1);
            // Once per interval, not once per message: a RocketMQ restart
            // fails every publish in flight.
            static NACKED: Throttle = Throttle::new(LOG_INTERVAL);
            static LOST: Throttle = Throttle::new(LOG_INTERVAL);
            if done.tag.is_some() {
                if let Some(more) = NACKED.admit() {
                    tracing::warn!(channel = done.channel, %error, more_since_last_line = more, "RocketMQ did not store a message; nacked.");
                }
            } else if let Some(more) = LOST.admit() {
                tracing::error!(channel = done.channel, %error, more_since_last_line = more, "RocketMQ did not store a message and its channel is not in confirm mode: the publisher cannot know.");
            }
        } else {
            crate::metrics::CONFIRMED.increment(1);
        }
        let Some(ch) = self
            .channels
            .get_mut(&done.channel)
            .filter(|ch| ch.epoch == done.epoch)
        else {
            return;
        };
        if let (Some(tag), Some(confirms)) = (done.tag, ch.confirms.as_mut()) {
            if let Some(nack) = confirms.settle(tag, stored) {
                self.out.method(ch.id, nack);
            }
        }
    }

    /// Waits until every publish of this connection is stored (or failed):
    /// RabbitMQ handles a channel's methods in order, so a basic.get or a
    /// message count after a publish sees that message.
    pub(super) async fn settle_pipeline(&mut self) {
        while let Some(done) = self.pipeline.next().await {
            self.publish_done(done);
        }
        self.send_acks();
    }

    pub(super) fn send_acks(&mut self) {
        for ch in self.channels.values_mut() {
            if let Some(ack) = ch.confirms.as_mut().and_then(|c| c.take_ack()) {
                self.out.method(ch.id, ack);
            }
        }
    }
}
