//! RabbitMQ's vhost and user limits: set through the management API and
//! definitions, refused with RabbitMQ's codes and texts (as RabbitMQ 3.10
//! answers them, measured: docs/reliability.md), counted over every gateway.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

use crate::harness::{unique, TestGateway};
use crate::management::http;
use crate::reply_code;

const GUEST: Option<&str> = Some("guest:guest");

async fn refused(gw: &TestGateway) -> lapin::Error {
    Connection::connect(&gw.uri(), ConnectionProperties::default())
        .await
        .expect_err("refused")
}

#[tokio::test]
async fn connection_limits_of_a_vhost_and_a_user_refuse_at_connection_open() {
    let gw = TestGateway::start().await;
    let api = gw.management.unwrap();
    let put = |path: &'static str, value: i64| async move {
        http(api, "PUT", path, GUEST, &format!("{{\"value\": {value}}}")).await
    };
    assert_eq!(put("/api/vhost-limits/%2F/max-connections", 1).await.0, 204);
    let (status, listed) = http(api, "GET", "/api/vhost-limits", GUEST, "").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&listed).unwrap(),
        serde_json::json!([{"vhost": "/", "value": {"max-connections": 1}}])
    );
    let first = gw.connect().await;
    let e = refused(&gw).await;
    assert_eq!(reply_code(&e), Some(530));
    assert!(
        e.to_string().contains(
            "access to vhost '/' refused for user 'guest': connection limit (1) is reached"
        ),
        "{e}"
    );
    assert!(first.status().connected(), "the open connection stays");

    // Negative is no limit; the user's own limit then counts.
    assert_eq!(
        put("/api/vhost-limits/%2F/max-connections", -1).await.0,
        204
    );
    assert_eq!(
        put("/api/user-limits/guest/max-connections", 2).await.0,
        204
    );
    let second = gw.connect().await;
    let e = refused(&gw).await;
    assert_eq!(reply_code(&e), Some(530));
    assert!(
        e.to_string()
            .contains("connection refused for user 'guest': user connection limit (2) is reached"),
        "{e}"
    );
    second.close(200, "bye".into()).await.unwrap();
    let third = gw.connect().await;
    assert_eq!(
        http(
            api,
            "DELETE",
            "/api/user-limits/guest/max-connections",
            GUEST,
            ""
        )
        .await
        .0,
        204
    );
    let _fourth = gw.connect().await;
    drop(third);

    // What RabbitMQ refuses: an unknown limit, a value that is not an
    // integer, a vhost that is not there.
    let (status, body) = put("/api/vhost-limits/%2F/max-channels", 1).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = http(
        api,
        "PUT",
        "/api/user-limits/guest/max-channels",
        GUEST,
        r#"{"value": "5"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        put("/api/vhost-limits/no-such-vhost/max-queues", 1).await.0,
        404
    );
}

#[tokio::test]
async fn a_users_channel_limit_counts_all_its_connections_and_closes_the_one_over_it() {
    let gw = TestGateway::start().await;
    let api = gw.management.unwrap();
    let (status, _) = http(
        api,
        "PUT",
        "/api/user-limits/guest/max-channels",
        GUEST,
        r#"{"value": 1}"#,
    )
    .await;
    assert_eq!(status, 204);
    let (_, users) = http(api, "GET", "/api/users/guest", GUEST, "").await;
    let users: serde_json::Value = serde_json::from_str(&users).unwrap();
    assert_eq!(users["limits"], serde_json::json!({"max-channels": 1}));
    let a = gw.connect().await;
    let _ch = a.create_channel().await.expect("the first channel");
    let b = gw.connect().await;
    let e = b.create_channel().await.expect_err("over the user's limit");
    assert_eq!(reply_code(&e), Some(530));
    assert!(
        e.to_string().contains(
            "number of channels opened for user 'guest' has reached the maximum allowed user limit of (1)"
        ),
        "{e}"
    );
    assert!(!b.status().connected(), "the whole connection is closed");
    assert!(a.status().connected());
}

#[tokio::test]
async fn a_vhosts_queue_limit_from_definitions_refuses_new_queues_with_406() {
    let gw = TestGateway::start().await;
    let api = gw.management.unwrap();
    let defs = r#"{"parameters": [{"value": {"max-queues": 1}, "vhost": "/",
                   "component": "vhost-limits", "name": "limits"}]}"#;
    let (status, body) = http(api, "POST", "/api/definitions", GUEST, defs).await;
    assert!(status == 204 || status == 201, "{status} {body}");
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let (q1, q2) = (unique("limited"), unique("limited"));
    let declare = |ch: lapin::Channel, name: String| async move {
        ch.queue_declare(
            name.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
    };
    declare(ch.clone(), q1.clone())
        .await
        .expect("the first queue");
    declare(ch.clone(), q1.clone())
        .await
        .expect("declaring it again is no new queue");
    let e = declare(ch.clone(), q2.clone()).await.expect_err("a second");
    assert_eq!(reply_code(&e), Some(406));
    assert!(
        e.to_string().contains(&format!(
            "cannot declare queue '{q2}': queue limit in vhost '/' (1) is reached"
        )),
        "{e}"
    );
    assert!(conn.status().connected(), "only the channel is closed");
    // Exported where RabbitMQ exports it.
    let (_, exported) = http(api, "GET", "/api/definitions", GUEST, "").await;
    let exported: serde_json::Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(
        exported["parameters"],
        serde_json::json!([{"value": {"max-queues": 1}, "vhost": "/",
                            "component": "vhost-limits", "name": "limits"}])
    );
}

#[tokio::test]
async fn connections_count_over_every_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let meta = format!("sqlite:{}", dir.path().join("shared-meta.db").display());
    let a = TestGateway::start_with(|c| c.meta_url = meta.clone()).await;
    let b = TestGateway::start_with(|c| c.meta_url = meta.clone()).await;
    let (status, _) = http(
        a.management.unwrap(),
        "PUT",
        "/api/vhost-limits/%2F/max-connections",
        GUEST,
        r#"{"value": 1}"#,
    )
    .await;
    assert_eq!(status, 204);
    let _on_a = a.connect().await;
    // b learns of a's connection with a's next heartbeat (about a second),
    // and of the limit by following the store.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Connection::connect(&b.uri(), ConnectionProperties::default()).await {
            Err(e) => {
                assert_eq!(reply_code(&e), Some(530), "{e}");
                break;
            }
            Ok(c) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "b never counted a's connection"
                );
                c.close(200, "again".into()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Unfinished bodies on all of a connection's channels are held to
/// `max_connection_content_bytes`: past it the connection is closed with
/// 506, and the gateway serves others as before.
#[tokio::test]
async fn bodies_still_arriving_on_many_channels_are_capped_per_connection() {
    use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
    use amq_protocol::protocol::{basic, AMQPClass};

    const MIB: u64 = 1024 * 1024;
    let gw = TestGateway::start_with(|c| {
        c.max_message_size = MIB;
        c.max_connection_content_bytes = 3 * MIB / 2;
    })
    .await;
    let mut raw = crate::raw::Raw::open(gw.addr, 0).await;
    let part = vec![b'x'; 100 * 1024];
    for channel in 1..=3u16 {
        raw.open_channel(channel).await;
        raw.send(AMQPFrame::Method(
            channel,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "".into(),
                routing_key: "nowhere".into(),
                mandatory: false,
                immediate: false,
            })),
        ))
        .await;
        raw.send(AMQPFrame::Header(
            channel,
            AMQPContentHeader {
                class_id: 60,
                body_size: MIB,
                properties: Default::default(),
            },
        ))
        .await;
        // Six tenths of each body: the third channel's passes 1.5 MiB.
        for _ in 0..6 {
            raw.send(AMQPFrame::Body(channel, part.clone())).await;
        }
    }
    assert_eq!(raw.connection_close_code().await, 506);
    let other = gw.connect().await;
    assert!(other.create_channel().await.is_ok(), "others are served");
}
