//! The consume path against a real RocketMQ: round-robin, prefetch, acks in
//! any order, requeue, redelivery when a consumer goes, basic.get,
//! dead-lettering, and a gateway killed with -9 in the middle of consuming.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicQosOptions, BasicRecoverOptions, BasicRejectOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Consumer};

use crate::harness::{free_port, unique, GatewayProcess, TestGateway};
use crate::publish::{message_count, message_count_expecting, publish_all};
use crate::reply_code;

/// A confirm-mode channel with a fresh queue of that name declared.
pub async fn queue_with_channel(conn: &lapin::Connection, name: &str, args: FieldTable) -> Channel {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(name.into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    ch
}

/// Publishes `n` messages "0".."n-1" to the queue through the default exchange.
pub async fn fill(ch: &Channel, queue: &str, n: usize) {
    let bodies: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    publish_all(
        ch,
        bodies
            .iter()
            .map(|b| ("", queue, b.as_bytes(), BasicProperties::default())),
    )
    .await;
}

/// A fresh queue declared on `ch`, for a consumer that only watches the channel.
async fn unique_queue_on(ch: &Channel) -> String {
    let q = unique("watch");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    q
}

pub async fn consume(ch: &Channel, queue: &str, tag: &str) -> Consumer {
    ch.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("basic.consume")
}

/// The next delivery within `wait`, or None.
pub async fn next(consumer: &mut Consumer, wait: Duration) -> Option<lapin::message::Delivery> {
    match tokio::time::timeout(wait, consumer.next()).await {
        Ok(Some(Ok(d))) => Some(d),
        Ok(Some(Err(e))) => panic!("consumer error: {e}"),
        Ok(None) | Err(_) => None,
    }
}

/// The reply code a channel was closed with, as its consumer reports it
/// (a follow-up method could race with the close and see only a state error).
async fn closed_with(consumer: &mut Consumer) -> Option<u16> {
    loop {
        match tokio::time::timeout(SOON, consumer.next()).await {
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return reply_code(&e),
            Ok(None) | Err(_) => return None,
        }
    }
}

pub fn body(d: &lapin::message::Delivery) -> String {
    String::from_utf8(d.data.clone()).unwrap()
}

const SOON: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(600);

#[tokio::test]
async fn two_consumers_share_a_queue_round_robin() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let q = unique("rr");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;
    let (ca, cb) = (
        conn.create_channel().await.unwrap(),
        conn.create_channel().await.unwrap(),
    );
    let mut a = consume(&ca, &q, "a").await;
    let mut b = consume(&cb, &q, "b").await;
    fill(&ch, &q, 20).await;
    let mut seen = HashMap::new();
    let mut per = [0usize; 2];
    for _ in 0..20 {
        tokio::select! {
            Some(Ok(d)) = a.next() => { per[0] += 1; *seen.entry(body(&d)).or_insert(0) += 1; d.acker.ack(BasicAckOptions::default()).await.unwrap(); }
            Some(Ok(d)) = b.next() => { per[1] += 1; *seen.entry(body(&d)).or_insert(0) += 1; d.acker.ack(BasicAckOptions::default()).await.unwrap(); }
            _ = tokio::time::sleep(SOON) => panic!("deliveries stopped after {per:?}"),
        }
    }
    assert_eq!(seen.len(), 20, "every message delivered");
    assert!(seen.values().all(|&n| n == 1), "none twice: {seen:?}");
    assert_eq!(per, [10, 10], "round-robin");
    assert!(next(&mut a, QUIET).await.is_none());
}

#[tokio::test]
async fn prefetch_is_never_exceeded_and_acks_let_more_through() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let q = unique("prefetch");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;
    fill(&ch, &q, 30).await;
    let cc = conn.create_channel().await.unwrap();
    cc.basic_qos(3, BasicQosOptions::default()).await.unwrap();
    let mut c = consume(&cc, &q, "c").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(next(&mut c, SOON).await.expect("within prefetch"));
    }
    assert!(
        next(&mut c, QUIET).await.is_none(),
        "a 4th delivery with 3 unacked and prefetch 3"
    );
    // Acks in any order: the middle one first.
    held.remove(1)
        .acker
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    let fourth = next(&mut c, SOON)
        .await
        .expect("one ack lets one more through");
    held.push(fourth);
    assert!(next(&mut c, QUIET).await.is_none(), "still 3 unacked");
    // Drain the rest acking each: never more than 3 outstanding.
    let mut got = held.len() + 1;
    for d in held.drain(..) {
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    while got < 30 {
        let d = next(&mut c, SOON).await.expect("the rest flows");
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        got += 1;
    }
    assert_eq!(message_count_expecting(&ch, &q, Some(0)).await, 0);
}

#[tokio::test]
async fn global_qos_limits_the_channel_across_consumers() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let (q1, q2) = (unique("gq1"), unique("gq2"));
    let ch = queue_with_channel(&conn, &q1, FieldTable::default()).await;
    ch.queue_declare(
        q2.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    fill(&ch, &q1, 5).await;
    fill(&ch, &q2, 5).await;
    let cc = conn.create_channel().await.unwrap();
    cc.basic_qos(4, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut c1 = consume(&cc, &q1, "c1").await;
    let mut c2 = consume(&cc, &q2, "c2").await;
    let mut held = Vec::new();
    loop {
        tokio::select! {
            Some(Ok(d)) = c1.next() => held.push(d),
            Some(Ok(d)) = c2.next() => held.push(d),
            _ = tokio::time::sleep(QUIET) => break,
        }
    }
    assert_eq!(held.len(), 4, "the channel's 4 shared by both consumers");
    held.pop()
        .unwrap()
        .acker
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    let more = tokio::select! {
        Some(Ok(d)) = c1.next() => Some(d),
        Some(Ok(d)) = c2.next() => Some(d),
        _ = tokio::time::sleep(SOON) => None,
    };
    assert!(
        more.is_some(),
        "an ack frees channel credit for either queue"
    );
}

#[tokio::test]
async fn ack_multiple_settles_everything_up_to_the_tag_and_nothing_comes_back() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let q = unique("ackmulti");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;
    fill(&ch, &q, 10).await;
    {
        let c2 = gw.connect().await;
        let cc = c2.create_channel().await.unwrap();
        cc.basic_qos(10, BasicQosOptions::default()).await.unwrap();
        let mut c = consume(&cc, &q, "c").await;
        let mut last = None;
        for _ in 0..10 {
            last = Some(next(&mut c, SOON).await.expect("delivery"));
        }
        let last = last.unwrap();
        cc.basic_ack(last.delivery_tag, BasicAckOptions { multiple: true })
            .await
            .unwrap();
        // Tag 10 again: already acked -> 406.
        cc.basic_ack(last.delivery_tag, BasicAckOptions::default())
            .await
            .unwrap();
        assert_eq!(closed_with(&mut c).await, Some(406), "double ack");
        c2.close(200, "bye".into()).await.unwrap();
    }
    // A new consumer gets nothing: every ack was kept.
    let cc = conn.create_channel().await.unwrap();
    let mut c = consume(&cc, &q, "again").await;
    assert!(
        next(&mut c, QUIET).await.is_none(),
        "acked messages came back"
    );
    assert_eq!(message_count_expecting(&ch, &q, Some(0)).await, 0);
}

#[tokio::test]
async fn nack_with_requeue_redelivers_promptly_to_the_other_consumer() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let q = unique("nack");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;
    let (ca, cb) = (
        conn.create_channel().await.unwrap(),
        conn.create_channel().await.unwrap(),
    );
    ca.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    cb.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut a = consume(&ca, &q, "a").await;
    let mut b = consume(&cb, &q, "b").await;
    fill(&ch, &q, 1).await;
    let (first, mut other) = tokio::select! {
        Some(Ok(d)) = a.next() => (d, b),
        Some(Ok(d)) = b.next() => (d, a),
        _ = tokio::time::sleep(SOON) => panic!("no delivery"),
    };
    assert!(!first.redelivered);
    let started = std::time::Instant::now();
    first
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await
        .unwrap();
    let again = next(&mut other, SOON)
        .await
        .expect("the other consumer gets the requeued message");
    let took = started.elapsed();
    assert_eq!(body(&again), "0");
    assert!(again.redelivered, "redelivered flag");
    assert!(took < Duration::from_secs(1), "requeue took {took:?}");
    again.acker.ack(BasicAckOptions::default()).await.unwrap();
    eprintln!("requeue round trip: {took:?}");
}

#[tokio::test]
async fn unacked_messages_of_a_closed_connection_go_to_another_consumer() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let q = unique("killed");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;
    fill(&ch, &q, 5).await;
    let doomed = gw.connect().await;
    let dc = doomed.create_channel().await.unwrap();
    let mut d = consume(&dc, &q, "doomed").await;
    for _ in 0..5 {
        next(&mut d, SOON).await.expect("delivery before the kill");
    }
    assert_eq!(
        message_count(&ch, &q).await,
        0,
        "all 5 are unacked, none ready"
    );
    doomed.close(320, "consumer killed".into()).await.unwrap();
    let cc = conn.create_channel().await.unwrap();
    let mut c = consume(&cc, &q, "heir").await;
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let m = next(&mut c, SOON).await.expect("redelivered");
        assert!(m.redelivered, "redelivered=true");
        bodies.push(body(&m));
        m.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    bodies.sort();
    assert_eq!(bodies, ["0", "1", "2", "3", "4"]);
}

#[tokio::test]
async fn recover_requeues_every_unacked_message() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let q = unique("recover");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;
    fill(&ch, &q, 3).await;
    let cc = conn.create_channel().await.unwrap();
    let mut c = consume(&cc, &q, "c").await;
    for _ in 0..3 {
        assert!(
            !next(&mut c, SOON)
                .await
                .expect("first delivery")
                .redelivered
        );
    }
    cc.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
    for _ in 0..3 {
        let d = next(&mut c, SOON).await.expect("recovered");
        assert!(d.redelivered);
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert!(next(&mut c, QUIET).await.is_none());
}

#[tokio::test]
async fn basic_get_on_an_empty_and_a_full_queue() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let q = unique("get");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;
    let empty = ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap();
    assert!(empty.is_none(), "get-empty on an empty queue");
    fill(&ch, &q, 3).await;
    // RocketMQ indexes a stored message a moment after confirming it.
    assert_eq!(message_count_expecting(&ch, &q, Some(3)).await, 3);
    let mut got = None;
    for _ in 0..40 {
        got = ch
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap();
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = got.expect("get-ok on a full queue");
    assert_eq!(body(&got.delivery), "0");
    assert_eq!(got.message_count, 2, "two left");
    got.delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    let second = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("second");
    assert_eq!(
        (body(&second.delivery).as_str(), second.message_count),
        ("1", 1)
    );
    let third = ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("third");
    // Rejected with requeue: it comes back, redelivered.
    third
        .delivery
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    let again = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("requeued message");
    assert_eq!(body(&again.delivery), "2");
    assert!(again.delivery.redelivered);
    assert!(ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());
    assert_eq!(message_count_expecting(&ch, &q, Some(0)).await, 0);
}

#[tokio::test]
async fn counts_stay_exact_while_consumers_hold_messages_and_purge_keeps_unacked() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let q = unique("counts");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;
    fill(&ch, &q, 10).await;
    let cc = conn.create_channel().await.unwrap();
    cc.basic_qos(4, BasicQosOptions::default()).await.unwrap();
    let mut c = consume(&cc, &q, "c").await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(next(&mut c, SOON).await.expect("delivery"));
    }
    let ok = ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!((ok.message_count(), ok.consumer_count()), (6, 1));
    let purged = ch
        .queue_purge(q.as_str().into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    assert_eq!(purged, 6, "purge removes the ready messages only");
    // The unacked 4 survive the purge: nacked, they come back.
    cc.basic_nack(
        0,
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    )
    .await
    .unwrap();
    held.clear();
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let d = next(&mut c, SOON).await.expect("requeued after purge");
        assert!(d.redelivered);
        bodies.push(body(&d));
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    bodies.sort();
    assert_eq!(bodies, ["0", "1", "2", "3"]);
    assert!(next(&mut c, QUIET).await.is_none(), "purged ones stay gone");
    assert_eq!(message_count_expecting(&ch, &q, Some(0)).await, 0);
}

#[tokio::test]
async fn rejected_messages_are_dead_lettered_with_x_death() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let (work, dlx, dlq) = (unique("work"), unique("dlx"), unique("dlq"));
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.exchange_declare(
        dlx.as_str().into(),
        lapin::ExchangeKind::Direct,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        dlq.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        dlq.as_str().into(),
        dlx.as_str().into(),
        "dead".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dlx.as_str().into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString("dead".into()),
    );
    ch.queue_declare(work.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    let mut headers = FieldTable::default();
    headers.insert("kept".into(), AMQPValue::LongString("yes".into()));
    publish_all(
        &ch,
        [(
            "",
            work.as_str(),
            &b"poison"[..],
            BasicProperties::default()
                .with_headers(headers)
                .with_content_type("text/plain".into()),
        )],
    )
    .await;
    let cc = conn.create_channel().await.unwrap();
    let mut c = consume(&cc, &work, "w").await;
    let d = next(&mut c, SOON).await.expect("delivery");
    d.acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let mut dead = None;
    for _ in 0..60 {
        dead = ch
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        if dead.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = dead
        .expect("the rejected message reached the dead-letter queue")
        .delivery;
    assert_eq!(dead.data, b"poison");
    assert_eq!(
        (dead.exchange.as_str(), dead.routing_key.as_str()),
        (dlx.as_str(), "dead")
    );
    let headers = dead.properties.headers().clone().expect("headers");
    let h = headers.inner();
    assert_eq!(h.get("kept"), Some(&AMQPValue::LongString("yes".into())));
    let Some(AMQPValue::FieldArray(deaths)) = h.get("x-death") else {
        panic!("no x-death: {h:?}");
    };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
        panic!("x-death entry: {deaths:?}");
    };
    let death = death.inner();
    assert_eq!(death.get("count"), Some(&AMQPValue::LongLongInt(1)));
    assert_eq!(
        death.get("reason"),
        Some(&AMQPValue::LongString("rejected".into()))
    );
    assert_eq!(
        death.get("queue"),
        Some(&AMQPValue::LongString(work.as_str().into()))
    );
    assert_eq!(
        death.get("exchange"),
        Some(&AMQPValue::LongString("".into()))
    );
    assert_eq!(
        dead.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("text/plain")
    );
    // The original is gone from the work queue.
    assert!(next(&mut c, QUIET).await.is_none());
    assert_eq!(message_count_expecting(&ch, &work, Some(0)).await, 0);
}

#[tokio::test]
async fn exclusive_consumer_and_unknown_tags_are_refused() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let q = unique("excl");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;
    let first = conn.create_channel().await.unwrap();
    // (lapin cancels a consumer when its Consumer is dropped: keep it.)
    let _only = first
        .basic_consume(
            q.as_str().into(),
            "only".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let second = conn.create_channel().await.unwrap();
    let refused = second
        .basic_consume(
            q.as_str().into(),
            "another".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("a second consumer on an exclusively consumed queue");
    assert_eq!(reply_code(&refused), Some(403));
    // An unknown delivery tag: 406.
    let mut watch = consume(&ch, &unique_queue_on(&ch).await, "watch").await;
    ch.basic_ack(42, BasicAckOptions::default()).await.unwrap();
    assert_eq!(closed_with(&mut watch).await, Some(406), "unknown tag");
    // Once the exclusive consumer is cancelled, others may consume.
    first
        .basic_cancel("only".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    let third = conn.create_channel().await.unwrap();
    consume(&third, &q, "now").await;
}

#[tokio::test]
async fn deleting_a_queue_cancels_its_consumers_and_auto_delete_goes_with_the_last() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let q = unique("gone");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;
    let cc = conn.create_channel().await.unwrap();
    let mut c = consume(&cc, &q, "c").await;
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let ended = tokio::time::timeout(SOON, c.next()).await;
    assert!(
        matches!(ended, Ok(None)),
        "the consumer is cancelled by the server (consumer_cancel_notify): {ended:?}"
    );

    let auto = unique("auto");
    ch.queue_declare(
        auto.as_str().into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let c1 = conn.create_channel().await.unwrap();
    let c2 = conn.create_channel().await.unwrap();
    let _one = consume(&c1, &auto, "one").await;
    let _two = consume(&c2, &auto, "two").await;
    c1.basic_cancel("one".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    assert!(
        gw.gateway
            .topology
            .vhost("/")
            .unwrap()
            .read()
            .queues
            .contains_key(&auto),
        "one consumer left: the queue stays"
    );
    c2.close(200, "done".into()).await.unwrap();
    let mut gone = false;
    for _ in 0..40 {
        if !gw
            .gateway
            .topology
            .vhost("/")
            .unwrap()
            .read()
            .queues
            .contains_key(&auto)
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "auto-delete queue deleted with its last consumer");
}

#[tokio::test]
async fn a_gateway_killed_while_consuming_loses_nothing() {
    const TOTAL: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta.db");
    let port = free_port();
    let mut first = GatewayProcess::start(port, &meta);
    let conn = first.connect().await;
    let q = unique("kill9");
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let bodies: Vec<String> = (0..TOTAL).map(|i| format!("{i:05}")).collect();
    let props = BasicProperties::default().with_delivery_mode(2);
    publish_all(
        &ch,
        bodies
            .iter()
            .map(|b| ("", q.as_str(), b.as_bytes(), props.clone())),
    )
    .await;

    let mut seen: HashMap<String, u32> = HashMap::new();
    let cc = conn.create_channel().await.unwrap();
    cc.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut c = consume(&cc, &q, "before").await;
    while seen.len() < TOTAL * 2 / 5 {
        let d = next(&mut c, SOON)
            .await
            .expect("deliveries before the kill");
        *seen.entry(body(&d)).or_default() += 1;
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    // Mid-stream, with up to 100 unacked and acks in flight.
    first.child.kill().expect("kill -9");
    first.child.wait().unwrap();
    let before = seen.len();

    let second = GatewayProcess::start(port, &meta);
    let conn = second.connect().await;
    // It listens where the killed one did: the killed one's read leases
    // were dropped before it served anyone, not left to lapse
    // (Gateway::take_seat).
    let store = meta::Store::open(&format!("sqlite:{}", meta.display()))
        .await
        .unwrap();
    let topic = store.queue("/", &q).await.unwrap().unwrap().topic;
    let holders = store.lease_holders(&topic).await.unwrap();
    assert!(
        holders.is_empty(),
        "the killed gateway's leases: {holders:?}"
    );
    let cc = conn.create_channel().await.unwrap();
    cc.basic_qos(500, BasicQosOptions::default()).await.unwrap();
    let mut c = consume(&cc, &q, "after").await;
    while seen.len() < TOTAL {
        let Some(d) = next(&mut c, Duration::from_secs(10)).await else {
            break;
        };
        *seen.entry(body(&d)).or_default() += 1;
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 after {before} distinct: {} of {TOTAL} consumed at least once, {duplicates} delivered twice",
        seen.len()
    );
    assert_eq!(seen.len(), TOTAL, "every confirmed message was consumed");
    // Delivered twice: the unacked (prefetch 100) and what was acked in the
    // last commit interval (50 ms, a few hundred at this rate), not more.
    assert!(
        duplicates <= 100 + 1_500,
        "duplicates are bounded by what was unacked or not yet committed: {duplicates}"
    );
}

#[tokio::test]
async fn consumers_on_two_gateways_share_a_queue_and_take_over_from_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let meta = format!("sqlite:{}", dir.path().join("shared-meta.db").display());
    let a = TestGateway::start_with(|c| {
        c.meta_url = meta.clone();
        c.queues_per_topic = 4;
    })
    .await;
    let q = unique("shared");
    let conn_a = a.connect().await;
    let ch = conn_a.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    // B shares A's store (an SQLite file here; PostgreSQL across hosts).
    let b = TestGateway::start_with(|c| c.meta_url = meta.clone()).await;
    let conn_b = b.connect().await;
    let (cha, chb) = (
        conn_a.create_channel().await.unwrap(),
        conn_b.create_channel().await.unwrap(),
    );
    cha.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    chb.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let mut ca = consume(&cha, &q, "on-a").await;
    let mut cb = consume(&chb, &q, "on-b").await;
    // Lease rounds run every second: A first takes all 4 message queues,
    // then gives B its half. Wait until the store shows two each.
    let topic = a.gateway.topology.vhost("/").unwrap().read().queues[q.as_str()]
        .record
        .topic
        .clone();
    let mut holders = Vec::new();
    for _ in 0..100 {
        holders = a.gateway.store.lease_holders(&topic).await.unwrap();
        let by_a = holders
            .iter()
            .filter(|h| h.1 == a.gateway.instance_id)
            .count();
        let by_b = holders
            .iter()
            .filter(|h| h.1 == b.gateway.instance_id)
            .count();
        if (by_a, by_b) == (2, 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("leases: {holders:?}");

    // One at a time: the gateway batches what arrives while a send is in
    // flight, and a batch goes to one message queue; single sends are spread
    // round-robin over the four.
    for i in 0..400 {
        publish_all(
            &ch,
            [(
                "",
                q.as_str(),
                i.to_string().as_bytes(),
                BasicProperties::default(),
            )],
        )
        .await;
    }
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut per = [0usize; 2];
    while seen.len() < 400 {
        tokio::select! {
            Some(Ok(d)) = ca.next() => { per[0] += 1; *seen.entry(body(&d)).or_default() += 1; d.acker.ack(BasicAckOptions::default()).await.unwrap(); }
            Some(Ok(d)) = cb.next() => { per[1] += 1; *seen.entry(body(&d)).or_default() += 1; d.acker.ack(BasicAckOptions::default()).await.unwrap(); }
            _ = tokio::time::sleep(Duration::from_secs(10)) => break,
        }
    }
    eprintln!("two gateways: {per:?} of 400");
    assert_eq!(seen.len(), 400, "every message delivered");
    assert!(
        seen.values().all(|&n| n == 1),
        "none delivered by both gateways"
    );
    assert!(
        per[0] >= 100 && per[1] >= 100,
        "both gateways' consumers share the queue: {per:?}"
    );

    // B's consumer goes: A takes B's share over and gets everything.
    conn_b.close(200, "bye".into()).await.unwrap();
    fill(&ch, &q, 100).await;
    let mut after = 0;
    while after < 100 {
        let d = next(&mut ca, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("A took over B's share: {after} of 100"));
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        after += 1;
    }
}

#[tokio::test]
async fn channel_flow_pauses_and_resumes_deliveries() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let q = unique("flow");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;
    let cc = conn.create_channel().await.unwrap();
    let mut c = consume(&cc, &q, "c").await;
    cc.channel_flow(lapin::options::ChannelFlowOptions { active: false })
        .await
        .unwrap();
    fill(&ch, &q, 3).await;
    assert!(
        next(&mut c, QUIET).await.is_none(),
        "paused by channel.flow"
    );
    cc.channel_flow(lapin::options::ChannelFlowOptions { active: true })
        .await
        .unwrap();
    for _ in 0..3 {
        let d = next(&mut c, SOON).await.expect("resumed");
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
}

#[tokio::test]
async fn no_ack_consumer_with_a_server_named_tag_and_rejects_without_dlx_drop() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let q = unique("noack");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;
    fill(&ch, &q, 50).await;
    let cc = conn.create_channel().await.unwrap();
    let mut c = cc
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
    assert!(c.tag().as_str().starts_with("amq.ctag-"), "{}", c.tag());
    for i in 0..50 {
        let d = next(&mut c, SOON).await.expect("no-ack delivery");
        assert_eq!(body(&d), i.to_string(), "one queue keeps FIFO order");
    }
    cc.close(200, "done".into()).await.unwrap();
    // No-ack deliveries are settled when sent: nothing comes back.
    let again = conn.create_channel().await.unwrap();
    let mut c = consume(&again, &q, "again").await;
    assert!(next(&mut c, QUIET).await.is_none());

    // Rejected without requeue and without a dead-letter exchange: dropped.
    fill(&ch, &q, 1).await;
    let d = next(&mut c, SOON).await.expect("delivery");
    d.acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    assert!(
        next(&mut c, QUIET).await.is_none(),
        "a dropped message came back"
    );
    assert_eq!(message_count_expecting(&ch, &q, Some(0)).await, 0);
}

#[tokio::test]
async fn get_after_the_last_consumer_left_takes_the_queue_again() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let q = unique("getafter");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;
    let cc = conn.create_channel().await.unwrap();
    let c = consume(&cc, &q, "c").await;
    cc.basic_cancel(c.tag(), BasicCancelOptions::default())
        .await
        .unwrap();
    // Let a lease round give the queue back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fill(&ch, &q, 1).await;
    assert_eq!(message_count_expecting(&ch, &q, Some(1)).await, 1);
    let got = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(got.is_some(), "basic.get on an idle queue read by no one");
}

#[tokio::test]
async fn dead_lettering_through_the_default_exchange_reaches_the_named_queue() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let (work, dlq) = (unique("work"), unique("dlq"));
    let ch = queue_with_channel(&conn, &dlq, FieldTable::default()).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dlq.as_str().into()),
    );
    ch.queue_declare(work.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    fill(&ch, &work, 2).await;
    let cc = conn.create_channel().await.unwrap();
    let mut c = consume(&cc, &work, "w").await;
    let _first = next(&mut c, SOON).await.expect("first");
    let second = next(&mut c, SOON).await.expect("second");
    // nack multiple without requeue: both die.
    cc.basic_nack(
        second.delivery_tag,
        BasicNackOptions {
            multiple: true,
            requeue: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(message_count_expecting(&ch, &dlq, Some(2)).await, 2);
}
