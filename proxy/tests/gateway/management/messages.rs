//! Messages and definitions over the management API: rabbitmqadmin
//! publishes and gets, AMQP sees the same messages; an uploaded
//! definitions file serves AMQP at once; bad bodies get 400 or 404.

use lapin::options::BasicGetOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;

use super::{http, rabbitmqadmin};
use crate::consume::queue_with_channel;
use crate::harness::{unique, TestGateway};
use crate::publish::message_count_expecting;

const GUEST: Option<&str> = Some("guest:guest");

#[tokio::test]
async fn rabbitmqadmin_publishes_and_gets_what_amqp_sees() {
    let gw = TestGateway::start().await;
    let api = gw.management.unwrap();
    let conn = gw.connect().await;
    let q = unique("http-msg");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;

    let key = format!("routing_key={q}");
    let out = rabbitmqadmin(
        api,
        &[
            "publish",
            "exchange=amq.default",
            &key,
            "payload=hello over http",
            r#"properties={"delivery_mode":2,"headers":{"origin":"api"}}"#,
        ],
    )
    .await;
    assert!(out.contains("Message published"), "{out}");
    assert!(!out.contains("NOT routed"), "{out}");
    let unrouted = rabbitmqadmin(
        api,
        &[
            "publish",
            "exchange=amq.default",
            "routing_key=nowhere-at-all",
            "payload=x",
        ],
    )
    .await;
    assert!(unrouted.contains("NOT routed"), "{unrouted}");

    // AMQP sees it as published, properties included.
    let got = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message published over HTTP");
    assert_eq!(got.delivery.data, b"hello over http");
    assert_eq!(*got.delivery.properties.delivery_mode(), Some(2));
    let origin = got
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("origin").cloned());
    assert_eq!(origin, Some(AMQPValue::LongString("api".into())));

    for i in 0..3 {
        let payload = format!("payload=m{i}");
        rabbitmqadmin(api, &["publish", "exchange=amq.default", &key, &payload]).await;
    }
    // Looked at and put back: still three.
    let path = format!("/api/queues/%2F/{q}/get");
    let (status, body) = http(
        api,
        "POST",
        &path,
        GUEST,
        r#"{"count":2,"ackmode":"ack_requeue_true","encoding":"auto"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    let payloads: Vec<&str> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["m0", "m1"]);
    assert_eq!(seen[0]["routing_key"], q.as_str());
    assert_eq!(seen[0]["payload_encoding"], "string");
    assert_eq!(message_count_expecting(&ch, &q, Some(3)).await, 3);
    // Taken for good with rabbitmqadmin: none left.
    let out = rabbitmqadmin(
        api,
        &[
            "get",
            &format!("queue={q}"),
            "count=3",
            "ackmode=ack_requeue_false",
        ],
    )
    .await;
    for i in 0..3 {
        assert!(out.contains(&format!("m{i}")), "{out}");
    }
    assert_eq!(message_count_expecting(&ch, &q, Some(0)).await, 0);

    // Bad requests: RabbitMQ's status codes, AMQP unaffected.
    let publish = "/api/exchanges/%2F/amq.default/publish";
    let (status, body) = http(
        api,
        "POST",
        publish,
        GUEST,
        r#"{"routing_key":"x","payload_encoding":"string","properties":{}}"#,
    )
    .await;
    assert_eq!(status, 400, "no payload: {body}");
    assert!(body.contains("payload"), "{body}");
    let (status, _) = http(api, "POST", publish, GUEST, "{not json").await;
    assert_eq!(status, 400);
    let (status, _) = http(
        api,
        "POST",
        "/api/exchanges/%2F/no-such-exchange/publish",
        GUEST,
        r#"{"routing_key":"x","payload":"p","payload_encoding":"string","properties":{}}"#,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = http(
        api,
        "POST",
        "/api/queues/%2F/no-such-queue/get",
        GUEST,
        r#"{"count":1,"ackmode":"ack_requeue_true","encoding":"auto"}"#,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(message_count_expecting(&ch, &q, Some(0)).await, 0);
}

#[tokio::test]
async fn uploaded_definitions_serve_amqp_at_once() {
    let gw = TestGateway::start().await;
    let api = gw.management.unwrap();
    let (q, x) = (unique("defs-q"), unique("defs-x"));
    let defs = serde_json::json!({
        "queues": [{"name": q, "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}],
        "exchanges": [{"name": x, "vhost": "/", "type": "fanout", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}],
        "bindings": [{"source": x, "vhost": "/", "destination": q, "destination_type": "queue", "routing_key": "", "arguments": {}}],
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), defs.to_string()).unwrap();
    let out = rabbitmqadmin(api, &["import", file.path().to_str().unwrap()]).await;
    assert!(out.contains("Uploaded definitions"), "{out}");

    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let out = rabbitmqadmin(
        api,
        &[
            "publish",
            &format!("exchange={x}"),
            "routing_key=any",
            "payload=via the imported binding",
        ],
    )
    .await;
    assert!(
        out.contains("Message published") && !out.contains("NOT routed"),
        "{out}"
    );
    assert_eq!(message_count_expecting(&ch, &q, Some(1)).await, 1);

    let (status, _) = http(api, "POST", "/api/definitions", GUEST, "[1,2").await;
    assert_eq!(status, 400, "malformed definitions");
}
