//! x-expires: a queue unused for its x-expires milliseconds is deleted, as
//! RabbitMQ deletes it. Used means declared (passively too), read by basic.get, or
//! consumed: a queue with a consumer on any gateway never expires, and its
//! time runs from when its last consumer left.
//!
//! The last use is in the meta store (`meta::queue_use`), so that a use on
//! any gateway counts. Every gateway watches every expiring queue it knows
//! (one small task each, started by a scan of the image): when the time is
//! up it reads the last use again and the queue's consumers on every
//! gateway, and deletes the queue through the registry if both say it is
//! unused. Two gateways deciding at once both delete; the store keeps that
//! harmless.

use std::collections::HashSet;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use crate::topology::QueueState;
use crate::Gateway;

/// How often the image is scanned for expiring queues not watched yet.
const SCAN_EVERY: Duration = Duration::from_millis(250);
/// After a failed look at the store, look again this much later.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The topics watched on this gateway.
#[derive(Debug, Default)]
pub struct Watched(Mutex<HashSet<String>>);

impl Watched {
    fn start(&self, topic: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_owned())
    }

    fn stop(&self, topic: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(topic);
    }
}

/// Records a use of an expiring queue (no-op for other queues).
pub async fn touch(gateway: &Gateway, state: &QueueState) {
    if state.arguments.expires.is_none() {
        return;
    }
    let now = gateway.clock.now_ms();
    if let Err(error) = gateway.store.touch_queue(&state.record.topic, now).await {
        tracing::warn!(queue = %state.record.name, %error, "A use of an expiring queue was not recorded (meta store); it may expire early.");
    }
}

/// Scans for expiring queues and watches each, for as long as the gateway lives.
pub async fn run(gateway: Weak<Gateway>) {
    let mut tick = tokio::time::interval(SCAN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(g) = gateway.upgrade() else { return };
        for vhost in g.topology.vhosts() {
            let expiring: Vec<QueueState> = vhost
                .read()
                .queues
                .values()
                .filter(|q| q.arguments.expires.is_some())
                .cloned()
                .collect();
            for state in expiring {
                if g.expiring.start(&state.record.topic) {
                    tokio::spawn(watch(gateway.clone(), state));
                }
            }
        }
    }
}

/// Watches one queue until it expires here or goes otherwise.
async fn watch(gateway: Weak<Gateway>, state: QueueState) {
    let topic = state.record.topic.clone();
    watch_until_gone(&gateway, state).await;
    if let Some(g) = gateway.upgrade() {
        g.expiring.stop(&topic);
    }
}

async fn watch_until_gone(gateway: &Weak<Gateway>, state: QueueState) {
    let record = &state.record;
    let Some(expires) = state.arguments.expires else {
        return;
    };
    loop {
        let wait = {
            let Some(g) = gateway.upgrade() else { return };
            let Some(vhost) = g.topology.vhost(&record.vhost) else {
                return;
            };
            let current = vhost.read().queues.get(&record.name).cloned();
            let Some(current) = current.filter(|q| q.record.topic == record.topic) else {
                return;
            };
            match due_in(&g, &current, expires).await {
                Ok(Some(wait)) => wait,
                Ok(None) => {
                    let _changes = vhost.changes.lock().await;
                    let still = vhost
                        .read()
                        .queues
                        .get(&record.name)
                        .is_some_and(|q| q.record.topic == record.topic);
                    if still {
                        tracing::info!(vhost = %record.vhost, queue = %record.name, expires_ms = expires, "Queue expired (x-expires): unused for its time; deleted.");
                        if let Err(error) = super::queues::delete(&g, &vhost, record).await {
                            tracing::error!(queue = %record.name, %error, "Expired queue could not be deleted; trying again.");
                            RETRY_AFTER
                        } else {
                            return;
                        }
                    } else {
                        return;
                    }
                }
                Err(()) => RETRY_AFTER,
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// How long until the queue may expire; None when it has expired now.
async fn due_in(
    gateway: &Gateway,
    state: &QueueState,
    expires: i64,
) -> Result<Option<Duration>, ()> {
    let now = gateway.clock.now_ms();
    let topic = &state.record.topic;
    let used = match gateway.store.queue_used_ms(topic).await {
        Ok(Some(used)) => used,
        // Not recorded yet (declared before this gateway knew x-expires):
        // its time starts now.
        Ok(None) => {
            gateway.store.touch_queue(topic, now).await.map_err(drop)?;
            now
        }
        Err(_) => return Err(()),
    };
    let due = used.saturating_add(expires);
    if now < due {
        return Ok(Some(Duration::from_millis((due - now) as u64)));
    }
    let counts = super::queues::counts(gateway, state).await.map_err(drop)?;
    if counts.consumers > 0 {
        // In use: its time runs from when its last consumer leaves (that
        // gateway records it); look again after one more period.
        return Ok(Some(Duration::from_millis(expires as u64)));
    }
    Ok(None)
}
