//! Several gateways on one PostgreSQL meta store: what is declared, bound or
//! deleted through one is applied by the others from the revision log; a
//! gateway that loses its store keeps serving and catches up.

use std::time::{Duration, Instant};

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::ExchangeKind;

use crate::harness::{
    free_port, postgres_database, restart_postgres, stop_postgres, unique, GatewayProcess,
    TestGateway,
};
use crate::publish::{message_count_expecting, publish_all};
use crate::reply_code;

pub const PG_PORT: u16 = 15432;

/// The raw answer to `GET /health`.
async fn http_get(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

async fn pair() -> (TestGateway, TestGateway) {
    let url = postgres_database(PG_PORT);
    let a = TestGateway::start_with(|c| c.meta_url = url.clone()).await;
    let b = TestGateway::start_with(|c| c.meta_url = url.clone()).await;
    (a, b)
}

fn has_binding(gw: &TestGateway, exchange: &str, queue: &str, key: &str) -> bool {
    let vhost = gw.gateway.topology.vhost("/").unwrap();
    let t = vhost.read();
    t.exchanges.get(exchange).is_some_and(|e| {
        e.records
            .iter()
            .any(|r| r.destination == queue && r.routing_key == key)
    })
}

#[tokio::test]
async fn declared_and_bound_through_one_gateway_process_routes_through_another() {
    let url = postgres_database(PG_PORT);
    let a = TestGateway::start_with(|c| c.meta_url = url.clone()).await;
    let b = GatewayProcess::start_url(free_port(), &url);
    let (ca, cb) = (a.connect().await, b.connect().await);
    let cha = ca.create_channel().await.unwrap();
    let (ex, q) = (unique("ex"), unique("q"));
    cha.exchange_declare(
        ex.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    cha.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    cha.queue_bind(
        q.as_str().into(),
        ex.as_str().into(),
        "orders.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let bound = Instant::now();
    // Published through B with mandatory until B routes it (not returned).
    let chb = cb.create_channel().await.unwrap();
    chb.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    loop {
        let confirm = chb
            .basic_publish(
                ex.as_str().into(),
                "orders.new".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                b"x",
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        if confirm.take_message().is_none() {
            break;
        }
        assert!(
            bound.elapsed() < Duration::from_secs(2),
            "B never routed it"
        );
    }
    eprintln!(
        "bind through A routed by gateway process B after {:?}",
        bound.elapsed()
    );
    assert!(
        bound.elapsed() < Duration::from_millis(100),
        "within 100 ms"
    );
    assert_eq!(message_count_expecting(&cha, &q, Some(1)).await, 1);

    // Deleted through A: B answers 404.
    cha.exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    let deleted = Instant::now();
    loop {
        let chb = cb.create_channel().await.unwrap();
        let passive = chb
            .exchange_declare(
                ex.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match passive {
            Err(e) => {
                assert_eq!(reply_code(&e), Some(404));
                break;
            }
            Ok(()) => assert!(deleted.elapsed() < Duration::from_secs(2), "B still has it"),
        }
    }

    // An exclusive queue of a connection to A is locked for B's connections.
    let excl = unique("excl");
    crate::harness::declare_exclusive(&cha, &excl)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let chb = cb.create_channel().await.unwrap();
    let err = chb
        .queue_declare(
            excl.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("exclusive to a connection on A");
    assert_eq!(reply_code(&err), Some(405));
}

#[tokio::test]
async fn propagation_delay_over_1000_changes() {
    let (a, b) = pair().await;
    let ca = a.connect().await;
    let ch = ca.create_channel().await.unwrap();
    let (ex, q) = (unique("ex"), unique("q"));
    ch.exchange_declare(
        ex.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut delays = Vec::with_capacity(1000);
    for i in 0..1000 {
        let key = format!("k{i}");
        ch.queue_bind(
            q.as_str().into(),
            ex.as_str().into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let at = Instant::now();
        while !has_binding(&b, &ex, &q, &key) {
            assert!(
                at.elapsed() < Duration::from_secs(5),
                "change {i} never reached B"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        delays.push(at.elapsed());
    }
    delays.sort();
    let (p50, p99) = (delays[499], delays[989]);
    eprintln!(
        "propagation over 1000 binds (bind-ok on A to B's topology): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        delays[999].as_secs_f64() * 1e3
    );
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
}

#[tokio::test]
async fn a_gateway_that_loses_its_store_keeps_serving_and_catches_up() {
    // Its own PostgreSQL, stopped and started by this test.
    const PORT: u16 = 15433;
    let url = postgres_database(PORT);
    let a = TestGateway::start_with(|c| {
        c.meta_url = url.clone();
        c.health_listen = "127.0.0.1:0".into();
    })
    .await;
    let health = proxy::health::start(&a.gateway)
        .await
        .unwrap()
        .expect("health endpoint");
    assert!(http_get(health).await.starts_with("HTTP/1.1 200"));
    let conn = a.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let q = unique("q");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    stop_postgres(PORT);
    let down = Instant::now();
    while a
        .gateway
        .meta_healthy
        .load(std::sync::atomic::Ordering::Acquire)
    {
        assert!(
            down.elapsed() < Duration::from_secs(10),
            "the outage was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let degraded = http_get(health).await;
    assert!(
        degraded.starts_with("HTTP/1.1 503") && degraded.contains("\"status\":\"degraded\""),
        "{degraded}"
    );
    // Publishing keeps working with the last topology.
    publish_all(&ch, [("", q.as_str(), &b"during"[..], Default::default())]).await;
    // Changes are refused with a clear error.
    let other = a.connect().await;
    let refused = other
        .create_channel()
        .await
        .unwrap()
        .queue_declare(
            unique("new").as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("no declare without the store");
    assert_eq!(reply_code(&refused), Some(541), "{refused}");

    restart_postgres(PORT);
    let up = Instant::now();
    while !a
        .gateway
        .meta_healthy
        .load(std::sync::atomic::Ordering::Acquire)
    {
        assert!(up.elapsed() < Duration::from_secs(15), "never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(http_get(health).await.starts_with("HTTP/1.1 200"));
    let again = a.connect().await;
    again
        .create_channel()
        .await
        .unwrap()
        .queue_declare(
            unique("after").as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declares work again");
    assert_eq!(message_count_expecting(&ch, &q, Some(1)).await, 1);
}

/// Runs the gateway binary with a subcommand on a store; returns stdout.
fn gateway_command(meta_url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amqp-gateway"))
        .args(args)
        .env("AMQP_GATEWAY_META_URL", meta_url)
        .env("AMQP_GATEWAY_NAME_SERVER", crate::harness::rocketmq())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run amqp-gateway");
    assert!(
        out.status.success(),
        "amqp-gateway {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn set_of(v: &serde_json::Value, keys: &[&str]) -> std::collections::BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|item| {
            keys.iter()
                .map(|k| {
                    item.get(*k)
                        .cloned()
                        .unwrap_or(serde_json::Value::Null)
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

#[tokio::test]
async fn rabbitmq_definitions_import_then_export_is_equivalent_and_permissions_apply() {
    let fixture_file =
        crate::harness::repo_root().join("conformance/definitions/rabbitmq-3.10.json");
    let fixture_path = fixture_file.to_str().expect("a UTF-8 path");
    let fixture: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture_path).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("meta.db").display());

    let first = gateway_command(&url, &["import", fixture_path]);
    eprintln!("{first}");
    assert!(
        first.contains("skipped   binding 'shop.internal'"),
        "{first}"
    );
    assert!(first.contains("skipped   policy 'audit-limit'"), "{first}");
    let again = gateway_command(&url, &["import", fixture_path]);
    assert!(
        again.lines().last().unwrap().starts_with("0 created"),
        "a second import creates nothing: {again}"
    );

    let exported: serde_json::Value =
        serde_json::from_str(&gateway_command(&url, &["export"])).unwrap();
    for (section, keys) in [
        ("vhosts", &["name"][..]),
        (
            "users",
            &["name", "password_hash", "hashing_algorithm", "tags"][..],
        ),
        (
            "permissions",
            &["user", "vhost", "configure", "write", "read"][..],
        ),
        (
            "exchanges",
            &[
                "vhost",
                "name",
                "type",
                "durable",
                "auto_delete",
                "arguments",
            ][..],
        ),
        (
            "queues",
            &["vhost", "name", "durable", "auto_delete", "arguments"][..],
        ),
    ] {
        assert_eq!(
            set_of(&exported[section], keys),
            set_of(&fixture[section], keys),
            "{section}"
        );
    }
    // Bindings: all but those of the exchange RabbitMQ left out of its export.
    let keys = &[
        "vhost",
        "source",
        "destination",
        "destination_type",
        "routing_key",
        "arguments",
    ];
    let mut expected = set_of(&fixture["bindings"], keys);
    expected.retain(|b| !b.contains("\"shop.internal\""));
    assert_eq!(set_of(&exported["bindings"], keys), expected);

    // The imported users log in with their RabbitMQ passwords, and their
    // permissions are applied as RabbitMQ applies them.
    let gw = TestGateway::start_with(|c| c.meta_url = url.clone()).await;
    let uri =
        |user: &str, pass: &str, vhost: &str| format!("amqp://{user}:{pass}@{}/{vhost}", gw.addr);
    let orders =
        lapin::Connection::connect(&uri("orders", "s3cret-orders", "shop"), Default::default())
            .await
            .expect("imported user, imported password");
    let ch = orders.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    // The imported names are fixed, and the test RocketMQ outlives one run.
    ch.queue_purge("orders.created".into(), Default::default())
        .await
        .unwrap();
    publish_all(
        &ch,
        [(
            "shop.events",
            "orders.created.eu",
            &b"o"[..],
            Default::default(),
        )],
    )
    .await;
    assert_eq!(
        message_count_expecting(&ch, "orders.created", Some(1)).await,
        1
    );
    let refused = ch
        .queue_declare(
            "billing.q".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("configure outside '^(orders|shop)\\..*'");
    assert_eq!(reply_code(&refused), Some(403));

    let auditor_billing =
        lapin::Connection::connect(&uri("auditor", "read-only", "billing"), Default::default())
            .await;
    assert_eq!(
        reply_code(&auditor_billing.expect_err("no permission on billing")),
        Some(530)
    );
    let auditor =
        lapin::Connection::connect(&uri("auditor", "read-only", "shop"), Default::default())
            .await
            .unwrap();
    let ch = auditor.create_channel().await.unwrap();
    ch.basic_get("orders.created".into(), Default::default())
        .await
        .expect("read '.*' allows basic.get");
    let ch = auditor.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            "shop.events".into(),
            "orders.x".into(),
            Default::default(),
            b"no",
            Default::default(),
        )
        .await
        .unwrap()
        .await;
    assert_eq!(
        reply_code(&confirm.expect_err("write '^$' refuses publishing")),
        Some(403)
    );
    // A permission changed in the store applies to new connections (live).
    gw.gateway
        .store
        .put_permission(&meta::Permission {
            user: "orders".into(),
            vhost: "shop".into(),
            configure: "^$".into(),
            write: "^$".into(),
            read: "^orders\\.dead$".into(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let narrowed =
        lapin::Connection::connect(&uri("orders", "s3cret-orders", "shop"), Default::default())
            .await
            .unwrap();
    let ch = narrowed.create_channel().await.unwrap();
    let refused = ch
        .basic_consume(
            "orders.created".into(),
            "c".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("read outside the pattern");
    assert_eq!(reply_code(&refused), Some(403));
    let ch = narrowed.create_channel().await.unwrap();
    ch.basic_get("orders.dead".into(), Default::default())
        .await
        .expect("read inside the pattern");
    let wrong =
        lapin::Connection::connect(&uri("orders", "wrong", "shop"), Default::default()).await;
    assert!(wrong.is_err(), "a wrong password is refused");
}

#[tokio::test]
async fn consumer_counts_and_exclusive_consumers_hold_across_gateways() {
    let (a, b) = pair().await;
    let (ca, cb) = (a.connect().await, b.connect().await);
    let q = unique("cc");
    let cha = ca.create_channel().await.unwrap();
    cha.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let consumer = cha
        .basic_consume(
            q.as_str().into(),
            "only".into(),
            lapin::options::BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    // B sees A's consumer within a lease round (about a second).
    let seen = Instant::now();
    loop {
        let chb = cb.create_channel().await.unwrap();
        let ok = chb
            .queue_declare(q.as_str().into(), passive, FieldTable::default())
            .await
            .unwrap();
        if ok.consumer_count() == 1 {
            break;
        }
        assert!(
            seen.elapsed() < Duration::from_secs(5),
            "B never counted A's consumer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let chb = cb.create_channel().await.unwrap();
    let refused = chb
        .basic_consume(
            q.as_str().into(),
            "second".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("A's consumer is exclusive");
    assert_eq!(reply_code(&refused), Some(403));
    // A's consumer goes: B may consume, and A counts B's consumer.
    cha.basic_cancel(consumer.tag(), Default::default())
        .await
        .unwrap();
    let cancelled = Instant::now();
    let _b_consumer = loop {
        let chb = cb.create_channel().await.unwrap();
        match chb
            .basic_consume(
                q.as_str().into(),
                "second".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
        {
            Ok(c) => break c,
            Err(_) => {
                assert!(
                    cancelled.elapsed() < Duration::from_secs(5),
                    "still refused"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let counted = Instant::now();
    loop {
        let ok = cha
            .queue_declare(q.as_str().into(), passive, FieldTable::default())
            .await
            .unwrap();
        if ok.consumer_count() == 1 {
            break;
        }
        assert!(
            counted.elapsed() < Duration::from_secs(5),
            "A never counted B's consumer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two gateways declare the same new queue at the same moment and publish to
/// it at once, before either follower has seen the other's declare. The
/// store decides which topic the queue has; both gateways then use it, so
/// nothing published through the loser lands in a topic nobody reads.
#[tokio::test]
async fn a_queue_declared_through_two_gateways_at_once_has_one_topic() {
    let (a, b) = pair().await;
    let (ca, cb) = (a.connect().await, b.connect().await);
    let (cha, chb) = (
        ca.create_channel().await.unwrap(),
        cb.create_channel().await.unwrap(),
    );
    for ch in [&cha, &chb] {
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
    }
    for round in 0..8 {
        let q = unique(&format!("race{round}"));
        let declare_and_publish = |ch: &lapin::Channel| {
            let (ch, q) = (ch.clone(), q.clone());
            async move {
                ch.queue_declare(
                    q.as_str().into(),
                    QueueDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
                let body = [b'x'; 8];
                publish_all(
                    &ch,
                    (0..10).map(|_| ("", q.as_str(), &body[..], Default::default())),
                )
                .await;
            }
        };
        tokio::join!(declare_and_publish(&cha), declare_and_publish(&chb));
        let topic = |gw: &TestGateway| {
            let vhost = gw.gateway.topology.vhost("/").unwrap();
            let t = vhost.read();
            t.queues.get(&q).map(|s| s.record.topic.clone())
        };
        assert_eq!(
            topic(&a),
            topic(&b),
            "round {round}: one topic for the queue"
        );
        assert_eq!(
            message_count_expecting(&cha, &q, Some(20)).await,
            20,
            "round {round}: what both gateways published is in the queue"
        );
    }
}
