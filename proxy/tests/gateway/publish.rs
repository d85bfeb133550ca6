//! The publish path: routing decided at publish time, confirms only after
//! RocketMQ stored the message, returns, size limits, backpressure.

use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::harness::{start_rocketmq, unique, TestGateway};
use crate::reply_code;

/// declare-ok's message_count. RocketMQ indexes a stored message into its
/// queue a moment after confirming it, so a count that is not yet the expected
/// one is read again for up to 2 s; the value returned is what was read last.
pub async fn message_count(ch: &Channel, queue: &str) -> u32 {
    message_count_expecting(ch, queue, None).await
}

pub async fn message_count_expecting(ch: &Channel, queue: &str, expected: Option<u32>) -> u32 {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let mut last = 0;
    for _ in 0..40 {
        last = ch
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .expect("passive declare")
            .message_count();
        if expected.is_none_or(|e| e == last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

/// Publishes, then waits for every confirm and asserts each is an ack
/// (lapin's wait_for_confirms reports returns, not nacks).
pub async fn publish_all<'a>(
    ch: &Channel,
    messages: impl IntoIterator<Item = (&'a str, &'a str, &'a [u8], BasicProperties)>,
) {
    let mut pending = Vec::new();
    for (exchange, key, body, props) in messages {
        pending.push(
            ch.basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .expect("publish"),
        );
    }
    let total = pending.len();
    let mut acked = 0;
    for confirm in pending {
        acked += usize::from(confirm.await.expect("confirm").is_ack());
    }
    assert_eq!(acked, total, "every publish was stored and acked");
}

async fn publish(ch: &Channel, exchange: &str, key: &str, props: BasicProperties) {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            b"payload",
            props,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "stored and acked");
}

async fn declare(ch: &Channel, queue: &str) {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare");
}

#[tokio::test]
async fn a_topic_exchange_with_two_queues_counts_exactly_what_it_routed() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let (ex, q1, q2) = (unique("logs"), unique("q1"), unique("q2"));
    ch.exchange_declare(
        ex.as_str().into(),
        ExchangeKind::Topic,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, &q1).await;
    declare(&ch, &q2).await;
    ch.queue_bind(
        q1.as_str().into(),
        ex.as_str().into(),
        "orders.*".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        q2.as_str().into(),
        ex.as_str().into(),
        "#.eu".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let keys = [
        "orders.eu",
        "orders.us",
        "payments.eu",
        "payments.us",
        "orders.eu.late",
    ];
    let body = [7u8; 1024];
    let messages: Vec<_> = (0..2000).map(|i| keys[i % keys.len()]).collect();
    let to_q1 = messages
        .iter()
        .filter(|k| **k == "orders.eu" || **k == "orders.us")
        .count() as u32;
    let to_q2 = messages.iter().filter(|k| k.ends_with(".eu")).count() as u32;
    let props = BasicProperties::default().with_delivery_mode(2);
    publish_all(
        &ch,
        messages
            .iter()
            .map(|k| (ex.as_str(), *k, &body[..], props.clone())),
    )
    .await;
    assert_eq!(message_count_expecting(&ch, &q1, Some(to_q1)).await, to_q1);
    assert_eq!(message_count_expecting(&ch, &q2, Some(to_q2)).await, to_q2);
}

#[tokio::test]
async fn each_exchange_type_routes_as_rabbitmq_does() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let p = unique("rt");
    let (direct, fanout, headers, front) = (
        format!("{p}-d"),
        format!("{p}-f"),
        format!("{p}-h"),
        format!("{p}-front"),
    );
    let (qa, qb, qh) = (format!("{p}-qa"), format!("{p}-qb"), format!("{p}-qh"));
    for (name, kind) in [
        (&direct, ExchangeKind::Direct),
        (&fanout, ExchangeKind::Fanout),
        (&headers, ExchangeKind::Headers),
        (&front, ExchangeKind::Direct),
    ] {
        ch.exchange_declare(
            name.as_str().into(),
            kind,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    for q in [&qa, &qb, &qh] {
        declare(&ch, q).await;
    }
    let bind = |q: &str, ex: &str, key: &str, args: FieldTable| {
        let (q, ex, key) = (q.to_owned(), ex.to_owned(), key.to_owned());
        let ch = ch.clone();
        async move {
            ch.queue_bind(
                q.as_str().into(),
                ex.as_str().into(),
                key.as_str().into(),
                Default::default(),
                args,
            )
            .await
            .unwrap()
        }
    };
    bind(&qa, &direct, "a", FieldTable::default()).await;
    bind(&qb, &direct, "b", FieldTable::default()).await;
    bind(&qa, &fanout, "ignored", FieldTable::default()).await;
    bind(&qb, &fanout, "", FieldTable::default()).await;
    let mut args = FieldTable::default();
    args.insert("x-match".into(), AMQPValue::LongString("any".into()));
    args.insert("format".into(), AMQPValue::LongString("pdf".into()));
    args.insert("size".into(), AMQPValue::LongInt(10));
    bind(&qh, &headers, "", args).await;
    ch.exchange_bind(
        fanout.as_str().into(),
        front.as_str().into(),
        "to-fanout".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    publish(&ch, &direct, "a", BasicProperties::default()).await; // qa
    publish(&ch, &direct, "c", BasicProperties::default()).await; // nobody
    publish(&ch, &fanout, "whatever", BasicProperties::default()).await; // qa, qb
    let mut h = FieldTable::default();
    h.insert("size".into(), AMQPValue::LongLongInt(10));
    publish(
        &ch,
        &headers,
        "",
        BasicProperties::default().with_headers(h),
    )
    .await; // qh (any, integer widths differ)
    let mut h = FieldTable::default();
    h.insert("format".into(), AMQPValue::LongString("zip".into()));
    publish(
        &ch,
        &headers,
        "",
        BasicProperties::default().with_headers(h),
    )
    .await; // nobody
    publish(&ch, "", &qb, BasicProperties::default()).await; // default exchange: qb
    publish(&ch, &front, "to-fanout", BasicProperties::default()).await; // via fanout: qa, qb

    assert_eq!(message_count_expecting(&ch, &qa, Some(3)).await, 3);
    assert_eq!(message_count_expecting(&ch, &qb, Some(3)).await, 3);
    assert_eq!(message_count_expecting(&ch, &qh, Some(1)).await, 1);
}

#[tokio::test]
async fn bindings_apply_from_the_moment_they_are_made() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let (ex, early, late) = (unique("ex"), unique("early"), unique("late"));
    ch.exchange_declare(
        ex.as_str().into(),
        ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, &early).await;
    declare(&ch, &late).await;
    ch.queue_bind(
        early.as_str().into(),
        ex.as_str().into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, &ex, "", BasicProperties::default()).await;
    ch.queue_bind(
        late.as_str().into(),
        ex.as_str().into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_unbind(
        early.as_str().into(),
        ex.as_str().into(),
        "".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, &ex, "", BasicProperties::default()).await;
    // The first message stays with `early` after its unbind; `late` gets only the second.
    assert_eq!(message_count_expecting(&ch, &early, Some(1)).await, 1);
    assert_eq!(message_count_expecting(&ch, &late, Some(1)).await, 1);
}

#[tokio::test]
async fn an_unroutable_mandatory_message_is_returned_with_312_then_acked() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            "amq.direct".into(),
            unique("nobody").as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost?",
            BasicProperties::default().with_message_id("m-1".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let returned = confirm.take_message().expect("the message came back");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.delivery.data, b"lost?");
    assert_eq!(
        returned
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("m-1")
    );
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_is_404() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let result = ch
        .basic_publish(
            unique("none").as_str().into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await;
    let error = match result {
        Err(e) => e,
        Ok(confirm) => confirm.await.unwrap_err(),
    };
    assert_eq!(reply_code(&error), Some(404));
}

/// A user-id property is the connection's user or the publish is refused
/// (406, as RabbitMQ validates it); the connection's own name is stored.
#[tokio::test]
async fn a_user_id_other_than_the_connections_user_is_406() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let q = unique("user-id");
    declare(&ch, &q).await;
    publish_all(
        &ch,
        [(
            "",
            q.as_str(),
            &b"mine"[..],
            BasicProperties::default().with_user_id("guest".into()),
        )],
    )
    .await;
    let got = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(
        got.properties.user_id().as_ref().map(|u| u.as_str()),
        Some("guest")
    );
    let result = ch
        .basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"forged",
            BasicProperties::default().with_user_id("admin".into()),
        )
        .await;
    let error = match result {
        Err(e) => e,
        Ok(confirm) => confirm.await.unwrap_err(),
    };
    assert_eq!(reply_code(&error), Some(406), "{error}");
    assert!(
        conn.status().connected(),
        "a channel error, not a connection one"
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_and_large_ones_stored_whole() {
    let gw = TestGateway::start_with(|c| c.max_message_size = 4 * 1024 * 1024).await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let q = unique("big");
    declare(&ch, &q).await;
    // 3 MiB: many body frames, joined once, one RocketMQ message.
    let body = vec![1u8; 3 * 1024 * 1024];
    let confirm = ch
        .basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            &body,
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    assert_eq!(message_count_expecting(&ch, &q, Some(1)).await, 1);
    let too_big = vec![1u8; 4 * 1024 * 1024 + 1];
    let result = ch
        .basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            &too_big,
            BasicProperties::default(),
        )
        .await;
    let error = match result {
        Err(e) => e,
        Ok(confirm) => confirm.await.unwrap_err(),
    };
    assert_eq!(reply_code(&error), Some(406));
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(
        message_count(&ch, &q).await,
        1,
        "nothing of the refused message was stored"
    );
}

#[tokio::test]
async fn headers_too_large_for_rocketmq_are_refused_not_truncated() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let q = unique("hdr");
    declare(&ch, &q).await;
    let mut h = FieldTable::default();
    h.insert(
        "blob".into(),
        AMQPValue::LongString("x".repeat(40_000).into()),
    );
    let result = ch
        .basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            b"x",
            BasicProperties::default().with_headers(h),
        )
        .await;
    let error = match result {
        Err(e) => e,
        Ok(confirm) => confirm.await.unwrap_err(),
    };
    assert_eq!(reply_code(&error), Some(406));
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(message_count(&ch, &q).await, 0);
}

/// A RocketMQ that stops answering: publishes are nacked after the send
/// timeout (never acked, never dropped silently), the gateway stops reading
/// and tells the client connection.blocked, and all is well once it answers again.
#[tokio::test]
async fn a_stalled_rocketmq_blocks_publishers_and_nacks_what_it_did_not_store() {
    let namesrv = start_rocketmq("stall", 19877, 20931);
    let gw = TestGateway::start_with(|c| {
        c.name_server = namesrv.clone();
        c.send_timeout_ms = 800;
        c.max_in_flight = 4;
        c.blocked_after_ms = 100;
    })
    .await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let q = unique("stall");
    declare(&ch, &q).await;
    publish(&ch, "", &q, BasicProperties::default()).await;

    let pid_file = crate::harness::rocketmq_data("stall").join("broker.pid");
    let pid = std::fs::read_to_string(pid_file).unwrap().trim().to_owned();
    let signal = |sig: &str| {
        assert!(std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success())
    };
    // The broker's state letter in /proc (T: stopped), to show in failures.
    let state = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after_name = stat.rfind(')')?;
                stat[after_name + 1..]
                    .split_whitespace()
                    .next()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "gone".into())
    };
    signal("-STOP");
    for _ in 0..100 {
        if state() == "T" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state(), "T", "the broker (pid {pid}) is stopped");
    let publisher = {
        let (ch, q) = (ch.clone(), q.clone());
        tokio::spawn(async move {
            let mut confirms = Vec::new();
            for _ in 0..8 {
                confirms.push(
                    ch.basic_publish(
                        "".into(),
                        q.as_str().into(),
                        Default::default(),
                        b"x",
                        BasicProperties::default(),
                    )
                    .await
                    .unwrap(),
                );
            }
            let mut outcomes = Vec::new();
            for c in confirms {
                outcomes.push(c.await.unwrap());
            }
            outcomes
        })
    };
    let mut saw_blocked = false;
    for _ in 0..50 {
        saw_blocked |= conn.status().blocked();
        if saw_blocked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outcomes = tokio::time::timeout(Duration::from_secs(30), publisher)
        .await
        .expect("confirms arrive")
        .unwrap();
    let state_meanwhile = state();
    signal("-CONT");
    assert!(
        saw_blocked,
        "connection.blocked was sent while RocketMQ stalled"
    );
    assert!(
        outcomes.iter().all(|o| o.is_nack()),
        "nothing RocketMQ did not confirm was acked: {outcomes:?} (broker pid {pid} state {state_meanwhile})"
    );
    // Back to normal: the client reconnects, publishes are acked again (within 15 s).
    let mut acked = false;
    for _ in 0..30 {
        let confirm = ch
            .basic_publish(
                "".into(),
                q.as_str().into(),
                Default::default(),
                b"y",
                BasicProperties::default(),
            )
            .await
            .unwrap();
        if confirm.await.unwrap().is_ack() {
            acked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(acked, "publishes are acked again once RocketMQ answers");
    for _ in 0..30 {
        if !conn.status().blocked() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!conn.status().blocked(), "connection.unblocked followed");
}

/// What RocketMQ stored is read back raw (no gateway delivery path) and
/// decoded: body, routing key, exchange and every property and header type
/// come back exactly as the client published them.
#[tokio::test]
async fn properties_and_headers_round_trip_through_rocketmq_exactly() {
    use lapin::types::{DecimalValue, FieldArray, LongString};
    use proxy::mapping::properties::{
        rocketmq_to_properties, unescape_value, EXCHANGE, PROPERTIES, ROUTING_KEY,
    };
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let (ex, q) = (unique("props"), unique("props-q"));
    ch.exchange_declare(
        ex.as_str().into(),
        ExchangeKind::Topic,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(&ch, &q).await;
    ch.queue_bind(
        q.as_str().into(),
        ex.as_str().into(),
        "#".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    let mut nested = FieldTable::default();
    nested.insert("inner".into(), AMQPValue::LongString("yes".into()));
    let mut headers = FieldTable::default();
    headers.insert("bool".into(), AMQPValue::Boolean(true));
    headers.insert("i8".into(), AMQPValue::ShortShortInt(-8));
    headers.insert("i16".into(), AMQPValue::ShortInt(-16));
    headers.insert("i32".into(), AMQPValue::LongInt(-32));
    headers.insert("i64".into(), AMQPValue::LongLongInt(-64));
    headers.insert("f32".into(), AMQPValue::Float(1.5));
    headers.insert("f64".into(), AMQPValue::Double(-2.25));
    headers.insert(
        "dec".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 12345,
        }),
    );
    headers.insert(
        "text".into(),
        AMQPValue::LongString(LongString::from("percent % and \u{1} separators \u{2}")),
    );
    headers.insert("ts".into(), AMQPValue::Timestamp(1_700_000_000));
    headers.insert(
        "bytes".into(),
        AMQPValue::ByteArray(vec![0u8, 1, 254, 255].into()),
    );
    headers.insert("void".into(), AMQPValue::Void);
    headers.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongInt(1),
            AMQPValue::FieldTable(nested.clone()),
        ])),
    );
    headers.insert("table".into(), AMQPValue::FieldTable(nested));
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(5)
        .with_correlation_id("corr-1".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_001)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("shop".into());
    let key = "orders.%.eu";
    let body = b"{\"id\": 1}";
    let confirm = ch
        .basic_publish(
            ex.as_str().into(),
            key.into(),
            Default::default(),
            body,
            props.clone(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());

    let vhost = gw.gateway.topology.vhost("/").unwrap();
    let record = vhost.read().queues[q.as_str()].record.clone();
    let (topic, group) = (record.topic, record.group);
    let mut stored = Vec::new();
    for _ in 0..40 {
        stored = gw.gateway.upstream.peek(&topic, &group, 10).await.unwrap();
        if !stored.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored.len(), 1);
    let m = &stored[0];
    assert_eq!(&m.body[..], body);
    assert_eq!(
        m.property(ROUTING_KEY).map(unescape_value).as_deref(),
        Some(key)
    );
    assert_eq!(
        m.property(EXCHANGE).map(unescape_value).as_deref(),
        Some(ex.as_str())
    );
    assert_eq!(
        rocketmq_to_properties(m.property(PROPERTIES)).unwrap(),
        props
    );
}

/// Pipelined publishes leave in batch requests; each message keeps its own
/// properties and the queue keeps publish order.
#[tokio::test]
async fn pipelined_publishes_are_stored_in_order_with_their_own_properties() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let q = unique("order");
    declare(&ch, &q).await;
    let count = 30u32;
    let mut pending = Vec::new();
    for i in 0..count {
        let mut h = FieldTable::default();
        h.insert("seq".into(), AMQPValue::LongUInt(i));
        let props = BasicProperties::default()
            .with_message_id(format!("m-{i}").into())
            .with_headers(h);
        let body = format!("body-{i}");
        pending.push(
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                Default::default(),
                body.as_bytes(),
                props,
            )
            .await
            .unwrap(),
        );
    }
    for p in pending {
        assert!(p.await.unwrap().is_ack());
    }
    let vhost = gw.gateway.topology.vhost("/").unwrap();
    let record = vhost.read().queues[q.as_str()].record.clone();
    let (topic, group) = (record.topic, record.group);
    let mut stored = Vec::new();
    for _ in 0..40 {
        stored = gw
            .gateway
            .upstream
            .peek(&topic, &group, count)
            .await
            .unwrap();
        if stored.len() == count as usize {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored.len(), count as usize);
    for (i, m) in stored.iter().enumerate() {
        let props = proxy::mapping::properties::rocketmq_to_properties(
            m.property(proxy::mapping::properties::PROPERTIES),
        )
        .unwrap();
        assert_eq!(m.offset, i as i64, "queue order is publish order");
        assert_eq!(&m.body[..], format!("body-{i}").as_bytes());
        assert_eq!(
            props.message_id().as_ref().map(|s| s.as_str().to_owned()),
            Some(format!("m-{i}"))
        );
        assert_eq!(
            props
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("seq").cloned()),
            Some(AMQPValue::LongUInt(i as u32))
        );
    }
}
