//! Holds requests to RocketMQ while no broker answers, so that they wait a
//! moment instead of each trying a connection that cannot succeed.
//!
//! Why: rocketmq-transport 1.0.0 gives every broker address a circuit
//! breaker (`CircuitBreaker::default_breaker`, not configurable) that opens
//! after 5 failed connection attempts and then refuses to connect for 30 s,
//! even once the broker is back. A gateway whose broker restarts sends,
//! reads and declares many times a second; without the gate the breaker
//! opened within a second of the kill and publishes were confirmed again
//! only 25-33 s after the broker listened (benches/chaos.sh,
//! docs/reliability.md). With it, requests wait here, the gate probes the
//! brokers' ports itself, and the client's next connection attempt is made
//! when a broker accepts one: recovery follows the broker.
//!
//! Requests in flight when the gate closes are abandoned as unavailable:
//! the client keeps waiting on a connection the broker's death closed until
//! the request's timeout (8 s for a long-polling read), so without this a
//! consumer's next read began seconds after the broker was back.
//!
//! The gate closes on a failure that may mean a broker is out of reach
//! and a probe confirming that none of the known brokers accepts a TCP
//! connection; it opens as soon as one does. With several brokers, one
//! down leaves the gate open (the others serve) and the client's breaker
//! for the dead one runs its course.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::UpstreamError;

/// Between probes of the brokers' ports while the gate is closed.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// A probe that has not connected in this long counts as refused.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub struct Gate {
    closed: AtomicBool,
    /// A probe loop is running (one at a time).
    probing: AtomicBool,
    opened: Notify,
    /// Woken when the gate closes: requests in flight then are abandoned
    /// (the client would wait their whole timeout on a dead connection).
    closing: Notify,
    /// Broker addresses (host:port) seen in routes and cluster info.
    brokers: Mutex<BTreeSet<String>>,
}

impl Gate {
    /// Remembers broker addresses to probe.
    pub fn know<'a>(&self, addresses: impl IntoIterator<Item = &'a str>) {
        let mut brokers = self.brokers.lock().unwrap_or_else(|p| p.into_inner());
        for address in addresses {
            if !brokers.contains(address) {
                brokers.insert(address.to_owned());
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits while the gate is closed, up to `until`; then refuses.
    pub async fn pass(&self, until: Instant) -> Result<(), UpstreamError> {
        loop {
            let opened = self.opened.notified();
            if !self.is_closed() {
                return Ok(());
            }
            if tokio::time::timeout_at(until, opened).await.is_err() {
                return Err(UpstreamError::Unavailable(
                    "no RocketMQ broker accepts connections".into(),
                ));
            }
        }
    }

    /// Resolves when the gate next closes (create it before the request).
    pub fn closes(&self) -> tokio::sync::futures::Notified<'_> {
        self.closing.notified()
    }

    /// After a request failed as unavailable: probes the brokers, closing
    /// the gate if none answers, until one does.
    pub fn failed(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let gate = self.clone();
        tokio::spawn(async move {
            gate.probe_until_open().await;
            gate.probing.store(false, Ordering::Release);
        });
    }

    async fn probe_until_open(&self) {
        loop {
            let brokers: Vec<String> = self
                .brokers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect();
            // Nothing known to probe: holding requests would only delay them.
            if brokers.is_empty() || any_answers(&brokers).await {
                if self.closed.swap(false, Ordering::AcqRel) {
                    tracing::info!(
                        ?brokers,
                        "A RocketMQ broker accepts connections again; requests go on."
                    );
                    crate::metrics::UPSTREAM_GATE_CLOSED.add(-1);
                }
                self.opened.notify_waiters();
                return;
            }
            if !self.closed.swap(true, Ordering::AcqRel) {
                self.closing.notify_waiters();
                tracing::warn!(?brokers, "No RocketMQ broker accepts connections; requests wait (up to their timeouts) until one does.");
                crate::metrics::UPSTREAM_GATE_CLOSED.add(1);
                crate::metrics::UPSTREAM_GATE_CLOSINGS.increment(1);
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }
}

async fn any_answers(brokers: &[String]) -> bool {
    for address in brokers {
        if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(address)).await {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closes_while_no_broker_answers_and_opens_when_one_does() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let gate = Arc::new(Gate::default());
        gate.know([address.as_str()]);
        gate.failed();
        while !gate.is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let soon = Instant::now() + Duration::from_millis(300);
        assert!(
            gate.pass(soon).await.is_err(),
            "nothing listens: the gate holds, then refuses"
        );
        assert!(gate.is_closed());
        let _listener = tokio::net::TcpListener::bind(&address).await.unwrap();
        let later = Instant::now() + Duration::from_secs(5);
        gate.pass(later).await.unwrap();
        assert!(!gate.is_closed());
    }

    #[tokio::test]
    async fn stays_open_when_a_broker_answers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = Arc::new(Gate::default());
        gate.know([listener.local_addr().unwrap().to_string().as_str()]);
        gate.failed();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!gate.is_closed());
    }
}
