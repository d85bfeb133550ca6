//! RabbitMQ features built on RocketMQ: transactions, message TTL (with
//! dead-lettering on expiry), priority queues and length limits that refuse
//! publishes.

use std::time::Duration;

use futures_util::StreamExt;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use crate::harness::{unique, TestGateway};
use crate::publish::{message_count, message_count_expecting};
use crate::reply_code;

async fn declare(ch: &Channel, queue: &str, args: FieldTable) {
    ch.queue_declare(queue.into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
}

async fn send(ch: &Channel, queue: &str, body: &str, props: BasicProperties) {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        props,
    )
    .await
    .unwrap();
}

/// Dead letters go to `queue` through the default exchange.
fn dead_letter_to(args: &mut FieldTable, queue: &str) {
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(queue.into()),
    );
}

async fn get_body(ch: &Channel, queue: &str) -> Option<(u64, String)> {
    ch.basic_get(queue.into(), BasicGetOptions::default())
        .await
        .unwrap()
        .map(|m| {
            (
                m.delivery.delivery_tag,
                String::from_utf8(m.delivery.data.clone()).unwrap(),
            )
        })
}

#[tokio::test]
async fn transactions_hold_publishes_and_acks_until_commit() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let q = unique("tx");
    declare(&ch, &q, FieldTable::default()).await;
    ch.tx_select().await.unwrap();

    send(&ch, &q, "one", BasicProperties::default()).await;
    send(&ch, &q, "two", BasicProperties::default()).await;
    assert_eq!(
        message_count(&ch, &q).await,
        0,
        "nothing stored before commit"
    );
    ch.tx_rollback().await.unwrap();
    assert_eq!(message_count(&ch, &q).await, 0, "a rollback drops them");

    send(&ch, &q, "three", BasicProperties::default()).await;
    send(&ch, &q, "four", BasicProperties::default()).await;
    ch.tx_commit().await.unwrap();
    assert_eq!(message_count(&ch, &q).await, 2, "commit-ok means stored");

    // An ack inside a transaction counts only once committed.
    let (tag, body) = get_body(&ch, &q).await.expect("a message");
    assert_eq!(body, "three");
    ch.basic_ack(tag, BasicAckOptions::default()).await.unwrap();
    ch.tx_rollback().await.unwrap();
    ch.close(200, "".into()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(
        message_count(&ch, &q).await,
        2,
        "the rolled-back ack left the message unacked, and closing requeued it"
    );

    ch.tx_select().await.unwrap();
    let (tag, body) = get_body(&ch, &q).await.expect("a message");
    assert_eq!(body, "three");
    ch.basic_ack(tag, BasicAckOptions::default()).await.unwrap();
    ch.tx_commit().await.unwrap();
    ch.close(200, "".into()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(message_count(&ch, &q).await, 1, "the committed ack took it");
    assert_eq!(
        get_body(&ch, &q).await.map(|(_, b)| b).as_deref(),
        Some("four")
    );

    // Confirms and transactions exclude each other; commit needs select.
    let tx = conn.create_channel().await.unwrap();
    tx.tx_select().await.unwrap();
    let err = tx
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    let plain = conn.create_channel().await.unwrap();
    let err = plain.tx_commit().await.unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    let confirming = conn.create_channel().await.unwrap();
    confirming
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let err = confirming.tx_select().await.unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
}

#[tokio::test]
async fn expired_messages_leave_at_the_head_and_are_dead_lettered_without_a_consumer() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let (q, dead) = (unique("ttl"), unique("ttl-dead"));
    declare(&ch, &dead, FieldTable::default()).await;
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(300));
    dead_letter_to(&mut args, &dead);
    declare(&ch, &q, args).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (i, expiration) in [None, Some("60000"), Some("100")].into_iter().enumerate() {
        let mut props = BasicProperties::default();
        if let Some(e) = expiration {
            props = props.with_expiration(e.into());
        }
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            format!("m{i}").as_bytes(),
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    assert_eq!(message_count(&ch, &q).await, 3, "not expired yet");
    // Nobody consumes the queue: the gateway still expires and dead-letters.
    let moved = message_count_expecting(&ch, &dead, Some(3)).await;
    assert_eq!(moved, 3, "all three expired within the queue's 300 ms TTL");
    assert_eq!(message_count(&ch, &q).await, 0);
    let mut bodies = Vec::new();
    while let Some(m) = ch
        .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let p = &m.delivery.properties;
        assert_eq!(p.expiration(), &None, "a dead letter does not expire again");
        let headers = p.headers().clone().expect("x-death headers");
        assert_eq!(
            headers.inner().get("x-first-death-reason"),
            Some(&AMQPValue::LongString("expired".into()))
        );
        bodies.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    assert_eq!(bodies, ["m0", "m1", "m2"], "in queue order");
}

#[tokio::test]
async fn a_message_expiration_drops_it_unread_and_a_bad_one_is_406() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let q = unique("expiration");
    declare(&ch, &q, FieldTable::default()).await;
    send(
        &ch,
        &q,
        "short",
        BasicProperties::default().with_expiration("150".into()),
    )
    .await;
    send(&ch, &q, "stays", BasicProperties::default()).await;
    send(
        &ch,
        &q,
        "long",
        BasicProperties::default().with_expiration("600000".into()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut got = Vec::new();
    while let Some((tag, body)) = get_body(&ch, &q).await {
        ch.basic_ack(tag, BasicAckOptions::default()).await.unwrap();
        got.push(body);
    }
    assert_eq!(got, ["stays", "long"]);

    // In confirm mode the confirm carries the channel's close.
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let err = match ch
        .basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_expiration("soon".into()),
        )
        .await
    {
        Err(e) => e,
        Ok(confirm) => confirm.await.unwrap_err(),
    };
    assert_eq!(reply_code(&err), Some(406), "{err}");
}

#[tokio::test]
async fn a_priority_queue_delivers_higher_priorities_first_requeued_ones_included() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let q = unique("prio");
    let mut args = FieldTable::default();
    args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(10));
    declare(&ch, &q, args).await;
    let with = |p: u8| BasicProperties::default().with_priority(p);
    send(&ch, &q, "first", with(3)).await;
    send(&ch, &q, "second", with(6)).await;
    send(&ch, &q, "third", with(3)).await;
    send(&ch, &q, "none", BasicProperties::default()).await;
    send(&ch, &q, "above-max", with(200)).await;
    assert_eq!(message_count(&ch, &q).await, 5);

    let mut order = Vec::new();
    let mut tags = Vec::new();
    while let Some((tag, body)) = get_body(&ch, &q).await {
        tags.push(tag);
        order.push(body);
    }
    assert_eq!(order, ["above-max", "second", "first", "third", "none"]);

    // Requeued, they go back to their levels; a new top one overtakes them.
    ch.basic_nack(
        0,
        lapin::options::BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    )
    .await
    .unwrap();
    send(&ch, &q, "fourth", with(9)).await;
    let mut consumer = ch
        .basic_consume(
            q.as_str().into(),
            "prio".into(),
            lapin::options::BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut order = Vec::new();
    while order.len() < 6 {
        let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("a delivery")
            .unwrap()
            .unwrap();
        order.push(String::from_utf8(d.data.clone()).unwrap());
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(
        order,
        ["above-max", "fourth", "second", "first", "third", "none"]
    );

    let mut bad = FieldTable::default();
    bad.insert("x-max-priority".into(), AMQPValue::LongInt(300));
    let err = ch
        .queue_declare(
            unique("prio-bad").as_str().into(),
            QueueDeclareOptions::default(),
            bad,
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
}

/// x-max-length with x-overflow reject-publish: a full queue nacks what it
/// cannot take (other queues the message reaches still get it), takes again
/// once a message left; reject-publish-dlx dead-letters the refused message
/// with reason maxlen; bad values are 406.
#[tokio::test]
async fn a_full_queue_refuses_publishes_with_a_nack_and_takes_again_when_read() {
    use lapin::options::QueueBindOptions;
    use lapin::ExchangeKind;

    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let (q, other, dead, fanout) = (
        unique("full"),
        unique("full-other"),
        unique("full-dead"),
        unique("full-fan"),
    );
    declare(&ch, &dead, FieldTable::default()).await;
    declare(&ch, &other, FieldTable::default()).await;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(2));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish-dlx".into()),
    );
    dead_letter_to(&mut args, &dead);
    declare(&ch, &q, args).await;
    ch.exchange_declare(
        fanout.as_str().into(),
        ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for queue in [&q, &other] {
        ch.queue_bind(
            queue.as_str().into(),
            fanout.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for i in 0..4 {
        let confirm = ch
            .basic_publish(
                fanout.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        outcomes.push(confirm.is_ack());
    }
    assert_eq!(
        outcomes,
        [true, true, false, false],
        "the third and fourth are refused"
    );
    assert_eq!(message_count(&ch, &q).await, 2);
    assert_eq!(
        message_count_expecting(&ch, &other, Some(4)).await,
        4,
        "the other queue got every message"
    );
    let refused = message_count_expecting(&ch, &dead, Some(2)).await;
    assert_eq!(
        refused, 2,
        "reject-publish-dlx dead-letters what was refused"
    );
    let m = ch
        .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a dead letter");
    let headers = m.delivery.properties.headers().clone().expect("x-death");
    assert_eq!(
        headers.inner().get("x-first-death-reason"),
        Some(&AMQPValue::LongString("maxlen".into()))
    );
    assert_eq!(m.delivery.data, b"m2");

    // One message leaves: there is room for one more, not two.
    let (tag, body) = get_body(&ch, &q).await.expect("the head");
    assert_eq!(body, "m0");
    ch.basic_ack(tag, BasicAckOptions::default()).await.unwrap();
    let mut outcomes = Vec::new();
    for body in ["m4", "m5"] {
        let confirm = ch
            .basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        outcomes.push(confirm.is_ack());
    }
    assert_eq!(outcomes, [true, false]);
    assert_eq!(message_count(&ch, &q).await, 2);

    for (key, value) in [
        (
            "x-overflow",
            AMQPValue::LongString("drop-everything".into()),
        ),
        ("x-max-length", AMQPValue::LongInt(-1)),
    ] {
        let ch = conn.create_channel().await.unwrap();
        let mut args = FieldTable::default();
        args.insert(key.into(), value);
        let error = ch
            .queue_declare(
                unique("bad-limit").as_str().into(),
                QueueDeclareOptions::default(),
                args,
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&error), Some(406), "{key}");
    }
}

/// Dead letters are published the way clients publish: a full dead-letter
/// queue with x-overflow reject-publish refuses them too (they are dropped,
/// as RabbitMQ drops a dead letter a full queue refuses).
#[tokio::test]
async fn a_full_dead_letter_queue_refuses_dead_letters_as_it_refuses_publishes() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let (q, dead) = (unique("expiring"), unique("full-dead"));
    let mut limit = FieldTable::default();
    limit.insert("x-max-length".into(), AMQPValue::LongInt(1));
    limit.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    declare(&ch, &dead, limit).await;
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(100));
    dead_letter_to(&mut args, &dead);
    declare(&ch, &q, args).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..3 {
        send(&ch, &q, &format!("m{i}"), BasicProperties::default()).await;
        // One at a time, so each dead letter finds the one before it stored.
        message_count_expecting(&ch, &q, Some(0)).await;
    }
    assert_eq!(message_count(&ch, &q).await, 0, "all three expired");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        message_count(&ch, &dead).await,
        1,
        "the dead-letter queue holds its one message, not three"
    );
}
