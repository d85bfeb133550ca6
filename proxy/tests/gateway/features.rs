//! RabbitMQ features built on RocketMQ: transactions, message TTL (with
//! dead-lettering on expiry) and priority queues.

use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use crate::harness::{unique, TestGateway};
use crate::publish::message_count;
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
