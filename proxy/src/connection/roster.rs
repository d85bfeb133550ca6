//! The open connections of this gateway as operators see them (metrics,
//! the management API): who, from where, since when, how many channels and
//! consumers. Each connection task owns its entry and keeps its counts
//! current once per loop turn; what only the task knows (its channels in
//! detail) it answers when asked (`Ask`), and it closes when told. Nothing
//! here is on the message path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};

use super::Connection;

/// What the management API asks of a connection's task.
#[derive(Debug)]
pub enum Ask {
    /// Its channels, as they are now.
    Describe(oneshot::Sender<Vec<ChannelView>>),
    /// Close with 320 CONNECTION_FORCED and this reason.
    Close(String),
}

/// One channel as the management API shows it.
#[derive(Debug, Clone)]
pub struct ChannelView {
    pub number: u16,
    pub prefetch_count: u32,
    pub global_prefetch_count: u32,
    pub confirm: bool,
    pub transactional: bool,
    pub messages_unacknowledged: usize,
    pub messages_unconfirmed: usize,
    pub messages_uncommitted: usize,
    pub consumers: Vec<ConsumerView>,
}

#[derive(Debug, Clone)]
pub struct ConsumerView {
    pub tag: String,
    pub queue: String,
    pub ack_required: bool,
}

/// Fixed once connection.open succeeded.
#[derive(Debug, Clone)]
pub struct Opened {
    pub user: String,
    pub vhost: String,
    /// The client's properties, as JSON (client_properties).
    pub client_properties: serde_json::Value,
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat: u16,
    pub auth_mechanism: String,
}

#[derive(Debug, Default)]
pub struct Roster {
    entries: DashMap<u64, Arc<Entry>>,
}

#[derive(Debug)]
pub struct Entry {
    pub id: u64,
    /// RabbitMQ's name for it: "peer -> local".
    pub name: String,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Over TLS (amqps).
    pub tls: bool,
    /// Milliseconds since the epoch.
    pub connected_at_ms: i64,
    pub opened: OnceLock<Opened>,
    pub channels: AtomicU32,
    pub consumers: AtomicU32,
    asks: mpsc::UnboundedSender<Ask>,
}

impl Entry {
    /// Its channels in detail; None if the task did not answer within a
    /// second (busy or ending).
    pub async fn describe(&self) -> Option<Vec<ChannelView>> {
        let (tx, rx) = oneshot::channel();
        self.asks.send(Ask::Describe(tx)).ok()?;
        tokio::time::timeout(std::time::Duration::from_secs(1), rx)
            .await
            .ok()?
            .ok()
    }

    /// Tells the connection to close with 320 and `reason`.
    pub fn close(&self, reason: String) -> bool {
        self.asks.send(Ask::Close(reason)).is_ok()
    }
}

/// What all open connections add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub connections: u32,
    pub channels: u32,
    pub consumers: u32,
}

impl Roster {
    /// Lists a connection until the returned guard is dropped; the
    /// receiver gets what is asked of it.
    pub fn list(
        self: &Arc<Self>,
        id: u64,
        peer: SocketAddr,
        local: SocketAddr,
        tls: bool,
        connected_at_ms: i64,
    ) -> (Listed, mpsc::UnboundedReceiver<Ask>) {
        let (asks, asked) = mpsc::unbounded_channel();
        let entry = Arc::new(Entry {
            id,
            name: format!("{peer} -> {local}"),
            peer,
            local,
            tls,
            connected_at_ms,
            opened: OnceLock::new(),
            channels: AtomicU32::new(0),
            consumers: AtomicU32::new(0),
            asks,
        });
        self.entries.insert(id, entry.clone());
        let listed = Listed {
            roster: self.clone(),
            entry,
        };
        (listed, asked)
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<Entry>> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value().clone())
    }

    pub fn totals(&self) -> Totals {
        self.entries.iter().fold(Totals::default(), |t, e| Totals {
            connections: t.connections + 1,
            channels: t.channels + e.channels.load(Ordering::Relaxed),
            consumers: t.consumers + e.consumers.load(Ordering::Relaxed),
        })
    }

    pub fn snapshot(&self) -> Vec<Arc<Entry>> {
        let mut all: Vec<Arc<Entry>> = self.entries.iter().map(|e| e.value().clone()).collect();
        all.sort_by_key(|e| e.id);
        all
    }
}

/// A connection's place in the roster; dropping it removes the entry.
#[derive(Debug)]
pub struct Listed {
    roster: Arc<Roster>,
    pub entry: Arc<Entry>,
}

impl Listed {
    /// The connection's id in the roster.
    pub fn id(&self) -> u64 {
        self.entry.id
    }

    pub fn opened(&self, opened: Opened) {
        let _ = self.entry.opened.set(opened);
    }

    /// The connection's current counts (stored only when they changed).
    pub fn count(&self, channels: usize, consumers: usize) {
        let store = |cell: &AtomicU32, n: usize| {
            let n = n.min(u32::MAX as usize) as u32;
            if cell.load(Ordering::Relaxed) != n {
                cell.store(n, Ordering::Relaxed);
            }
        };
        store(&self.entry.channels, channels);
        store(&self.entry.consumers, consumers);
    }
}

impl Connection {
    /// Tells the roster this connection's channels and consumers now.
    pub(super) fn count_channels(&self) {
        let consumers = self
            .channels
            .values()
            .map(|ch| ch.consuming.consumers.len())
            .sum();
        self.listed.count(self.channels.len(), consumers);
    }

    /// Answers the management API.
    pub(super) fn answer(&mut self, ask: Ask) {
        match ask {
            Ask::Describe(reply) => {
                let mut views: Vec<ChannelView> = self.channels.values().map(view).collect();
                views.sort_by_key(|v| v.number);
                let _ = reply.send(views);
            }
            Ask::Close(reason) => {
                tracing::info!(%reason, "Connection closed by an operator (management API, vhost deleted).");
                self.raise(
                    crate::error::ConnectionException::new(
                        crate::error::HardCode::ConnectionForced,
                        reason,
                    )
                    .into(),
                );
            }
        }
    }
}

fn view(ch: &crate::channel::Channel) -> ChannelView {
    let consuming = &ch.consuming;
    let mut consumers: Vec<ConsumerView> = consuming
        .consumers
        .iter()
        .map(|(tag, c)| ConsumerView {
            tag: tag.to_string(),
            queue: c.queue.clone(),
            ack_required: !c.no_ack,
        })
        .collect();
    consumers.sort_by(|a, b| a.tag.cmp(&b.tag));
    ChannelView {
        number: ch.id,
        prefetch_count: consuming.consumer_prefetch,
        global_prefetch_count: consuming.channel_credit.limit(),
        confirm: ch.confirms.is_some(),
        transactional: ch.tx.is_some(),
        messages_unacknowledged: consuming.unacked.len(),
        messages_unconfirmed: ch.confirms.as_ref().map_or(0, |c| c.unconfirmed()),
        messages_uncommitted: ch.tx.as_ref().map_or(0, |t| t.held()),
        consumers,
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.roster.entries.remove(&self.entry.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_follow_what_connections_report_and_a_dropped_one_leaves() {
        let roster = Arc::new(Roster::default());
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (a, _) = roster.list(1, peer, peer, false, 0);
        let (b, _) = roster.list(2, peer, peer, false, 0);
        a.count(2, 1);
        b.count(3, 0);
        let t = roster.totals();
        assert_eq!((t.connections, t.channels, t.consumers), (2, 5, 1));
        drop(a);
        let t = roster.totals();
        assert_eq!((t.connections, t.channels, t.consumers), (1, 3, 0));
        assert_eq!(roster.snapshot()[0].id, 2);
    }
}
