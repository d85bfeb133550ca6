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

/// Each message_stats key with its count, at one moment.
type Reading = [(&'static str, u64); 11];

/// RabbitMQ's message_stats keys, and the counter (or sum) behind each.
fn readings() -> Reading {
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

#[derive(Debug, Default)]
pub struct Rates {
    /// The last two samples: when, and each counter's value.
    samples: Mutex<Vec<(Instant, Reading)>>,
}

impl Rates {
    /// Takes a sample now; keeps the last two.
    pub fn sample(&self) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push((Instant::now(), readings()));
        if samples.len() > 2 {
            samples.remove(0);
        }
    }

    /// `message_stats`: each count, and `<key>_details.rate` per second
    /// over the last interval (0 until two samples exist).
    pub fn message_stats(&self) -> Value {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let now = readings();
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

    /// Samples every 5 s for as long as the gateway lives.
    pub async fn run(gateway: std::sync::Weak<crate::Gateway>) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match gateway.upgrade() {
                Some(g) => g.rates.sample(),
                None => return,
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
        *rates.samples.lock().unwrap() = vec![(t0, before), (t0 + Duration::from_secs(5), after)];
        let stats = rates.message_stats();
        assert_eq!(stats["publish_details"]["rate"], 100.0);
        assert!(stats["deliver_get"].is_u64());
    }
}
