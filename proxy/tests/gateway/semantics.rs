//! RabbitMQ semantics that its own broker test suite (the Java client's
//! functional tests, docs/conformance.md) checks, guarded here without the
//! suite: alternate exchanges, sender-selected distribution (CC/BCC), the
//! last-declared-queue shortcut, names with line breaks, equivalence
//! answers, exchange auto-delete cascades, and consumers served before gets.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, ConfirmSelectOptions, ExchangeBindOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::harness::{unique, TestGateway};
use crate::publish::{message_count_expecting, publish_all};
use crate::reply_code;

/// Two gateways on one meta store (its directory lives as long as they do).
async fn two_gateways() -> (tempfile::TempDir, TestGateway, TestGateway) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("meta.db").display());
    let a = TestGateway::start_with(|c| c.meta_url = url.clone()).await;
    let b = TestGateway::start_with(|c| c.meta_url = url.clone()).await;
    (dir, a, b)
}

/// A passive queue.declare's options.
const PASSIVE: QueueDeclareOptions = QueueDeclareOptions {
    passive: true,
    durable: false,
    exclusive: false,
    auto_delete: false,
    nowait: false,
};

async fn confirming(gw: &TestGateway) -> (lapin::Connection, Channel) {
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

async fn queue(ch: &Channel, name: &str) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

async fn exchange(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    args: FieldTable,
    auto_delete: bool,
) {
    let options = ExchangeDeclareOptions {
        auto_delete,
        ..Default::default()
    };
    ch.exchange_declare(name.into(), kind, options, args)
        .await
        .unwrap();
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

/// Whether an exchange exists (a passive declare on a fresh channel).
async fn exchange_exists(conn: &lapin::Connection, name: &str) -> bool {
    let ch = conn.create_channel().await.unwrap();
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match ch
        .exchange_declare(
            name.into(),
            ExchangeKind::Fanout,
            passive,
            FieldTable::default(),
        )
        .await
    {
        Ok(()) => true,
        Err(e) => {
            assert_eq!(reply_code(&e), Some(404), "{e}");
            false
        }
    }
}

#[tokio::test]
async fn what_an_exchange_routes_nowhere_goes_to_its_alternate_exchange() {
    let gw = TestGateway::start().await;
    let (conn, ch) = confirming(&gw).await;
    let (main, ae, missing_ae) = (unique("main"), unique("ae"), unique("with-missing-ae"));
    let (routed, unrouted) = (unique("routed"), unique("unrouted"));
    exchange(&ch, &ae, ExchangeKind::Fanout, FieldTable::default(), false).await;
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(ae.as_str().into()),
    );
    exchange(&ch, &main, ExchangeKind::Direct, args, false).await;
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(unique("nowhere").as_str().into()),
    );
    exchange(&ch, &missing_ae, ExchangeKind::Direct, args, false).await;
    for q in [&routed, &unrouted] {
        queue(&ch, q).await;
    }
    bind(&ch, &routed, &main, "k").await;
    bind(&ch, &unrouted, &ae, "").await;
    bind(&ch, &routed, &missing_ae, "k").await;
    publish_all(
        &ch,
        [
            (main.as_str(), "k", &b"1"[..], BasicProperties::default()),
            (
                main.as_str(),
                "other",
                &b"2"[..],
                BasicProperties::default(),
            ),
            (
                missing_ae.as_str(),
                "other",
                &b"3"[..],
                BasicProperties::default(),
            ),
        ],
    )
    .await;
    assert_eq!(message_count_expecting(&ch, &routed, Some(1)).await, 1);
    assert_eq!(
        message_count_expecting(&ch, &unrouted, Some(1)).await,
        1,
        "only the message main routed nowhere; a missing alternate routes nowhere"
    );
    // Redeclared with other, meaningless arguments: equivalent (RabbitMQ
    // compares only alternate-exchange).
    let mut args = FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(ae.as_str().into()),
    );
    args.insert("nonsense".into(), AMQPValue::LongLongInt(42));
    exchange(&ch, &main, ExchangeKind::Direct, args, false).await;
    let mut other = FieldTable::default();
    other.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString("elsewhere".into()),
    );
    let refused = ch
        .exchange_declare(
            main.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            other,
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&refused), Some(406), "{refused}");
    drop(conn);
}

#[tokio::test]
async fn cc_and_bcc_headers_add_routing_keys_and_bcc_is_not_delivered() {
    let gw = TestGateway::start().await;
    let (_conn, ch) = confirming(&gw).await;
    let (x, a, b, c) = (
        unique("cc-x"),
        unique("cc-a"),
        unique("cc-b"),
        unique("cc-c"),
    );
    exchange(&ch, &x, ExchangeKind::Direct, FieldTable::default(), false).await;
    for (q, key) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        queue(&ch, q).await;
        bind(&ch, q, &x, key).await;
    }
    let list = |keys: &[&str]| {
        AMQPValue::FieldArray(FieldArray::from(
            keys.iter()
                .map(|k| AMQPValue::LongString((*k).into()))
                .collect::<Vec<_>>(),
        ))
    };
    let mut headers = FieldTable::default();
    headers.insert("CC".into(), list(&["b"]));
    headers.insert("BCC".into(), list(&["c"]));
    publish_all(
        &ch,
        [(
            x.as_str(),
            "a",
            &b"m"[..],
            BasicProperties::default().with_headers(headers),
        )],
    )
    .await;
    for q in [&a, &b, &c] {
        let got = ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{q} got the message"));
        let headers = got.properties.headers().clone().unwrap_or_default();
        assert!(headers.inner().contains_key("CC"), "CC stays");
        assert!(!headers.inner().contains_key("BCC"), "BCC is removed");
    }
    // Every key routes at every hop: CC's key crosses an exchange-to-
    // exchange binding, BCC's then reaches the queue behind it.
    let (front, back, behind) = (unique("cc-front"), unique("cc-back"), unique("cc-behind"));
    exchange(
        &ch,
        &front,
        ExchangeKind::Direct,
        FieldTable::default(),
        false,
    )
    .await;
    exchange(
        &ch,
        &back,
        ExchangeKind::Topic,
        FieldTable::default(),
        false,
    )
    .await;
    queue(&ch, &behind).await;
    ch.exchange_bind(
        back.as_str().into(),
        front.as_str().into(),
        "key1".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    bind(&ch, &behind, &back, "key2").await;
    let mut headers = FieldTable::default();
    headers.insert("CC".into(), list(&["key1"]));
    headers.insert("BCC".into(), list(&["key2"]));
    publish_all(
        &ch,
        [(
            front.as_str(),
            "",
            &b"m"[..],
            BasicProperties::default().with_headers(headers),
        )],
    )
    .await;
    assert_eq!(message_count_expecting(&ch, &behind, Some(1)).await, 1);

    let mut bad = FieldTable::default();
    bad.insert("CC".into(), AMQPValue::LongString("b".into()));
    let result = ch
        .basic_publish(
            x.as_str().into(),
            "a".into(),
            Default::default(),
            b"m",
            BasicProperties::default().with_headers(bad),
        )
        .await;
    let error = match result {
        Err(e) => e,
        Ok(confirm) => confirm.await.unwrap_err(),
    };
    assert_eq!(
        reply_code(&error),
        Some(406),
        "a CC that is not an array: {error}"
    );
}

#[tokio::test]
async fn an_empty_queue_name_is_the_channels_last_declared_queue() {
    let gw = TestGateway::start().await;
    let (conn, ch) = confirming(&gw).await;
    let fresh = conn.create_channel().await.unwrap();
    let refused = fresh
        .queue_bind(
            "".into(),
            "amq.direct".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        reply_code(&refused),
        Some(404),
        "no queue declared on it yet"
    );
    let declared = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let name = declared.name().as_str().to_owned();
    // Empty queue and routing key: bound with the queue's name as the key.
    bind(&ch, "", "amq.direct", "").await;
    publish_all(
        &ch,
        [(
            "amq.direct",
            name.as_str(),
            &b"m"[..],
            BasicProperties::default(),
        )],
    )
    .await;
    let got = ch
        .basic_get("".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(got.is_some(), "get of '' read {name}");
}

#[tokio::test]
async fn line_breaks_are_taken_out_of_names_and_an_exclusive_mismatch_is_405() {
    let gw = TestGateway::start().await;
    let (conn, ch) = confirming(&gw).await;
    let (q, x) = (unique("crlf-q"), unique("crlf-x"));
    queue(&ch, &format!("{q}\r\n")).await;
    exchange(
        &ch,
        &format!("\n{x}\n"),
        ExchangeKind::Fanout,
        FieldTable::default(),
        false,
    )
    .await;
    let passive = PASSIVE;
    ch.queue_declare(q.as_str().into(), passive, FieldTable::default())
        .await
        .expect("the queue's name without its line breaks");
    assert!(exchange_exists(&conn, &x).await);

    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let refused = ch
        .queue_declare(q.as_str().into(), exclusive, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&refused), Some(405), "{refused}");
}

/// (A -> B) (B -> C) (A -> C): deleting C takes B and A with it, all three
/// auto-delete; and a loop A <-> B goes when one of its bindings goes.
#[tokio::test]
async fn auto_delete_exchanges_go_when_their_last_binding_goes_in_cascade() {
    let gw = TestGateway::start().await;
    let (conn, ch) = confirming(&gw).await;
    let (a, b, c) = (unique("ad-a"), unique("ad-b"), unique("ad-c"));
    for x in [&a, &b, &c] {
        exchange(&ch, x, ExchangeKind::Fanout, FieldTable::default(), true).await;
    }
    let e2e = |destination: &str, source: &str| {
        let ch = ch.clone();
        let (destination, source) = (destination.to_owned(), source.to_owned());
        async move {
            ch.exchange_bind(
                destination.as_str().into(),
                source.as_str().into(),
                "".into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap()
        }
    };
    e2e(&c, &b).await;
    e2e(&b, &a).await;
    e2e(&c, &a).await;
    ch.exchange_delete(c.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    for x in [&a, &b, &c] {
        assert!(!exchange_exists(&conn, x).await, "{x} is gone");
    }

    let (a, b) = (unique("loop-a"), unique("loop-b"));
    for x in [&a, &b] {
        exchange(&ch, x, ExchangeKind::Fanout, FieldTable::default(), true).await;
    }
    e2e(&a, &b).await;
    e2e(&b, &a).await;
    ch.exchange_unbind(
        a.as_str().into(),
        b.as_str().into(),
        "".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for x in [&a, &b] {
        assert!(!exchange_exists(&conn, x).await, "{x} is gone");
    }
}

/// A message for a queue with a ready consumer goes to the consumer; a
/// basic.get right after finds nothing, as in RabbitMQ.
#[tokio::test]
async fn a_ready_consumer_is_served_before_a_get() {
    let gw = TestGateway::start().await;
    let (_conn, ch) = confirming(&gw).await;
    let q = unique("consumer-first");
    queue(&ch, &q).await;
    let mut consumer = ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for round in 0..5 {
        publish_all(
            &ch,
            [("", q.as_str(), &b"m"[..], BasicProperties::default())],
        )
        .await;
        let got = ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        assert!(
            got.is_none(),
            "round {round}: the get took the consumer's message"
        );
        tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("delivered to the consumer")
            .unwrap()
            .unwrap();
    }
}

/// Consumers with a higher x-priority get the messages while they have
/// room; a priority that is not an integer is 406.
#[tokio::test]
async fn consumers_of_a_higher_priority_are_served_first() {
    let gw = TestGateway::start().await;
    let (conn, ch) = confirming(&gw).await;
    let q = unique("consumer-priority");
    queue(&ch, &q).await;
    let consume = |priority: AMQPValue| {
        let mut args = FieldTable::default();
        args.insert("x-priority".into(), priority);
        let (ch, q) = (ch.clone(), q.clone());
        async move {
            ch.basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                args,
            )
            .await
        }
    };
    let mut low = consume(AMQPValue::LongInt(-1)).await.unwrap();
    let mut high = consume(AMQPValue::ShortInt(5)).await.unwrap();
    let mut plain = consume(AMQPValue::LongLongInt(0)).await.unwrap();
    let bodies: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    publish_all(
        &ch,
        bodies
            .iter()
            .map(|b| ("", q.as_str(), b.as_bytes(), BasicProperties::default())),
    )
    .await;
    for _ in 0..10 {
        tokio::time::timeout(Duration::from_secs(5), high.next())
            .await
            .expect("the high-priority consumer gets every message")
            .unwrap()
            .unwrap();
    }
    for other in [&mut low, &mut plain] {
        assert!(
            tokio::time::timeout(Duration::from_millis(300), other.next())
                .await
                .is_err(),
            "a lower priority consumer got a message"
        );
    }
    let other = conn.create_channel().await.unwrap();
    let refused = other
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            {
                let mut args = FieldTable::default();
                args.insert("x-priority".into(), AMQPValue::LongString("banana".into()));
                args
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&refused), Some(406), "{refused}");
}

/// Direct reply-to, as Spring's RabbitTemplate uses it: the requester
/// consumes amq.rabbitmq.reply-to (no-ack), its request carries a reply
/// address, the responder publishes to it, the reply arrives, unstored.
#[tokio::test]
async fn direct_reply_to_round_trip() {
    let gw = TestGateway::start().await;
    let (requester_conn, requester) = confirming(&gw).await;
    let (_responder_conn, responder) = confirming(&gw).await;
    let q = unique("rpc-server");
    queue(&responder, &q).await;

    let acking = requester_conn.create_channel().await.unwrap();
    let refused = acking
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        reply_code(&refused),
        Some(406),
        "a reply consumer cannot ack: {refused}"
    );
    let no_consumer = requester_conn.create_channel().await.unwrap();
    no_consumer
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let result = no_consumer
        .basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            b"x",
            BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
        )
        .await;
    let refused = match result {
        Err(e) => e,
        Ok(confirm) => confirm.await.unwrap_err(),
    };
    assert!(
        matches!(reply_code(&refused), Some(406) | None),
        "{refused}"
    );

    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut replies = requester
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .unwrap();
    publish_all(
        &requester,
        [(
            "",
            q.as_str(),
            &b"request"[..],
            BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
        )],
    )
    .await;
    let request = responder
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the request");
    let address = request.properties.reply_to().clone().unwrap().to_string();
    assert!(address.starts_with("amq.rabbitmq.reply-to."), "{address}");
    let passive = PASSIVE;
    responder
        .queue_declare(address.as_str().into(), passive, FieldTable::default())
        .await
        .expect("the address exists while its requester consumes");
    let forged = format!("{}xxxxx", &address[..address.len() - 5]);
    let other = requester_conn.create_channel().await.unwrap();
    let missing = other
        .queue_declare(forged.as_str().into(), passive, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&missing), Some(404));

    publish_all(
        &responder,
        [(
            "",
            address.as_str(),
            &b"response"[..],
            BasicProperties::default(),
        )],
    )
    .await;
    let reply = tokio::time::timeout(Duration::from_secs(5), replies.next())
        .await
        .expect("the reply arrives")
        .unwrap()
        .unwrap();
    assert_eq!(reply.data, b"response");
    assert_eq!(reply.routing_key.as_str(), address);
    // A forged address routes nowhere.
    publish_all(
        &responder,
        [(
            "",
            forged.as_str(),
            &b"stolen"[..],
            BasicProperties::default(),
        )],
    )
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), replies.next())
            .await
            .is_err(),
        "nothing for a forged address"
    );
}

/// A TTL of 0: dropped when no consumer is ready, delivered to a ready one,
/// expired once requeued (RabbitMQ's "deliver now or never").
#[tokio::test]
async fn a_zero_ttl_message_goes_to_a_ready_consumer_or_nowhere() {
    use lapin::options::BasicRejectOptions;
    let gw = TestGateway::start().await;
    let (_conn, ch) = confirming(&gw).await;
    let q = unique("zero-ttl");
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(0));
    ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    publish_all(
        &ch,
        [("", q.as_str(), &b"nobody"[..], BasicProperties::default())],
    )
    .await;
    let got = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(got.is_none(), "expired: no consumer was ready");
    let mut consumer = ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    publish_all(
        &ch,
        [("", q.as_str(), &b"now"[..], BasicProperties::default())],
    )
    .await;
    let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("delivered to the ready consumer")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.data, b"now");
    delivery
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), consumer.next())
            .await
            .is_err(),
        "requeued, it expired"
    );
}

/// get-ok's message_count counts what is still ready, also in message
/// queues the feed has not read since they were written.
#[tokio::test]
async fn get_ok_counts_the_messages_left() {
    let gw = TestGateway::start().await;
    let (_conn, ch) = confirming(&gw).await;
    let q = unique("get-count");
    queue(&ch, &q).await;
    let bodies = ["a", "b", "c"];
    publish_all(
        &ch,
        bodies
            .iter()
            .map(|b| ("", q.as_str(), b.as_bytes(), BasicProperties::default())),
    )
    .await;
    for left in [2, 1, 0] {
        let got = ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(got.message_count, left);
    }
}

/// A message that expires around a dead-letter cycle stops where it died
/// before (RabbitMQ drops automatic cycles): A and B dead-letter into a
/// fanout bound to A, B and C; C gets one copy from each death, A and B
/// end empty.
#[tokio::test]
async fn dead_letter_cycles_of_expiry_are_cut() {
    let gw = TestGateway::start().await;
    let (_conn, ch) = confirming(&gw).await;
    let (x, a, b, c) = (
        unique("dlx-cycle"),
        unique("cyc-a"),
        unique("cyc-b"),
        unique("cyc-c"),
    );
    exchange(&ch, &x, ExchangeKind::Fanout, FieldTable::default(), false).await;
    for q in [&a, &b] {
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(100));
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(x.as_str().into()),
        );
        ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
            .await
            .unwrap();
    }
    queue(&ch, &c).await;
    for q in [&a, &b, &c] {
        bind(&ch, q, &x, "").await;
    }
    publish_all(
        &ch,
        [("", a.as_str(), &b"m"[..], BasicProperties::default())],
    )
    .await;
    assert_eq!(
        message_count_expecting(&ch, &c, Some(2)).await,
        2,
        "one copy per death"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for q in [&a, &b] {
        assert_eq!(
            message_count_expecting(&ch, q, Some(0)).await,
            0,
            "{q} is empty"
        );
    }
    assert_eq!(
        message_count_expecting(&ch, &c, Some(2)).await,
        2,
        "no more copies"
    );
}

/// x-expires: an unused queue goes after its time; a consumer keeps it,
/// and its time runs again from when the consumer leaves; a declare
/// renews it.
#[tokio::test]
async fn an_unused_queue_with_x_expires_is_deleted_after_its_time() {
    async fn exists(conn: &lapin::Connection, name: &str) -> bool {
        let ch = conn.create_channel().await.unwrap();
        let passive = PASSIVE;
        ch.queue_declare(name.into(), passive, FieldTable::default())
            .await
            .is_ok()
    }
    let gw = TestGateway::start().await;
    let (conn, ch) = confirming(&gw).await;
    let expiring = |name: &str| {
        let (ch, name) = (ch.clone(), name.to_owned());
        async move {
            let mut args = FieldTable::default();
            args.insert("x-expires".into(), AMQPValue::LongInt(1000));
            ch.queue_declare(name.as_str().into(), QueueDeclareOptions::default(), args)
                .await
                .unwrap();
        }
    };
    let (idle, consumed) = (unique("expires-idle"), unique("expires-consumed"));
    expiring(&idle).await;
    expiring(&consumed).await;
    let consumer = ch
        .basic_consume(
            consumed.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    expiring(&idle).await; // renewed
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(exists(&conn, &idle).await, "renewed 600 ms ago");
    // (that passive declare renewed it too)
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(exists(&conn, &idle).await, "a passive declare renews it");
    tokio::time::sleep(Duration::from_millis(2400)).await;
    assert!(!exists(&conn, &idle).await, "unused for over 2 s: deleted");
    assert!(exists(&conn, &consumed).await, "a consumer keeps it");
    ch.basic_cancel(consumer.tag().as_str().into(), Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(
        !exists(&conn, &consumed).await,
        "deleted once its consumer left"
    );
}

/// x-expires across gateways: a consumer on B keeps a queue A watches;
/// once B's consumer leaves, the queue goes.
#[tokio::test]
async fn a_consumer_on_another_gateway_keeps_an_expiring_queue() {
    let (_dir, a, b) = two_gateways().await;
    let (conn_a, ch_a) = confirming(&a).await;
    let (_conn_b, ch_b) = confirming(&b).await;
    let q = unique("expires-shared");
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongInt(1000));
    ch_a.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    let passive = PASSIVE;
    // B learns of it through the meta store (a passive declare catches up).
    ch_b.queue_declare(q.as_str().into(), passive, FieldTable::default())
        .await
        .unwrap();
    let consumer = ch_b
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let on_a = conn_a.create_channel().await.unwrap();
    on_a.queue_declare(q.as_str().into(), passive, FieldTable::default())
        .await
        .expect("B's consumer keeps it");
    ch_b.basic_cancel(consumer.tag().as_str().into(), Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let gone = on_a
        .queue_declare(q.as_str().into(), passive, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        reply_code(&gone),
        Some(404),
        "deleted after B's consumer left"
    );
}

/// An auto-delete queue consumed through two gateways goes with its last
/// consumer on either, not with the last one on the first to cancel.
#[tokio::test]
async fn an_auto_delete_queue_goes_with_its_last_consumer_on_every_gateway() {
    let (_dir, a, b) = two_gateways().await;
    let (conn_a, ch_a) = confirming(&a).await;
    let (_conn_b, ch_b) = confirming(&b).await;
    let q = unique("auto-delete-shared");
    let auto_delete = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    ch_a.queue_declare(q.as_str().into(), auto_delete, FieldTable::default())
        .await
        .unwrap();
    ch_b.queue_declare(q.as_str().into(), auto_delete, FieldTable::default())
        .await
        .unwrap();
    let on_a = ch_a
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let on_b = ch_b
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // Each gateway announces its consumers within about a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ch_a.basic_cancel(on_a.tag().as_str().into(), Default::default())
        .await
        .unwrap();
    let passive = PASSIVE;
    let check = conn_a.create_channel().await.unwrap();
    check
        .queue_declare(q.as_str().into(), passive, FieldTable::default())
        .await
        .expect("B's consumer keeps it");
    ch_b.basic_cancel(on_b.tag().as_str().into(), Default::default())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ch = conn_a.create_channel().await.unwrap();
        match ch
            .queue_declare(q.as_str().into(), passive, FieldTable::default())
            .await
        {
            Err(e) => {
                assert_eq!(reply_code(&e), Some(404));
                break;
            }
            Ok(_) => assert!(
                std::time::Instant::now() < deadline,
                "still there after B's last consumer left"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// x-max-length with drop-head (the default): the newest messages stay,
/// the oldest are dead-lettered with reason maxlen.
#[tokio::test]
async fn a_full_queue_drops_its_oldest_messages_to_its_dead_letter_exchange() {
    let gw = TestGateway::start().await;
    let (_conn, ch) = confirming(&gw).await;
    let (q, dlq) = (unique("max-len"), unique("max-len-dl"));
    queue(&ch, &dlq).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(2));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dlq.as_str().into()),
    );
    ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    let bodies: Vec<String> = (0..5).map(|i| i.to_string()).collect();
    publish_all(
        &ch,
        bodies
            .iter()
            .map(|b| ("", q.as_str(), b.as_bytes(), BasicProperties::default())),
    )
    .await;
    let mut kept = Vec::new();
    while let Some(got) = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        kept.push(String::from_utf8(got.delivery.data.clone()).unwrap());
    }
    assert_eq!(kept, ["3", "4"], "the newest two stay");
    assert_eq!(message_count_expecting(&ch, &dlq, Some(3)).await, 3);
    let dead = ch
        .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a dead letter");
    let headers = dead.properties.headers().clone().unwrap_or_default();
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("no x-death: {headers:?}");
    };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
        panic!("empty x-death");
    };
    assert_eq!(
        death.inner().get("reason"),
        Some(&AMQPValue::LongString("maxlen".into()))
    );
}
