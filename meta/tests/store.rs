//! The SQLite store, on a real file.

use meta::{password, Binding, DestinationKind, Exchange, Queue, Store};

async fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("meta.db").display());
    let store = Store::open(&url).await.unwrap();
    store.bootstrap_defaults("v_default").await.unwrap();
    (dir, store)
}

#[tokio::test]
async fn bootstrap_creates_guest_and_default_vhost_once() {
    let (dir, store) = fresh().await;
    store.bootstrap_defaults("v_default").await.unwrap();
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.vhosts.len(), 1);
    assert_eq!(snap.vhosts[0].name, "/");
    assert_eq!(snap.users.len(), 1);
    assert!(snap.users[0].loopback_only);
    assert!(password::verify_password(
        &snap.users[0].password_hash,
        "guest"
    ));
    assert_eq!(snap.permissions.len(), 1);
    drop(store);
    // Reopening the same file keeps everything and migrates nothing twice.
    let url = format!("sqlite:{}", dir.path().join("meta.db").display());
    let again = Store::open(&url).await.unwrap();
    assert_eq!(again.snapshot().await.unwrap().users.len(), 1);
}

#[tokio::test]
async fn deleting_a_queue_removes_its_bindings_and_bumps_the_revision() {
    let (_dir, store) = fresh().await;
    let before = store.revision().await.unwrap();
    store
        .put_exchange(&Exchange {
            vhost: "/".into(),
            name: "logs".into(),
            kind: "topic".into(),
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: vec![],
        })
        .await
        .unwrap();
    store
        .put_queue(&Queue {
            vhost: "/".into(),
            name: "q1".into(),
            durable: true,
            auto_delete: false,
            exclusive_owner: None,
            arguments: vec![],
            topic: "t_q1".into(),
            group: "g_q1".into(),
        })
        .await
        .unwrap();
    let binding = Binding {
        vhost: "/".into(),
        source: "logs".into(),
        destination: "q1".into(),
        destination_kind: DestinationKind::Queue,
        routing_key: "a.#".into(),
        arguments: vec![],
    };
    store.put_binding(&binding).await.unwrap();
    store.put_binding(&binding).await.unwrap();
    assert_eq!(store.snapshot().await.unwrap().bindings.len(), 1);
    store.delete_queue("/", "q1").await.unwrap();
    let snap = store.snapshot().await.unwrap();
    assert!(snap.queues.is_empty());
    assert!(snap.bindings.is_empty());
    assert!(snap.revision >= before + 4);
    assert!(!store.delete_binding(&binding).await.unwrap());
}

#[tokio::test]
async fn a_lease_is_held_by_one_owner_until_released_or_expired() {
    let (_dir, store) = fresh().await;
    let (t, now, ttl) = ("topic-a", 1_000_000, 5_000);
    assert!(store.try_lease(t, 0, "a", now, ttl).await.unwrap());
    assert!(
        !store.try_lease(t, 0, "b", now + 1, ttl).await.unwrap(),
        "held by a"
    );
    assert!(
        store.try_lease(t, 0, "a", now + 2, ttl).await.unwrap(),
        "a renews"
    );
    assert!(
        store.try_lease(t, 1, "b", now, ttl).await.unwrap(),
        "another queue id"
    );
    // a stops renewing: after the TTL, b may take it.
    assert!(!store.try_lease(t, 0, "b", now + ttl, ttl).await.unwrap());
    assert!(store
        .try_lease(t, 0, "b", now + ttl + 3, ttl)
        .await
        .unwrap());
    store.release_lease(t, 0, "a").await.unwrap();
    assert!(
        !store
            .try_lease(t, 0, "a", now + ttl + 4, ttl)
            .await
            .unwrap(),
        "a's release did not free b's lease"
    );
    store.release_lease(t, 0, "b").await.unwrap();
    assert!(store
        .try_lease(t, 0, "a", now + ttl + 5, ttl)
        .await
        .unwrap());

    store.announce_reader(t, "b", now, ttl).await.unwrap();
    store.announce_reader(t, "a", now, 10).await.unwrap();
    assert_eq!(store.readers(t, now).await.unwrap(), ["a", "b"]);
    assert_eq!(
        store.readers(t, now + 11).await.unwrap(),
        ["b"],
        "a's announcement lapsed"
    );
    store.withdraw_reader(t, "b").await.unwrap();
    assert!(store.readers(t, now).await.unwrap() == ["a"]);
    store.forget_topic(t).await.unwrap();
    assert!(store.readers(t, now).await.unwrap().is_empty());
    assert!(
        store.try_lease(t, 1, "c", now, ttl).await.unwrap(),
        "leases forgotten"
    );
}
