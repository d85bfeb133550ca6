//! Shutdown on the held clock: a gateway told to stop closes its clients
//! with 320, requeues what they held unacked and gives its read leases
//! back, so another gateway delivers the queue at once. No tokio time
//! passes in the whole test: a lease left to lapse would make it fail.
//! (The three held unacked come back with redelivered=false: the next
//! reader reads from the committed offset and cannot know; docs/mapping.md.)

use std::collections::HashMap;
use std::time::Duration;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{connection, AMQPClass};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use super::{hold_clock, within, within_real, Site};
use crate::raw::Raw;

async fn consumer(ch: &Channel, queue: &str, prefetch: u16) -> lapin::Consumer {
    within(ch.basic_qos(prefetch, BasicQosOptions::default()))
        .await
        .unwrap();
    within(ch.basic_consume(
        queue.into(),
        "fast".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_gateway_shut_down_hands_its_queue_to_another_at_once_with_nothing_lost() {
    hold_clock();
    let site = Site::new();
    let mut first = site.gateway().await;
    let second = site.gateway().await;
    let queue = "fast-handover";

    let conn = first.connect().await;
    let mut raw = Raw::open(first.addr, 0).await;
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    within(ch.queue_declare(queue.into(), durable, FieldTable::default()))
        .await
        .unwrap();
    for i in 0..20 {
        let confirm = within(ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            format!("m{i:02}").as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        ))
        .await
        .unwrap();
        assert!(within(confirm).await.unwrap().is_ack());
    }
    // Two acked, three held unacked through the first gateway.
    let cc = within(conn.create_channel()).await.unwrap();
    let mut held = consumer(&cc, queue, 5).await;
    let mut acked = Vec::new();
    for n in 0..5 {
        let d = within(held.next()).await.unwrap().unwrap();
        if n < 2 {
            within(d.acker.ack(BasicAckOptions::default()))
                .await
                .unwrap();
            acked.push(String::from_utf8(d.data).unwrap());
        }
    }

    first.shut_down();
    assert_eq!(within(raw.connection_close_code()).await, 320);
    within(raw.send(AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
    )))
    .await;
    within(async {
        while !first.stopped() {
            tokio::task::yield_now().await;
        }
    })
    .await;

    let conn = second.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let mut consumer = consumer(&ch, queue, 100).await;
    // Until nothing more comes for half a second of real time.
    let mut seen: HashMap<String, u32> = HashMap::new();
    while let Some(Some(Ok(d))) = within_real(Duration::from_millis(500), consumer.next()).await {
        *seen
            .entry(String::from_utf8(d.data.clone()).unwrap())
            .or_default() += 1;
        within(d.acker.ack(BasicAckOptions::default()))
            .await
            .unwrap();
    }
    let expected: Vec<String> = (0..20)
        .map(|i| format!("m{i:02}"))
        .filter(|b| !acked.contains(b))
        .collect();
    let mut bodies: Vec<&String> = seen.keys().collect();
    bodies.sort();
    assert_eq!(
        bodies,
        expected.iter().collect::<Vec<_>>(),
        "all but the acked"
    );
    assert!(seen.values().all(|n| *n == 1), "each once: {seen:?}");
}
