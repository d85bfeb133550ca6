//! AMQP message metadata <-> RocketMQ message properties.
//!
//! RocketMQ properties are strings joined by the separators U+0001 and U+0002,
//! 32 KiB at most in all. The AMQP basic properties (headers included, with
//! every field-table type, nested tables and arrays) are kept in one property
//! as base64 of their AMQP wire encoding, so they come back bit for bit. The
//! routing key and exchange are kept readable in their own properties (the
//! routing key is what a filter would look at), escaped so that they can never
//! contain a separator.

use amq_protocol::protocol::basic::{gen_properties, parse_properties, AMQPProperties};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;

/// The routing key the message was published with.
pub const ROUTING_KEY: &str = "AMQP_RK";
/// The exchange the message was published to.
pub const EXCHANGE: &str = "AMQP_EX";
/// The AMQP basic properties, base64 of their wire encoding.
pub const PROPERTIES: &str = "AMQP_P";

/// The message's own time to live in milliseconds (its `expiration`), set
/// only when it has one, so that a feed need not decode the properties.
pub const MESSAGE_TTL: &str = "AMQP_TTL";
/// Which priority level (message queue) of a priority queue holds it.
pub const PRIORITY: &str = "AMQP_PRI";

/// A message's `expiration` as RabbitMQ reads it: a non-negative integer
/// number of milliseconds in a string.
pub fn parse_expiration(text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .map_err(|_| format!("invalid expiration '{text}': not a non-negative integer"))
}

/// The properties without `expiration` (a dead-lettered copy must not expire
/// again, as RabbitMQ strips it; x-death keeps the original).
/// The properties with the named headers taken out (CC/BCC stripping).
pub fn without_headers(p: &AMQPProperties, names: &[&str]) -> AMQPProperties {
    let Some(headers) = p.headers().as_ref() else {
        return p.clone();
    };
    let mut kept = amq_protocol::types::FieldTable::default();
    for (key, value) in headers.inner() {
        if !names.contains(&key.as_str()) {
            kept.insert(key.clone(), value.clone());
        }
    }
    p.clone().with_headers(kept)
}

pub fn without_expiration(p: &AMQPProperties) -> AMQPProperties {
    let mut out = AMQPProperties::default();
    macro_rules! copy {
        ($($get:ident => $set:ident),* $(,)?) => {
            $(if let Some(v) = p.$get().clone() { out = out.$set(v); })*
        };
    }
    copy!(
        content_type => with_content_type,
        content_encoding => with_content_encoding,
        headers => with_headers,
        delivery_mode => with_delivery_mode,
        priority => with_priority,
        correlation_id => with_correlation_id,
        reply_to => with_reply_to,
        message_id => with_message_id,
        timestamp => with_timestamp,
        kind => with_type,
        user_id => with_user_id,
        app_id => with_app_id,
        cluster_id => with_cluster_id,
    );
    out
}

/// Room we allow the encoded AMQP properties, leaving the rest of RocketMQ's
/// 32 KiB property budget to the routing key, exchange and broker properties.
pub const MAX_ENCODED_PROPERTIES: usize = 30_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertiesError {
    #[error(
        "message properties and headers take {encoded} bytes once stored; RocketMQ allows at most {limit} \
         (the message was not stored)"
    )]
    TooLarge { encoded: usize, limit: usize },
    #[error("stored AMQP properties are unreadable: {0}")]
    Corrupt(String),
}

/// Encodes AMQP properties for RocketMQ; `None` when there are none to keep.
pub fn properties_to_rocketmq(
    properties: &AMQPProperties,
) -> Result<Option<String>, PropertiesError> {
    if *properties == AMQPProperties::default() {
        return Ok(None);
    }
    let wire = cookie_factory::gen_simple(gen_properties(properties), Vec::new())
        .map_err(|e| PropertiesError::Corrupt(format!("encoding failed: {e:?}")))?;
    let encoded = STANDARD_NO_PAD.encode(wire);
    if encoded.len() > MAX_ENCODED_PROPERTIES {
        return Err(PropertiesError::TooLarge {
            encoded: encoded.len(),
            limit: MAX_ENCODED_PROPERTIES,
        });
    }
    Ok(Some(encoded))
}

/// Decodes what `properties_to_rocketmq` wrote.
pub fn rocketmq_to_properties(stored: Option<&str>) -> Result<AMQPProperties, PropertiesError> {
    let Some(stored) = stored else {
        return Ok(AMQPProperties::default());
    };
    let wire = STANDARD_NO_PAD
        .decode(stored)
        .map_err(|e| PropertiesError::Corrupt(e.to_string()))?;
    if crate::codec::depth::properties_depth(&wire) > crate::codec::depth::MAX_DEPTH {
        return Err(PropertiesError::Corrupt(
            "headers nested too deep".to_owned(),
        ));
    }
    match parse_properties(wire.as_slice()) {
        Ok(([], properties)) => Ok(properties),
        Ok((rest, _)) => Err(PropertiesError::Corrupt(format!(
            "{} trailing bytes",
            rest.len()
        ))),
        Err(e) => Err(PropertiesError::Corrupt(format!("{e:?}"))),
    }
}

/// The property flags and list as AMQP encodes them in a content header,
/// from what `properties_to_rocketmq` stored: no parsing needed to deliver.
pub fn stored_properties_wire(stored: Option<&str>) -> Result<Vec<u8>, PropertiesError> {
    match stored {
        // No flags set: no properties.
        None => Ok(vec![0, 0]),
        Some(stored) => STANDARD_NO_PAD
            .decode(stored)
            .map_err(|e| PropertiesError::Corrupt(e.to_string())),
    }
}

/// Escapes `%`, U+0001 and U+0002 so a name can be a RocketMQ property value.
pub fn escape_value(text: &str) -> String {
    if !text.contains(['%', '\u{1}', '\u{2}']) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\u{1}' => out.push_str("%01"),
            '\u{2}' => out.push_str("%02"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses `escape_value`.
pub fn unescape_value(text: &str) -> String {
    if !text.contains('%') {
        return text.to_owned();
    }
    text.replace("%01", "\u{1}")
        .replace("%02", "\u{2}")
        .replace("%25", "%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{AMQPValue, DecimalValue, FieldArray, FieldTable};
    use proptest::prelude::*;

    fn every_type() -> FieldTable {
        let mut nested = FieldTable::default();
        nested.insert("deep".into(), AMQPValue::LongString("yes".into()));
        let mut t = FieldTable::default();
        t.insert("bool".into(), AMQPValue::Boolean(true));
        t.insert("i8".into(), AMQPValue::ShortShortInt(-8));
        t.insert("u8".into(), AMQPValue::ShortShortUInt(8));
        t.insert("i16".into(), AMQPValue::ShortInt(-16));
        t.insert("u16".into(), AMQPValue::ShortUInt(16));
        t.insert("i32".into(), AMQPValue::LongInt(-32));
        t.insert("u32".into(), AMQPValue::LongUInt(32));
        t.insert("i64".into(), AMQPValue::LongLongInt(-64));
        t.insert("f32".into(), AMQPValue::Float(1.5));
        t.insert("f64".into(), AMQPValue::Double(-2.25));
        t.insert(
            "dec".into(),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12345,
            }),
        );
        // No ShortString: it cannot come off the wire (RabbitMQ's 's' is a
        // short int; amq-protocol keeps ShortString values for internal use).
        t.insert("long".into(), AMQPValue::LongString("l\u{1}\u{2}%".into()));
        t.insert(
            "array".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongLongInt(1),
                AMQPValue::FieldTable(nested.clone()),
            ])),
        );
        t.insert("ts".into(), AMQPValue::Timestamp(1_700_000_000));
        t.insert("table".into(), AMQPValue::FieldTable(nested));
        t.insert(
            "bytes".into(),
            AMQPValue::ByteArray(vec![0u8, 1, 2, 255].into()),
        );
        t.insert("void".into(), AMQPValue::Void);
        t
    }

    #[test]
    fn without_expiration_keeps_every_other_property() {
        let full = AMQPProperties::default()
            .with_content_type("text/plain".into())
            .with_content_encoding("gzip".into())
            .with_headers(every_type())
            .with_delivery_mode(2)
            .with_priority(7)
            .with_correlation_id("c".into())
            .with_reply_to("r".into())
            .with_expiration("60000".into())
            .with_message_id("m".into())
            .with_timestamp(1_700_000_000)
            .with_type("k".into())
            .with_user_id("guest".into())
            .with_app_id("a".into())
            .with_cluster_id("x".into());
        let stripped = without_expiration(&full);
        assert_eq!(stripped.expiration(), &None);
        assert_eq!(stripped.with_expiration("60000".into()), full);
    }

    #[test]
    fn expiration_is_a_non_negative_integer() {
        assert_eq!(parse_expiration("0"), Ok(0));
        assert_eq!(parse_expiration("2000"), Ok(2000));
        assert!(parse_expiration("-1").is_err());
        assert!(parse_expiration("1.5").is_err());
        assert!(parse_expiration("soon").is_err());
    }

    #[test]
    fn all_properties_and_header_types_round_trip() {
        let props = AMQPProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("gzip".into())
            .with_headers(every_type())
            .with_delivery_mode(2)
            .with_priority(7)
            .with_correlation_id("c-1".into())
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_expiration("60000".into())
            .with_message_id("m-1".into())
            .with_timestamp(1_700_000_001)
            .with_type("order.created".into())
            .with_user_id("guest".into())
            .with_app_id("shop".into())
            .with_cluster_id("".into());
        let stored = properties_to_rocketmq(&props).unwrap().unwrap();
        assert!(!stored.contains(['\u{1}', '\u{2}']));
        assert_eq!(rocketmq_to_properties(Some(&stored)).unwrap(), props);
    }

    #[test]
    fn empty_properties_store_nothing() {
        assert_eq!(
            properties_to_rocketmq(&AMQPProperties::default()).unwrap(),
            None
        );
        assert_eq!(
            rocketmq_to_properties(None).unwrap(),
            AMQPProperties::default()
        );
    }

    #[test]
    fn oversized_headers_are_refused_not_truncated() {
        let mut t = FieldTable::default();
        t.insert(
            "big".into(),
            AMQPValue::LongString("x".repeat(40_000).into()),
        );
        let err = properties_to_rocketmq(&AMQPProperties::default().with_headers(t)).unwrap_err();
        assert!(matches!(
            err,
            PropertiesError::TooLarge {
                limit: MAX_ENCODED_PROPERTIES,
                ..
            }
        ));
    }

    #[test]
    fn corrupt_stored_properties_are_an_error() {
        assert!(rocketmq_to_properties(Some("!!!")).is_err());
        assert!(rocketmq_to_properties(Some("AAAA")).is_err());
    }

    proptest! {
        #[test]
        fn escaped_values_round_trip_without_separators(s in "\\PC*|[%\u{1}\u{2}a]{0,20}") {
            let e = escape_value(&s);
            prop_assert!(!e.contains('\u{1}') && !e.contains('\u{2}'), "separator left in {:?}", e);
            prop_assert_eq!(unescape_value(&e), s);
        }

        #[test]
        fn string_headers_round_trip(key in "[a-z-]{1,20}", value in "\\PC{0,200}", n in any::<i64>()) {
            let mut t = FieldTable::default();
            t.insert(key.clone().into(), AMQPValue::LongString(value.into()));
            t.insert(format!("{key}-n").into(), AMQPValue::LongLongInt(n));
            let props = AMQPProperties::default().with_headers(t);
            let stored = properties_to_rocketmq(&props).unwrap();
            prop_assert_eq!(rocketmq_to_properties(stored.as_deref()).unwrap(), props);
        }
    }
}
