//! Message rates as RabbitMQ's management API gives them
//! (`message_stats.publish` with `publish_details.rate`, …): the counters
//! are sampled every 5 s (RabbitMQ's default statistics interval), and a
//! rate is the change over the last two samples per second.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::Counter;
use crate::metrics as m;

const EVERY: Duration = Duration::from_secs(5);

/// RabbitMQ's message_stats keys, and the counter (or sum) behind each.
fn readings() -> Reading<11> {
    let deliver = m::DELIVERED_CONSUME_MANUAL_ACK.get();
    let deliver_no_ack = m::DELIVERED_CONSUME_AUTO_ACK.get();
    let get = m::DELIVERED_GET_MANUAL_ACK.get();
    let get_no_ack = m::DELIVERED_GET_AUTO_ACK.get();
    let read = |c: &Counter| c.get();
    [
        ("publish", read(&m::PUBLISHED)),
        ("confirm", read(&m::CONFIRMED)),
        ("deliver", deliver),
        ("deliver_no_ack", deliver_no_ack),
        ("get", get),
        ("get_no_ack", get_no_ack),
        ("get_empty", read(&m::GET_EMPTY)),
        ("deliver_get", deliver + deliver_no_ack + get + get_no_ack),
        ("redeliver", read(&m::REDELIVERED)),
        ("ack", read(&m::ACKED)),
        ("drop_unroutable", read(&m::UNROUTABLE)),
    ]
}

/// Counters by their message_stats key, at one moment.
pub type Reading<const N: usize> = [(&'static str, u64); N];

/// The last two samples of some counters, for rates.
#[derive(Debug)]
pub struct Window<const N: usize> {
    samples: Mutex<Vec<(Instant, Reading<N>)>>,
}

impl<const N: usize> Default for Window<N> {
    fn default() -> Self {
        Window {
            samples: Mutex::new(Vec::with_capacity(3)),
        }
    }
}

impl<const N: usize> Window<N> {
    /// Keeps `reading` as the newest sample, and the one before it.
    pub fn sample(&self, reading: Reading<N>) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push((Instant::now(), reading));
        if samples.len() > 2 {
            samples.remove(0);
        }
    }

    /// `message_stats`: each count of `now`, and `<key>_details.rate` per
    /// second over the last interval (0 until two samples exist).
    pub fn message_stats(&self, now: Reading<N>) -> Value {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Map::new();
        for (i, (key, value)) in now.iter().enumerate() {
            let rate = match samples.as_slice() {
                [(t0, older), (t1, newer)] => {
                    let seconds = t1.duration_since(*t0).as_secs_f64();
                    if seconds > 0.0 {
                        newer[i].1.saturating_sub(older[i].1) as f64 / seconds
                    } else {
                        0.0
                    }
                }
                _ => 0.0,
            };
            out.insert((*key).to_owned(), json!(value));
            out.insert(
                format!("{key}_details"),
                json!({ "rate": (rate * 10.0).round() / 10.0 }),
            );
        }
        Value::Object(out)
    }
}

/// The gateway's own message rates (/api/overview).
#[derive(Debug, Default)]
pub struct Rates {
    window: Window<11>,
}

impl Rates {
    /// Takes a sample now; keeps the last two.
    pub fn sample(&self) {
        self.window.sample(readings());
    }

    /// `message_stats` of the whole gateway.
    pub fn message_stats(&self) -> Value {
        self.window.message_stats(readings())
    }

    /// Samples every 5 s for as long as the gateway lives.
    pub async fn run(gateway: std::sync::Weak<crate::Gateway>) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(g) = gateway.upgrade() else { return };
            g.rates.sample();
            for vhost in g.topology.vhosts() {
                let stats: Vec<_> = vhost
                    .read()
                    .queues
                    .values()
                    .map(|q| q.stats.clone())
                    .collect();
                for s in stats {
                    s.sample();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_the_change_between_the_last_two_samples_per_second() {
        let rates = Rates::default();
        let t0 = Instant::now();
        let mut before = readings();
        let mut after = readings();
        before[0].1 = 100;
        after[0].1 = 600;
        *rates.window.samples.lock().unwrap() =
            vec![(t0, before), (t0 + Duration::from_secs(5), after)];
        let stats = rates.message_stats();
        assert_eq!(stats["publish_details"]["rate"], 100.0);
        assert!(stats["deliver_get"].is_u64());
    }
}
