//! A gateway whose revision the change log was pruned past (it was away, or
//! slow, while the others changed more than the log keeps) reads the whole
//! topology again: what was declared meanwhile is there, what was deleted
//! meanwhile is gone.

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

use super::{hold_clock, pass, within, Site};

#[tokio::test(start_paused = true)]
async fn a_gateway_behind_a_pruned_change_log_reads_the_topology_again() {
    hold_clock();
    let site = Site::new();
    let first = site.gateway().await;
    let second = site.gateway().await;
    let on_first = within(first.connect()).await;
    let ch = within(on_first.create_channel()).await.unwrap();
    let declare = |name: &'static str| {
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
    };
    within(declare("pruned-old")).await.unwrap();
    pass(std::time::Duration::from_millis(300)).await;

    // The second gateway knows "pruned-old". Now, while it does not look
    // (the clock is held), the first deletes it and declares another, and
    // the log keeps only the newest change.
    within(ch.queue_delete("pruned-old".into(), QueueDeleteOptions::default()))
        .await
        .unwrap();
    within(declare("pruned-new")).await.unwrap();
    within(declare("pruned-newest")).await.unwrap();
    let store = within(meta::Store::open(&site.meta_url)).await.unwrap();
    assert!(within(store.prune_changes(1)).await.unwrap() > 0);
    pass(std::time::Duration::from_millis(300)).await;

    let on_second = within(second.connect()).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    for name in ["pruned-new", "pruned-newest"] {
        let ch2 = within(on_second.create_channel()).await.unwrap();
        within(ch2.queue_declare(name.into(), passive, FieldTable::default()))
            .await
            .unwrap_or_else(|e| panic!("{name} declared while the second gateway was behind: {e}"));
    }
    let ch2 = within(on_second.create_channel()).await.unwrap();
    let gone = within(ch2.queue_declare("pruned-old".into(), passive, FieldTable::default())).await;
    assert_eq!(
        gone.as_ref().err().and_then(crate::reply_code),
        Some(404),
        "deleted while the second gateway was behind: {gone:?}"
    );
}
