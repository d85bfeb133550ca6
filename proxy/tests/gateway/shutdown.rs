//! Graceful shutdown: on SIGTERM every client is closed with 320 once its
//! confirms are out, nothing confirmed is lost, what was acked is not
//! delivered again, unacked messages come back and exclusive queues go.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lapin::options::{
    BasicAckOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::BasicProperties;

use crate::consume::{body, consume, next};
use crate::harness::{free_port, unique, GatewayProcess};
use crate::raw::Raw;
use crate::reply_code;

#[tokio::test]
async fn sigterm_closes_clients_with_320_and_loses_nothing_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta.db");
    let mut first = GatewayProcess::start(free_port(), &meta);
    let conn = first.connect().await;
    // A bystander on the raw protocol, to read the close frame itself.
    let mut raw = Raw::open(([127, 0, 0, 1], first.port).into(), 0).await;
    let (q, own) = (unique("shutdown"), unique("shutdown-exclusive"));
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (name, exclusive) in [(&q, false), (&own, true)] {
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: !exclusive,
                exclusive,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    // A publisher that keeps going until the gateway closes it, counting
    // the confirms it got.
    let publisher = {
        let (ch, q) = (ch.clone(), q.clone());
        tokio::spawn(async move {
            let mut confirmed = Vec::new();
            for i in 0.. {
                let body = format!("{i:06}");
                let Ok(confirm) = ch
                    .basic_publish(
                        "".into(),
                        q.as_str().into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                else {
                    break;
                };
                match confirm.await {
                    Ok(c) if c.is_ack() => confirmed.push(body),
                    _ => break,
                }
            }
            confirmed
        })
    };
    // A consumer that acks some and holds the rest unacked.
    let cc = conn.create_channel().await.unwrap();
    cc.basic_qos(20, BasicQosOptions::default()).await.unwrap();
    let mut consumer = consume(&cc, &q, "before").await;
    let mut acked = Vec::new();
    for _ in 0..30 {
        let d = next(&mut consumer, Duration::from_secs(5))
            .await
            .expect("deliveries before the shutdown");
        acked.push(body(&d));
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let term = std::process::Command::new("kill")
        .args(["-TERM", &first.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let confirmed = tokio::time::timeout(Duration::from_secs(20), publisher)
        .await
        .expect("the publisher was stopped")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = first.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the gateway exits after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "a graceful exit: {status:?}");
    assert_eq!(raw.connection_close_code().await, 320, "CONNECTION_FORCED");

    // Everything confirmed is there once, except what was acked.
    let second = GatewayProcess::start(free_port(), &meta);
    let conn = second.connect().await;
    let check = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let gone = check
        .queue_declare(own.as_str().into(), passive, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&gone), Some(404), "the exclusive queue went");
    let cc = conn.create_channel().await.unwrap();
    cc.basic_qos(500, BasicQosOptions::default()).await.unwrap();
    let mut consumer = consume(&cc, &q, "after").await;
    let mut seen: HashMap<String, u32> = acked.iter().map(|b| (b.clone(), 1)).collect();
    while let Some(d) = next(&mut consumer, Duration::from_secs(3)).await {
        *seen.entry(body(&d)).or_default() += 1;
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    let missing: Vec<&String> = confirmed
        .iter()
        .filter(|b| !seen.contains_key(*b))
        .collect();
    let twice: Vec<(&String, &u32)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "{} confirmed before SIGTERM, {} acked; after: {} missing, {} delivered twice",
        confirmed.len(),
        acked.len(),
        missing.len(),
        twice.len()
    );
    assert!(missing.is_empty(), "confirmed but lost: {missing:?}");
    // kill -9 redelivers what was acked in the last commit interval; a
    // graceful stop commits it first.
    assert!(twice.is_empty(), "acked but delivered again: {twice:?}");
}
