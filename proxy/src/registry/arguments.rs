//! A queue's arguments, read and checked once, the same way for every entry
//! point (queue.declare, definitions import, the stored records a gateway
//! loads or follows): typed values for the code that applies them, the
//! table as declared for equivalence checks and the store.

use amq_protocol::types::{AMQPValue, FieldTable};

use super::RegistryError;
use crate::topology::{integer_argument, text_argument, RejectPublish};

/// The arguments RabbitMQ compares when a queue is declared again.
const EQUIVALENCE: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
];

/// Arguments that are stored but whose behaviour is not implemented yet.
const UNAPPLIED: &[&str] = &["x-max-length-bytes", "x-single-active-consumer"];

/// What happens when a queue with x-max-length is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    #[default]
    DropHead,
    RejectPublish,
    RejectPublishDlx,
}

/// Where a queue's dead letters go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub exchange: String,
    /// Replaces the message's routing key when set.
    pub routing_key: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueArguments {
    /// The table as declared.
    pub table: FieldTable,
    pub message_ttl: Option<i64>,
    /// x-expires: deleted when unused this long (registry::expiry).
    pub expires: Option<i64>,
    pub max_length: Option<u64>,
    pub max_priority: Option<u8>,
    pub overflow: Overflow,
    pub dead_letter: Option<DeadLetter>,
}

impl QueueArguments {
    /// Checks arguments as RabbitMQ does at queue.declare: 406 for values
    /// out of range, 540 for a queue type the gateway does not have.
    pub fn parse(table: &FieldTable, queue: &str, vhost: &str) -> Result<Self, RegistryError> {
        check_queue_type(table)?;
        let invalid = |key: &str, problem: String| {
            RegistryError::PreconditionFailed(format!(
                "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {problem}"
            ))
        };
        for (key, max) in [
            ("x-message-ttl", i64::from(u32::MAX)),
            ("x-max-priority", 255),
            ("x-max-length", i64::MAX),
            ("x-max-length-bytes", i64::MAX),
        ] {
            if let Some(value) = table.inner().get(key) {
                bounded(value, max).map_err(|problem| invalid(key, problem))?;
            }
        }
        match table.inner().get("x-expires").map(integer_argument) {
            None => {}
            Some(None) => return Err(invalid("x-expires", "not an integer".into())),
            Some(Some(n)) if n <= 0 => {
                return Err(invalid("x-expires", format!("must be above 0 ms ({n})")))
            }
            Some(Some(_)) => {}
        }
        let dead_letter = ["x-dead-letter-exchange", "x-dead-letter-routing-key"]
            .map(|key| table.inner().get(key));
        for (key, value) in ["x-dead-letter-exchange", "x-dead-letter-routing-key"]
            .iter()
            .zip(dead_letter)
        {
            if let Some(value) = value {
                if text_argument(value).is_none() {
                    return Err(invalid(key, format!("must be a string, not {value:?}")));
                }
            }
        }
        if dead_letter[1].is_some() && dead_letter[0].is_none() {
            return Err(invalid(
                "x-dead-letter-routing-key",
                "x-dead-letter-exchange must be set with it".into(),
            ));
        }
        if let Some(value) = table.inner().get("x-overflow") {
            overflow(value).ok_or_else(|| {
                invalid(
                    "x-overflow",
                    format!("{value:?} is not drop-head, reject-publish or reject-publish-dlx"),
                )
            })?;
        }
        Ok(Self::read(table))
    }

    /// Reads stored arguments without refusing any: a value the gateway
    /// cannot use (stored before it was checked) is left unapplied.
    pub fn read(table: &FieldTable) -> Self {
        let args = table.inner();
        let number = |key: &str, max: i64| args.get(key).and_then(|v| bounded(v, max).ok());
        let text = |key: &str| args.get(key).and_then(text_argument);
        QueueArguments {
            table: table.clone(),
            message_ttl: number("x-message-ttl", i64::from(u32::MAX)),
            expires: number("x-expires", i64::MAX).filter(|ms| *ms > 0),
            max_length: number("x-max-length", i64::MAX).map(|n| n as u64),
            max_priority: number("x-max-priority", 255)
                .map(|n| n as u8)
                .filter(|n| *n > 0),
            overflow: args
                .get("x-overflow")
                .and_then(overflow)
                .unwrap_or_default(),
            dead_letter: text("x-dead-letter-exchange").map(|exchange| DeadLetter {
                exchange,
                routing_key: text("x-dead-letter-routing-key"),
            }),
        }
    }

    /// x-max-length with x-overflow reject-publish or reject-publish-dlx.
    pub fn reject_publish(&self) -> Option<RejectPublish> {
        let dead_letter = match self.overflow {
            Overflow::DropHead => return None,
            Overflow::RejectPublish => false,
            Overflow::RejectPublishDlx => true,
        };
        Some(RejectPublish {
            max_length: self.max_length?,
            dead_letter,
        })
    }

    /// The queue's feed reads even without consumers, to expire messages
    /// at the head and dead-letter them.
    pub fn reaps(&self) -> bool {
        let args = self.table.inner();
        args.contains_key("x-message-ttl")
            || args.contains_key("x-dead-letter-exchange")
            || self.drops_head_above().is_some()
    }

    /// x-max-length with drop-head (the default overflow): the oldest ready
    /// messages are dropped (or dead-lettered) above this many.
    pub fn drops_head_above(&self) -> Option<u64> {
        (self.overflow == Overflow::DropHead)
            .then_some(self.max_length)
            .flatten()
    }

    /// RocketMQ message queues a new queue needs: one per priority level.
    pub fn levels(&self) -> Option<i32> {
        self.max_priority.map(|max| i32::from(max) + 1)
    }

    /// Arguments stored but not applied (logged at declare, reported by
    /// import).
    pub fn unapplied(&self) -> Vec<String> {
        self.table
            .inner()
            .keys()
            .map(|key| key.as_str())
            .filter(|key| UNAPPLIED.contains(key))
            .map(str::to_owned)
            .collect()
    }

    /// The first argument RabbitMQ compares that differs: its name, the
    /// value received and the current one.
    /// Numbers compare by value and strings by text, whatever their AMQP
    /// types (a TTL of 200 as a short equals 200 as a long, as in RabbitMQ).
    pub fn difference(&self, received: &FieldTable) -> Option<(&'static str, String, String)> {
        EQUIVALENCE.iter().find_map(|key| {
            let (received, now) = (received.inner().get(*key), self.table.inner().get(*key));
            (!same_value(received, now))
                .then(|| (*key, format!("{received:?}"), format!("{now:?}")))
        })
    }
}

fn same_value(a: Option<&AMQPValue>, b: Option<&AMQPValue>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return a == b;
    };
    if let (Some(x), Some(y)) = (integer_argument(a), integer_argument(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (text_argument(a), text_argument(b)) {
        return x == y;
    }
    a == b
}

fn bounded(value: &AMQPValue, max: i64) -> Result<i64, String> {
    match integer_argument(value) {
        None => Err("not an integer".to_owned()),
        Some(n) if n < 0 => Err(format!("negative ({n})")),
        Some(n) if n > max => Err(format!("above the maximum {max} ({n})")),
        Some(n) => Ok(n),
    }
}

fn overflow(value: &AMQPValue) -> Option<Overflow> {
    match text_argument(value)?.as_str() {
        "drop-head" => Some(Overflow::DropHead),
        "reject-publish" => Some(Overflow::RejectPublish),
        "reject-publish-dlx" => Some(Overflow::RejectPublishDlx),
        _ => None,
    }
}

fn check_queue_type(table: &FieldTable) -> Result<(), RegistryError> {
    let kind = match table.inner().get("x-queue-type") {
        None => return Ok(()),
        Some(value) => text_argument(value).unwrap_or_default(),
    };
    match kind.as_str() {
        // Both are stored the same way: in a RocketMQ topic.
        "classic" | "quorum" => Ok(()),
        other => Err(RegistryError::NotImplemented(format!(
            "x-queue-type '{other}' is not supported by this gateway (classic and quorum are)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{LongString, ShortString};

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert(ShortString::from(*k), v.clone());
        }
        t
    }

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    #[test]
    fn values_are_read_from_any_integer_type_and_checked_once() {
        let t = table(&[
            ("x-message-ttl", AMQPValue::ShortInt(500)),
            ("x-max-length", AMQPValue::LongLongInt(10)),
            ("x-overflow", text("reject-publish-dlx")),
            ("x-max-priority", AMQPValue::ShortShortUInt(9)),
            ("x-dead-letter-exchange", text("dlx")),
        ]);
        let a = QueueArguments::parse(&t, "q", "/").unwrap();
        assert_eq!(a.message_ttl, Some(500));
        assert_eq!(a.levels(), Some(10));
        assert_eq!(
            a.reject_publish(),
            Some(RejectPublish {
                max_length: 10,
                dead_letter: true
            })
        );
        assert_eq!(a.dead_letter.as_ref().unwrap().exchange, "dlx");
        assert!(a.unapplied().is_empty());
    }

    #[test]
    fn bad_values_are_refused_at_declare_and_left_unapplied_when_stored() {
        for (key, value) in [
            ("x-message-ttl", AMQPValue::LongInt(-1)),
            ("x-max-priority", AMQPValue::LongInt(256)),
            ("x-max-length", text("ten")),
            ("x-overflow", text("drop-tail")),
        ] {
            let t = table(&[(key, value)]);
            match QueueArguments::parse(&t, "q", "/") {
                Err(RegistryError::PreconditionFailed(text)) => {
                    assert!(text.contains(key), "{text}")
                }
                other => panic!("{key}: {other:?}"),
            }
            let stored = QueueArguments::read(&t);
            assert_eq!(stored.message_ttl, None);
            assert_eq!(stored.max_priority, None);
            assert_eq!(stored.overflow, Overflow::DropHead);
        }
        let stream = table(&[("x-queue-type", text("stream"))]);
        assert!(matches!(
            QueueArguments::parse(&stream, "q", "/"),
            Err(RegistryError::NotImplemented(_))
        ));
    }

    #[test]
    fn numbers_are_equivalent_whatever_their_integer_type() {
        let declared = QueueArguments::read(&table(&[("x-message-ttl", AMQPValue::LongInt(200))]));
        for ttl in [
            AMQPValue::ShortInt(200),
            AMQPValue::LongLongInt(200),
            AMQPValue::ShortShortUInt(200),
        ] {
            assert_eq!(declared.difference(&table(&[("x-message-ttl", ttl)])), None);
        }
        assert!(declared
            .difference(&table(&[("x-message-ttl", AMQPValue::LongInt(201))]))
            .is_some());
    }

    #[test]
    fn expires_and_dead_letter_arguments_are_checked_as_rabbitmq_checks_them() {
        for bad in [
            table(&[("x-expires", AMQPValue::LongInt(0))]),
            table(&[("x-expires", AMQPValue::LongInt(-5))]),
            table(&[("x-dead-letter-exchange", AMQPValue::LongInt(133))]),
            table(&[
                ("x-dead-letter-exchange", text("amq.direct")),
                ("x-dead-letter-routing-key", AMQPValue::LongInt(144)),
            ]),
            table(&[("x-dead-letter-routing-key", text("foo"))]),
        ] {
            assert!(
                matches!(
                    QueueArguments::parse(&bad, "q", "/"),
                    Err(RegistryError::PreconditionFailed(_))
                ),
                "{bad:?}"
            );
        }
        assert!(QueueArguments::parse(
            &table(&[("x-expires", AMQPValue::LongInt(1000))]),
            "q",
            "/"
        )
        .is_ok());
    }

    #[test]
    fn equivalence_compares_only_what_rabbitmq_compares() {
        let declared = QueueArguments::read(&table(&[("x-message-ttl", AMQPValue::LongInt(5))]));
        let other_key = table(&[
            ("x-message-ttl", AMQPValue::LongInt(5)),
            ("x-custom", text("anything")),
        ]);
        assert_eq!(declared.difference(&other_key), None);
        let other_ttl = table(&[("x-message-ttl", AMQPValue::LongInt(6))]);
        assert_eq!(declared.difference(&other_ttl).unwrap().0, "x-message-ttl");
    }
}
