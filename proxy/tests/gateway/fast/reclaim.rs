//! A deleted queue's storage is deleted from the upstream after queue.delete
//! is answered (registry/reclaim.rs): explicitly deleted, and auto-deleted
//! with its last consumer.

use lapin::options::{BasicCancelOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use super::{hold_clock, pass, within, Site};

#[tokio::test(start_paused = true)]
async fn deleted_queues_leave_the_upstream() {
    hold_clock();
    let site = Site::new();
    let gateway = site.gateway().await;
    let conn = gateway.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let holding = |name: &str| {
        site.null
            .topic_names()
            .into_iter()
            .filter(|t| t.contains(name))
            .count()
    };

    within(ch.queue_declare(
        "reclaimed".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    assert_eq!(holding("reclaimed"), 1, "declared: its topic exists");
    within(ch.queue_delete("reclaimed".into(), Default::default()))
        .await
        .unwrap();

    let auto_delete = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    within(ch.queue_declare("reclaimed-auto".into(), auto_delete, FieldTable::default()))
        .await
        .unwrap();
    let consumer = within(ch.basic_consume(
        "reclaimed-auto".into(),
        "c".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    within(ch.basic_cancel(consumer.tag(), BasicCancelOptions::default()))
        .await
        .unwrap();

    pass(std::time::Duration::from_millis(200)).await;
    assert_eq!(holding("reclaimed"), 0, "both topics deleted");
}
