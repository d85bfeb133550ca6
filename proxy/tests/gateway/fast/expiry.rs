//! Message TTL on the held clock: a minute of TTL in milliseconds, with its
//! boundary checked to the second.

use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use super::{hold_clock, pass, within, Site};

async fn declare(ch: &Channel, queue: &str, args: FieldTable) {
    within(ch.queue_declare(queue.into(), QueueDeclareOptions::default(), args))
        .await
        .unwrap();
}

async fn publish_confirmed(ch: &Channel, queue: &str, body: &str, props: BasicProperties) {
    let confirm = within(ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        props,
    ))
    .await
    .unwrap();
    assert!(within(confirm).await.unwrap().is_ack());
}

/// Every message in `queue` now: its body and the reason of its first
/// x-death entry.
async fn drain(ch: &Channel, queue: &str) -> Vec<(String, String)> {
    let mut got = Vec::new();
    while let Some(m) = within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
    {
        let reason = m
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| match h.inner().get("x-death") {
                Some(AMQPValue::FieldArray(deaths)) => deaths.as_slice().first().cloned(),
                _ => None,
            })
            .and_then(|death| match death {
                AMQPValue::FieldTable(t) => match t.inner().get("reason") {
                    Some(AMQPValue::LongString(r)) => Some(r.to_string()),
                    _ => None,
                },
                _ => None,
            })
            .unwrap_or_default();
        got.push((
            String::from_utf8_lossy(&m.delivery.data).into_owned(),
            reason,
        ));
    }
    got
}

fn expired(body: &str) -> (String, String) {
    (body.to_owned(), "expired".to_owned())
}

#[tokio::test(start_paused = true)]
async fn messages_expire_at_their_ttl_to_the_second_and_are_dead_lettered() {
    hold_clock();
    let site = Site::new();
    let gw = site.gateway().await;
    let conn = gw.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let (queue, dead) = ("fast-ttl", "fast-ttl-dead");
    declare(&ch, dead, FieldTable::default()).await;
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(60_000));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dead.into()),
    );
    declare(&ch, queue, args).await;
    // The first has a shorter expiration of its own; the queue's minute
    // holds for the second.
    let short = BasicProperties::default().with_expiration("20000".into());
    publish_confirmed(&ch, queue, "twenty seconds", short).await;
    publish_confirmed(&ch, queue, "a minute", BasicProperties::default()).await;

    pass(Duration::from_secs(19)).await;
    assert_eq!(drain(&ch, dead).await, vec![], "nothing expired at 19 s");
    pass(Duration::from_secs(2)).await;
    assert_eq!(drain(&ch, dead).await, vec![expired("twenty seconds")]);
    pass(Duration::from_secs(38)).await;
    assert_eq!(
        drain(&ch, dead).await,
        vec![],
        "the minute is not up at 59 s"
    );
    pass(Duration::from_secs(2)).await;
    assert_eq!(drain(&ch, dead).await, vec![expired("a minute")]);
    assert_eq!(drain(&ch, queue).await, vec![], "the queue is empty");
}
