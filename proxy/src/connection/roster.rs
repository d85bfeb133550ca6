//! The open connections of this gateway as operators see them (metrics,
//! and the management API's connection listings to come): who, from
//! where, since when, how many channels and consumers. Each connection
//! task owns its entry and keeps its counts current once per loop turn;
//! readers take a snapshot. Nothing here is on the message path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;

#[derive(Debug, Default)]
pub struct Roster {
    entries: DashMap<u64, Arc<Entry>>,
}

#[derive(Debug)]
pub struct Entry {
    pub id: u64,
    pub peer: SocketAddr,
    /// Milliseconds since the epoch.
    pub connected_at_ms: i64,
    /// User and vhost, once connection.open succeeded.
    pub opened: OnceLock<(String, String)>,
    pub channels: AtomicU32,
    pub consumers: AtomicU32,
}

/// What all open connections add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub connections: u32,
    pub channels: u32,
    pub consumers: u32,
}

impl Roster {
    /// Lists a connection until the returned guard is dropped.
    pub fn list(self: &Arc<Self>, id: u64, peer: SocketAddr, connected_at_ms: i64) -> Listed {
        let entry = Arc::new(Entry {
            id,
            peer,
            connected_at_ms,
            opened: OnceLock::new(),
            channels: AtomicU32::new(0),
            consumers: AtomicU32::new(0),
        });
        self.entries.insert(id, entry.clone());
        Listed {
            roster: self.clone(),
            entry,
        }
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
    pub fn opened(&self, user: &str, vhost: &str) {
        let _ = self.entry.opened.set((user.to_owned(), vhost.to_owned()));
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
        let a = roster.list(1, peer, 0);
        let b = roster.list(2, peer, 0);
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
