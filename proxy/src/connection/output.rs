//! The write side of a connection and its clock: output gathered in one
//! buffer is written as far as the socket takes it each turn (never
//! waiting outside the loop's select), deliveries are taken while the
//! buffer has room, a client whose socket takes nothing for
//! `client_write_timeout_ms` is closed, and heartbeats go out and are
//! checked.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{far_future, Connection, State, LAST_WRITE_TIMEOUT, OUT_LIMIT};
use crate::channel;
use crate::delivery::{FeedCommand, ToConnection};

impl Connection {
    pub(super) fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.gateway.config.client_write_timeout_ms)
    }

    /// Writes as much output as the socket takes now, without waiting.
    pub(super) fn write_what_fits(&mut self) -> std::io::Result<()> {
        while !self.out.is_empty() {
            match self.writer.try_write(self.out.pending()) {
                Ok(n) => self.wrote(n)?,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if !self.out.is_empty() && self.write_stalled_since.is_none() {
            self.write_stalled_since = Some(Instant::now());
        }
        Ok(())
    }

    /// The socket took `n` bytes of output.
    pub(super) fn wrote(&mut self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.out.advance(n);
        let now = Instant::now();
        self.last_write = now;
        self.write_stalled_since = (!self.out.is_empty()).then_some(now);
        Ok(())
    }

    /// Writes what is left when the connection ends, for a short while.
    pub(super) async fn flush(&mut self) {
        let _ = tokio::time::timeout(LAST_WRITE_TIMEOUT, async {
            while !self.out.is_empty() {
                match self.writer.write(self.out.pending()).await {
                    Ok(n) if n > 0 => self.out.advance(n),
                    _ => break,
                }
            }
            let _ = self.writer.flush().await;
        })
        .await;
        self.out.clear();
    }

    /// Writes what the feeds sent, a batch per turn (one write for all).
    pub(super) fn on_deliveries(&mut self, first: ToConnection) {
        let mut wake: Vec<Arc<crate::delivery::Feed>> = Vec::new();
        let was_full =
            self.in_transit.load(Ordering::Acquire) >= crate::delivery::credit::MAX_IN_TRANSIT;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                ToConnection::Deliver(d) => {
                    let ch = self
                        .channels
                        .get_mut(&d.channel)
                        .filter(|ch| ch.epoch == d.epoch);
                    let written_no_ack =
                        channel::consume::deliver(ch, &mut self.out, self.tuning.frame_max, d);
                    if let Some(feed) = written_no_ack {
                        if !wake.iter().any(|f| Arc::ptr_eq(f, &feed)) {
                            wake.push(feed);
                        }
                    }
                }
                ToConnection::Reply(reply) => {
                    if let Some(ch) = self
                        .channels
                        .get_mut(&reply.channel)
                        .filter(|ch| ch.epoch == reply.epoch)
                    {
                        channel::consume::deliver_reply(
                            ch,
                            &mut self.out,
                            self.tuning.frame_max,
                            reply,
                        );
                    }
                }
                ToConnection::Cancelled {
                    channel,
                    epoch,
                    consumer_tag,
                } => {
                    if let Some(ch) = self
                        .channels
                        .get_mut(&channel)
                        .filter(|ch| ch.epoch == epoch)
                    {
                        channel::consume::cancelled(
                            ch,
                            &mut self.out,
                            self.client.consumer_cancel_notify,
                            consumer_tag,
                        );
                    }
                }
            }
            if self.out.len() < OUT_LIMIT {
                next = self.deliveries.try_recv().ok();
            }
        }
        // Feeds held back by this connection's full buffer may go on.
        if was_full {
            for ch in self.channels.values() {
                for c in ch.consuming.consumers.values() {
                    if !wake.iter().any(|f| Arc::ptr_eq(f, &c.feed)) {
                        wake.push(c.feed.clone());
                    }
                }
            }
        }
        // No-ack consumers got their credit back by being written.
        for feed in wake {
            feed.send(FeedCommand::Wake);
        }
    }

    /// When the clock next needs looking at: handshake/close deadline,
    /// heartbeat, or a write that made no progress.
    pub(super) fn next_heartbeat_check(&self) -> Instant {
        let beat = match self.tuning.heartbeat {
            0 => far_future(),
            hb => {
                let hb = Duration::from_secs(u64::from(hb));
                (self.last_write + hb / 2).min(self.last_read + hb * 2)
            }
        };
        let stall = self
            .write_stalled_since
            .map_or_else(far_future, |t| t + self.write_timeout());
        self.deadline.map_or(beat, |d| d.min(beat)).min(stall)
    }

    pub(super) fn on_clock(&mut self) {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            tracing::info!(state = ?self.state, "Connection timed out in handshake or close.");
            self.state = State::Closed;
            return;
        }
        if self
            .write_stalled_since
            .is_some_and(|t| now.duration_since(t) >= self.write_timeout())
        {
            tracing::warn!(
                waiting_bytes = self.out.len(),
                timeout_ms = self.gateway.config.client_write_timeout_ms,
                "Client stopped reading; closing the connection (its unacked messages are requeued)."
            );
            self.out.clear();
            self.state = State::Closed;
            return;
        }
        let hb = u64::from(self.tuning.heartbeat);
        if hb == 0 {
            return;
        }
        if now.duration_since(self.last_read) >= Duration::from_secs(hb * 2) {
            tracing::warn!(heartbeat = hb, "Missed heartbeats from client; closing.");
            self.state = State::Closed;
            return;
        }
        if now.duration_since(self.last_write) >= Duration::from_secs(hb) / 2 {
            self.out.heartbeat();
            self.last_write = now;
        }
    }
}
