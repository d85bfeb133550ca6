//! Exchanges, queues and bindings: RabbitMQ's answers, stored in meta and on RocketMQ.

use lapin::options::{
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

use crate::harness::{unique, TestGateway};
use crate::reply_code;

#[tokio::test]
async fn exchange_declare_follows_rabbitmq() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let name = unique("ex");
    let ch = conn.create_channel().await.unwrap();
    for kind in [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
    ] {
        let n = format!("{name}-{kind:?}");
        ch.exchange_declare(
            n.as_str().into(),
            kind.clone(),
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        // Same declaration again is fine; passive finds it.
        ch.exchange_declare(
            n.as_str().into(),
            kind,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.exchange_declare(
            n.as_str().into(),
            ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    for builtin in [
        "amq.direct",
        "amq.fanout",
        "amq.topic",
        "amq.headers",
        "amq.match",
    ] {
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.exchange_declare(
            builtin.into(),
            ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        )
        .await
        .unwrap();
    }

    let redeclare = ch
        .exchange_declare(
            format!("{name}-Direct").as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&redeclare), Some(406));

    let ch = conn.create_channel().await.unwrap();
    let reserved = ch
        .exchange_declare(
            "amq.mine".into(),
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&reserved), Some(403));

    let ch = conn.create_channel().await.unwrap();
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let missing = ch
        .exchange_declare(
            unique("none").as_str().into(),
            ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&missing), Some(404));

    let ch = conn.create_channel().await.unwrap();
    let unknown_type = ch
        .exchange_declare(
            unique("x").as_str().into(),
            ExchangeKind::Custom("x-nope".into()),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        reply_code(&unknown_type),
        Some(503),
        "unknown exchange type is a connection error"
    );
}

#[tokio::test]
async fn exchange_delete_if_unused_and_missing() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let (ex, q) = (unique("ex"), unique("q"));
    ch.exchange_declare(
        ex.as_str().into(),
        ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(q.as_str().into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(
        q.as_str().into(),
        ex.as_str().into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let in_use = ch
        .exchange_delete(
            ex.as_str().into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&in_use), Some(406));
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_delete(ex.as_str().into(), Default::default())
        .await
        .unwrap();
    // Deleting it again is delete-ok, as RabbitMQ 3.10 answers (checked with
    // pika against the Debian package; pika's own acceptance test relies on it).
    ch.exchange_delete(ex.as_str().into(), Default::default())
        .await
        .expect("delete-ok for an exchange that is not there");
    let gone = ch
        .exchange_declare(
            ex.as_str().into(),
            lapin::ExchangeKind::Direct,
            lapin::options::ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&gone), Some(404));
}

#[tokio::test]
async fn queue_declare_names_checks_and_exclusivity() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let generated = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert!(
        generated.name().as_str().starts_with("amq.gen-"),
        "{}",
        generated.name()
    );
    assert_eq!(generated.name().as_str().len(), "amq.gen-".len() + 22);
    assert_eq!(
        (generated.message_count(), generated.consumer_count()),
        (0, 0)
    );

    let q = unique("q");
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
    let inequivalent = ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&inequivalent), Some(406));

    let ch = conn.create_channel().await.unwrap();
    let reserved = ch
        .queue_declare("amq.q".into(), Default::default(), FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&reserved), Some(403));

    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let missing = ch
        .queue_declare(
            unique("none").as_str().into(),
            passive,
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&missing), Some(404));

    // Exclusive: another connection gets 405; the queue goes with its connection.
    let owner = gw.connect().await;
    let och = owner.create_channel().await.unwrap();
    let ex = unique("excl");
    crate::harness::declare_exclusive(&och, &ex).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let locked = ch
        .queue_declare(ex.as_str().into(), passive, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&locked), Some(405));
    owner.close(200, "bye".into()).await.unwrap();
    // close-ok comes once the owner's exclusive queues are gone, so a client
    // that reconnects at once may declare the same exclusive queue (py-amqp's
    // tests do).
    let ch = conn.create_channel().await.unwrap();
    let gone = ch
        .queue_declare(ex.as_str().into(), passive, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        reply_code(&gone),
        Some(404),
        "the exclusive queue is deleted before the close completes"
    );
    let ch = conn.create_channel().await.unwrap();
    crate::harness::declare_exclusive(&ch, &ex).await.unwrap();
}

#[tokio::test]
async fn bindings_check_both_ends_and_headers_arguments() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let (ex, q) = (unique("hx"), unique("q"));
    ch.exchange_declare(
        ex.as_str().into(),
        ExchangeKind::Headers,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(q.as_str().into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    let no_queue = ch
        .queue_bind(
            unique("none").as_str().into(),
            ex.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&no_queue), Some(404));
    let ch = conn.create_channel().await.unwrap();
    let no_exchange = ch
        .queue_bind(
            q.as_str().into(),
            unique("none").as_str().into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&no_exchange), Some(404));
    let ch = conn.create_channel().await.unwrap();
    let mut bad = FieldTable::default();
    bad.insert("x-match".into(), AMQPValue::LongString("sometimes".into()));
    let bad_match = ch
        .queue_bind(
            q.as_str().into(),
            ex.as_str().into(),
            "".into(),
            Default::default(),
            bad,
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&bad_match), Some(406));
}

#[tokio::test]
async fn purge_and_delete_report_counts() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let q = unique("q");
    ch.queue_declare(q.as_str().into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    crate::publish::publish_all(
        &ch,
        (0..7).map(|_| ("", q.as_str(), &b"m"[..], BasicProperties::default())),
    )
    .await;
    assert_eq!(crate::publish::message_count(&ch, &q).await, 7);
    assert_eq!(
        ch.queue_purge(q.as_str().into(), Default::default())
            .await
            .unwrap(),
        7
    );
    assert_eq!(crate::publish::message_count(&ch, &q).await, 0);
    crate::publish::publish_all(
        &ch,
        (0..3).map(|_| ("", q.as_str(), &b"m"[..], BasicProperties::default())),
    )
    .await;
    let not_empty = ch
        .queue_delete(
            q.as_str().into(),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&not_empty), Some(406));
    let ch = conn.create_channel().await.unwrap();
    let deleted = ch
        .queue_delete(q.as_str().into(), Default::default())
        .await
        .unwrap();
    assert_eq!(deleted, 3);
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let gone = ch
        .queue_declare(q.as_str().into(), passive, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&gone), Some(404));
}

#[tokio::test]
async fn declarations_survive_a_gateway_restart_through_the_meta_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("meta.db").display());
    let (ex, q) = (unique("ex"), unique("q"));
    {
        let gw = TestGateway::start_with(|c| c.meta_url = url.clone()).await;
        let conn = gw.connect().await;
        let ch = conn.create_channel().await.unwrap();
        ch.exchange_declare(
            ex.as_str().into(),
            ExchangeKind::Topic,
            Default::default(),
            FieldTable::default(),
        )
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
        ch.queue_bind(
            q.as_str().into(),
            ex.as_str().into(),
            "a.#".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        conn.close(200, "bye".into()).await.unwrap();
    }
    let gw = TestGateway::start_with(|c| c.meta_url = url.clone()).await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    crate::publish::publish_all(
        &ch,
        [(ex.as_str(), "a.b", &b"m"[..], BasicProperties::default())],
    )
    .await;
    assert_eq!(
        crate::publish::message_count(&ch, &q).await,
        1,
        "the binding came back from the store"
    );
}

#[tokio::test]
async fn internal_exchanges_refuse_publishes_auto_delete_ones_go_with_their_last_binding_and_unbinding_what_is_gone_is_ok(
) {
    use lapin::options::BasicPublishOptions;
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let (internal, auto, q) = (unique("internal"), unique("auto"), unique("q"));
    let opts = ExchangeDeclareOptions {
        internal: true,
        ..Default::default()
    };
    ch.exchange_declare(
        internal.as_str().into(),
        ExchangeKind::Fanout,
        opts,
        FieldTable::default(),
    )
    .await
    .unwrap();
    // In confirm mode the channel's close reaches the publish's confirm.
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let refused = match ch
        .basic_publish(
            internal.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
    {
        Err(e) => e,
        Ok(confirm) => confirm.await.unwrap_err(),
    };
    assert_eq!(reply_code(&refused), Some(403));

    let ch = conn.create_channel().await.unwrap();
    let opts = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    ch.exchange_declare(
        auto.as_str().into(),
        ExchangeKind::Direct,
        opts,
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(q.as_str().into(), Default::default(), FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(
        q.as_str().into(),
        auto.as_str().into(),
        "k".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_unbind(
        q.as_str().into(),
        auto.as_str().into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let gone = ch
        .exchange_declare(
            auto.as_str().into(),
            ExchangeKind::Direct,
            passive,
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        reply_code(&gone),
        Some(404),
        "the auto-delete exchange went with its last binding"
    );

    // Unbinding from (or to) what is gone is unbind-ok, as in RabbitMQ 3.10
    // (aio-pika's RPC unbinds its auto-deleted reply queue on close); binding
    // to it is still 404.
    let ch = conn.create_channel().await.unwrap();
    ch.queue_unbind(
        "no-such-queue".into(),
        "amq.direct".into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .expect("unbind of a missing queue is unbind-ok");
    ch.queue_unbind(
        q.as_str().into(),
        auto.as_str().into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .expect("unbind from a missing exchange is unbind-ok");
    ch.exchange_unbind(
        "no-such-exchange".into(),
        "amq.direct".into(),
        "k".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.unbind of a missing destination is unbind-ok");
    let missing = ch
        .queue_bind(
            q.as_str().into(),
            auto.as_str().into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        reply_code(&missing),
        Some(404),
        "bind to a missing exchange"
    );
}

/// A gateway killed with exclusive queues open: the next start on the same
/// store deletes them, as RabbitMQ deletes them with their connection.
#[tokio::test]
async fn exclusive_queues_of_a_killed_gateway_are_deleted_by_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta.db");
    let url = format!("sqlite:{}", meta.display());
    let (ex_q, durable_q) = (unique("excl"), unique("kept"));
    let mut first = crate::harness::GatewayProcess::start(crate::harness::free_port(), &meta);
    let conn = first.connect().await;
    let ch = conn.create_channel().await.unwrap();
    crate::harness::declare_exclusive(&ch, &ex_q).await.unwrap();
    ch.queue_declare(
        durable_q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let second = TestGateway::start_with(|c| c.meta_url = url.clone()).await;
    let conn2 = second.connect().await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    // While the first gateway lives, its connection's queue is locked, not gone.
    let ch = conn2.create_channel().await.unwrap();
    let locked = ch
        .queue_declare(ex_q.as_str().into(), passive, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&locked), Some(405));
    // Killed: its heartbeat lapses (10 s) and the second gateway deletes it.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let killed = std::time::Instant::now();
    loop {
        let ch = conn2.create_channel().await.unwrap();
        match ch
            .queue_declare(ex_q.as_str().into(), passive, FieldTable::default())
            .await
        {
            Err(e) if reply_code(&e) == Some(404) => break,
            _ => {
                assert!(
                    killed.elapsed() < std::time::Duration::from_secs(25),
                    "never deleted"
                );
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
    eprintln!(
        "exclusive queue of a killed gateway deleted after {:?}",
        killed.elapsed()
    );
    let ch = conn2.create_channel().await.unwrap();
    ch.queue_declare(durable_q.as_str().into(), passive, FieldTable::default())
        .await
        .expect("non-exclusive queues stay");
}

/// A queue deleted and declared again is a new, empty queue, also across a
/// RocketMQ restart (which indexes a deleted topic's messages again and goes
/// on counting its offsets): the old messages never come back, the new ones
/// are delivered. (aio-pika's RPC tests lost their calls here: same-named
/// auto-delete queues, declared again after a restart of the stack.)
#[tokio::test]
async fn a_queue_declared_again_after_a_delete_and_a_rocketmq_restart_starts_empty() {
    use lapin::options::BasicGetOptions;

    let (name, namesrv_port, broker_port) = ("redeclare", 19878, 20951);
    let namesrv = crate::harness::start_rocketmq(name, namesrv_port, broker_port);
    let meta = tempfile::tempdir().unwrap();
    let meta_url = format!("sqlite:{}", meta.path().join("meta.db").display());
    let start = || {
        let (namesrv, meta_url) = (namesrv.clone(), meta_url.clone());
        TestGateway::start_with(move |c| {
            c.name_server = namesrv;
            c.meta_url = meta_url;
        })
    };
    let q = unique("again");
    let declare = |ch: lapin::Channel, q: String| async move {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
    };
    let publish = |ch: lapin::Channel, q: String, bodies: Vec<&'static [u8]>| async move {
        let messages = bodies
            .into_iter()
            .map(|body| ("", q.as_str(), body, BasicProperties::default()));
        crate::publish::publish_all(&ch, messages.collect::<Vec<_>>()).await;
    };

    let gw = start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare(ch.clone(), q.clone()).await.unwrap();
    let first_topic = gw.gateway.topology.vhost("/").unwrap().read().queues[q.as_str()]
        .record
        .topic
        .clone();
    publish(ch.clone(), q.clone(), vec![b"old".as_slice(); 5]).await;
    ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    drop(gw);

    // RocketMQ restarts (cleanly: what it confirmed is in its commit log).
    crate::harness::stop_rocketmq(name);
    crate::harness::start_rocketmq(name, namesrv_port, broker_port);

    let gw = start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    // The broker may take a moment to serve its routes again.
    let mut declared = None;
    for _ in 0..60 {
        match declare(ch.clone(), q.clone()).await {
            Ok(ok) => {
                declared = Some(ok);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
        }
    }
    let declared = declared.expect("the queue is declared again once RocketMQ is back");
    assert_eq!(declared.message_count(), 0, "a new queue is empty");
    let topic = gw.gateway.topology.vhost("/").unwrap().read().queues[q.as_str()]
        .record
        .topic
        .clone();
    assert_ne!(topic, first_topic, "a new incarnation, a new topic");
    publish(ch.clone(), q.clone(), vec![b"new-1".as_slice(), b"new-2"]).await;
    let mut bodies = Vec::new();
    for _ in 0..100 {
        match ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => bodies.push(String::from_utf8_lossy(&m.delivery.data).into_owned()),
            None if bodies.len() >= 2 => break,
            None => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    assert_eq!(
        bodies,
        ["new-1", "new-2"],
        "only the new messages, in order"
    );
    crate::harness::stop_rocketmq(name);
}
