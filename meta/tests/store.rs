//! The store on both backends: SQLite on a real file, and a real PostgreSQL
//! (Debian's, started by deploy/postgres/start.sh on port 15432, one fresh
//! database per test). Every test runs against each.

use std::sync::OnceLock;

use meta::{password, Binding, ChangeKind, DestinationKind, Exchange, Queue, Store};
use sqlx::Connection;

/// The test PostgreSQL's server URL (without database), started once.
fn postgres() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        // At run time (cargo sets it), not compile time: the binary may come
        // from a clone at another path.
        let crate_dir =
            std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
        let script = format!("{crate_dir}/../deploy/postgres/start.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .env("PG_PORT", "15432")
            .output()
            .expect("run deploy/postgres/start.sh");
        assert!(
            out.status.success(),
            "PostgreSQL did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        "postgres://postgres@127.0.0.1:15432".to_owned()
    })
}

/// A URL of a new, empty PostgreSQL database.
pub async fn fresh_postgres_url() -> String {
    let server = postgres();
    let name = format!("meta_test_{:x}", rand_u64());
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    format!("{server}/{name}")
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// One fresh, bootstrapped store per backend (the temp dir keeps SQLite's file).
async fn stores() -> Vec<(Option<tempfile::TempDir>, Store)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("meta.db").display());
    let mut out = Vec::new();
    for (dir, url) in [(Some(dir), sqlite), (None, fresh_postgres_url().await)] {
        let store = Store::open(&url).await.unwrap();
        store.bootstrap_defaults("v_default").await.unwrap();
        out.push((dir, store));
    }
    out
}

#[tokio::test]
async fn bootstrap_creates_guest_and_default_vhost_once() {
    for (_dir, store) in stores().await {
        bootstrap_once(store).await;
    }
}

async fn bootstrap_once(store: Store) {
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
    let url = store.url().to_owned();
    drop(store);
    // Reopening the same store keeps everything and migrates nothing twice.
    let again = Store::open(&url).await.unwrap();
    assert_eq!(again.snapshot().await.unwrap().users.len(), 1);
}

#[tokio::test]
async fn deleting_a_queue_removes_its_bindings_and_bumps_the_revision() {
    for (_dir, store) in stores().await {
        delete_queue_cascades(store).await;
    }
}

async fn delete_queue_cascades(store: Store) {
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
    let q1 = Queue {
        vhost: "/".into(),
        name: "q1".into(),
        durable: true,
        auto_delete: false,
        exclusive_owner: None,
        arguments: vec![],
        topic: "t_q1".into(),
        group: "g_q1".into(),
    };
    assert_eq!(store.insert_queue(&q1).await.unwrap(), (q1.clone(), true));
    // A second declare of the name (another gateway's, with its own topic)
    // gets the stored queue back, not its own.
    let late = Queue {
        topic: "t_q1_late".into(),
        group: "g_q1_late".into(),
        ..q1.clone()
    };
    assert_eq!(
        store.insert_queue(&late).await.unwrap(),
        (q1.clone(), false)
    );
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
    // The revision log says what to read again, in order.
    let changes = store.changes_after(before, 100).await.unwrap();
    let kinds: Vec<_> = changes.iter().map(|c| (c.kind, c.name.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (ChangeKind::Exchange, "logs"),
            (ChangeKind::Queue, "q1"),
            (ChangeKind::Bindings, "logs"),
            (ChangeKind::Queue, "q1"),
        ],
        "the second, identical put_binding changed nothing"
    );
    assert!(changes.windows(2).all(|w| w[0].revision < w[1].revision));
    assert_eq!(changes.last().unwrap().revision, snap.revision);
    assert!(store.queue("/", "q1").await.unwrap().is_none());
    assert_eq!(
        store.exchange("/", "logs").await.unwrap().unwrap().kind,
        "topic"
    );
    assert!(store.bindings_from("/", "logs").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_lease_is_held_by_one_owner_until_released_or_expired() {
    for (_dir, store) in stores().await {
        leases(store).await;
    }
}

async fn leases(store: Store) {
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

    store
        .announce_reader(t, "b", now, ttl, 2, false)
        .await
        .unwrap();
    store
        .announce_reader(t, "a", now, 10, 1, true)
        .await
        .unwrap();
    assert_eq!(store.readers(t, now).await.unwrap(), ["a", "b"]);
    assert_eq!(
        store.reader_consumers(t, now).await.unwrap(),
        [("a".to_owned(), 1, true), ("b".to_owned(), 2, false)]
    );
    assert_eq!(
        store.readers(t, now + 11).await.unwrap(),
        ["b"],
        "a's announcement lapsed"
    );
    store.withdraw_reader(t, "b").await.unwrap();
    assert!(store.readers(t, now).await.unwrap() == ["a"]);
    // Deleting the queue whose topic it is forgets them.
    let queue = Queue {
        vhost: "/".into(),
        name: "leased".into(),
        durable: true,
        auto_delete: false,
        exclusive_owner: None,
        arguments: vec![],
        topic: t.into(),
        group: "g_leased".into(),
    };
    store.insert_queue(&queue).await.unwrap();
    store.delete_queue("/", "leased").await.unwrap();
    assert!(store.readers(t, now).await.unwrap().is_empty());
    assert!(store.lease_holders(t).await.unwrap().is_empty());
    // A lease taken after its queue went lapses and is forgotten a minute later.
    let stray = "topic-of-a-deleted-queue";
    assert!(store.try_lease(stray, 0, "a", now, ttl).await.unwrap());
    store.live_gateways(now + ttl + 59_000).await.unwrap();
    assert_eq!(store.lease_holders(stray).await.unwrap().len(), 1);
    store.live_gateways(now + ttl + 61_000).await.unwrap();
    assert!(store.lease_holders(stray).await.unwrap().is_empty());
    assert!(
        store.try_lease(t, 1, "c", now, ttl).await.unwrap(),
        "leases forgotten"
    );
}

#[tokio::test]
async fn a_gateway_taking_a_dead_ones_seat_frees_its_leases_at_once() {
    for (_dir, store) in stores().await {
        let (t, now, ttl) = ("seated", 1_000_000, 5_000);
        for id in ["old", "other"] {
            store.heartbeat(id, now, 10_000, "", "").await.unwrap();
        }
        assert!(store
            .take_seat("host|0.0.0.0:5672", "old")
            .await
            .unwrap()
            .is_empty());
        store.take_seat("host|0.0.0.0:5673", "other").await.unwrap();
        assert!(store.try_lease(t, 0, "old", now, ttl).await.unwrap());
        assert!(store.try_lease(t, 1, "other", now, ttl).await.unwrap());
        store
            .announce_reader(t, "old", now, ttl, 1, false)
            .await
            .unwrap();
        // "old" was killed; "new" binds the same address on the same host.
        store
            .heartbeat("new", now + 1, 10_000, "", "")
            .await
            .unwrap();
        assert_eq!(
            store.take_seat("host|0.0.0.0:5672", "new").await.unwrap(),
            ["old"]
        );
        assert!(
            store.try_lease(t, 0, "new", now + 2, ttl).await.unwrap(),
            "the dead gateway's lease is free before its TTL"
        );
        assert!(
            !store.try_lease(t, 1, "new", now + 2, ttl).await.unwrap(),
            "another seat's is not"
        );
        assert_eq!(
            store.readers(t, now + 2).await.unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            store.live_gateways(now + 2).await.unwrap(),
            ["new", "other"]
        );
    }
}

#[tokio::test]
async fn limits_are_set_cleared_followed_and_go_with_their_owner() {
    use meta::{ChangeKind, LimitScope};
    for (_dir, store) in stores().await {
        store
            .put_vhost(&meta::Vhost {
                name: "tenant".into(),
                namespace: "vh_tenant".into(),
            })
            .await
            .unwrap();
        let before = store.snapshot().await.unwrap().revision;
        store
            .set_limit(LimitScope::Vhost, "tenant", "max-queues", 5)
            .await
            .unwrap();
        store
            .set_limit(LimitScope::Vhost, "tenant", "max-connections", -1)
            .await
            .unwrap();
        store
            .set_limit(LimitScope::User, "guest", "max-channels", 0)
            .await
            .unwrap();
        let limits = store.limits_of(LimitScope::Vhost, "tenant").await.unwrap();
        assert_eq!(limits.get("max-queues"), Some(&5));
        assert_eq!(limits.get("max-connections"), Some(&-1));
        let changes = store.changes_after(before, 100).await.unwrap();
        assert!(
            changes.iter().all(|c| c.kind == ChangeKind::Limits),
            "{changes:?}"
        );
        assert_eq!(
            changes.last().unwrap().vhost,
            "user",
            "the scope rides in `vhost`"
        );
        assert_eq!(store.snapshot().await.unwrap().limits.len(), 3);
        assert!(store
            .clear_limit(LimitScope::User, "guest", "max-channels")
            .await
            .unwrap());
        assert!(!store
            .clear_limit(LimitScope::User, "guest", "max-channels")
            .await
            .unwrap());
        store.delete_vhost("tenant").await.unwrap();
        assert!(
            store.all_limits().await.unwrap().is_empty(),
            "gone with the vhost"
        );
    }
}

#[tokio::test]
async fn the_sqlite_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = Store::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    store
        .put_user(&meta::User {
            name: "u".into(),
            password_hash: password::hash_password("p"),
            tags: String::new(),
            loopback_only: false,
        })
        .await
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", path.display());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    drop(store);
    // A file left world-readable by an older version is narrowed.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = Store::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
