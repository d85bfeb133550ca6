//! One queue's message counts on this gateway, as RabbitMQ's management API
//! gives them per queue (`message_stats.publish`, `deliver_get`, `ack`, …
//! with their rates). Held by the queue's state and by its feed, so that
//! counting is one relaxed atomic add with no lookup; a queue redeclared
//! with the same topic keeps its counts (registry::image). Each gateway
//! counts its own traffic; the API adds up those of every live gateway.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::rates::Window;

/// The message_stats keys a queue has, in RabbitMQ's names.
const KEYS: [&str; 8] = [
    "publish",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "deliver_get",
    "redeliver",
    "ack",
];

#[derive(Debug)]
pub struct QueueStats {
    /// Messages routed into the queue.
    pub publish: AtomicU64,
    pub deliver: AtomicU64,
    pub deliver_no_ack: AtomicU64,
    pub get: AtomicU64,
    pub get_no_ack: AtomicU64,
    pub redeliver: AtomicU64,
    pub ack: AtomicU64,
    window: Window<8>,
}

impl Default for QueueStats {
    /// Counts from zero, sampled now: the first rates cover the traffic
    /// since the queue came (a queue made and filled within one interval
    /// shows a rate at the next sample, not only after two).
    fn default() -> Self {
        let stats = QueueStats {
            publish: AtomicU64::new(0),
            deliver: AtomicU64::new(0),
            deliver_no_ack: AtomicU64::new(0),
            get: AtomicU64::new(0),
            get_no_ack: AtomicU64::new(0),
            redeliver: AtomicU64::new(0),
            ack: AtomicU64::new(0),
            window: Window::default(),
        };
        stats.sample();
        stats
    }
}

/// Adds one to a queue counter.
pub fn count(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl QueueStats {
    fn reading(&self) -> [(&'static str, u64); 8] {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (deliver, deliver_no_ack) = (read(&self.deliver), read(&self.deliver_no_ack));
        let (get, get_no_ack) = (read(&self.get), read(&self.get_no_ack));
        let values = [
            read(&self.publish),
            deliver,
            deliver_no_ack,
            get,
            get_no_ack,
            deliver + deliver_no_ack + get + get_no_ack,
            read(&self.redeliver),
            read(&self.ack),
        ];
        std::array::from_fn(|i| (KEYS[i], values[i]))
    }

    /// Takes a sample for the rates (every 5 s, metrics::rates).
    pub fn sample(&self) {
        self.window.sample(self.reading());
    }

    /// `message_stats` as RabbitMQ gives it for a queue.
    pub fn message_stats(&self) -> Value {
        self.window.message_stats(self.reading())
    }
}

/// Adds another gateway's `message_stats` of the same queue into `mine`:
/// counts and rates alike.
pub fn add_into(mine: &mut Value, theirs: &Value) {
    let (Some(mine), Some(theirs)) = (mine.as_object_mut(), theirs.as_object()) else {
        return;
    };
    for (key, value) in theirs {
        match (mine.get_mut(key), value) {
            (Some(Value::Number(a)), Value::Number(b)) => {
                let sum = a.as_u64().unwrap_or(0) + b.as_u64().unwrap_or(0);
                *a = sum.into();
            }
            (Some(Value::Object(a)), Value::Object(b)) => {
                let rate = |m: &serde_json::Map<String, Value>| {
                    m.get("rate").and_then(Value::as_f64).unwrap_or(0.0)
                };
                let sum = ((rate(a) + rate(b)) * 10.0).round() / 10.0;
                a.insert("rate".into(), serde_json::json!(sum));
            }
            (None, v) => {
                mine.insert(key.clone(), v.clone());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_get_is_the_sum_of_the_four_ways_out() {
        let stats = QueueStats::default();
        count(&stats.deliver, 3);
        count(&stats.deliver_no_ack, 1);
        count(&stats.get, 2);
        count(&stats.get_no_ack, 4);
        assert_eq!(stats.message_stats()["deliver_get"], 10);
    }

    #[test]
    fn two_gateways_stats_of_one_queue_add_up() {
        let a = QueueStats::default();
        let b = QueueStats::default();
        count(&a.publish, 5);
        count(&b.publish, 7);
        let mut mine = a.message_stats();
        mine["publish_details"]["rate"] = serde_json::json!(1.5);
        let mut theirs = b.message_stats();
        theirs["publish_details"]["rate"] = serde_json::json!(2.0);
        add_into(&mut mine, &theirs);
        assert_eq!(mine["publish"], 12);
        assert_eq!(mine["publish_details"]["rate"], 3.5);
    }
}
