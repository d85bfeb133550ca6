//! The management API driven by a client nobody here wrote: the
//! `rabbitmq_http_client` crate (the library under rabbitmqadmin v2), which
//! parses every answer into its own types, so a field it needs that the
//! gateway leaves out fails the test.

use std::time::{Duration, Instant};

use lapin::ConnectionProperties;
use rabbitmq_http_client::api::Client;
use rabbitmq_http_client::requests::{ExchangeParams, MessageProperties, QueueParams};

use crate::harness::{unique, TestGateway};
use crate::management::closed_by_server;

#[tokio::test]
async fn rabbitmq_http_client_declares_publishes_gets_purges_exports_and_closes() {
    let gw = TestGateway::start().await;
    let endpoint = format!("http://{}/api", gw.management.unwrap());
    let rc = Client::new(endpoint.as_str(), "guest", "guest");
    let version = rc.server_version().await.expect("overview parses");
    assert!(version.starts_with("3."), "{version}");

    let (q, ex) = (unique("rhc-q"), unique("rhc-ex"));
    rc.declare_queue("/", &QueueParams::new_durable_classic_queue(&q, None))
        .await
        .expect("queue declared");
    rc.declare_exchange("/", &ExchangeParams::durable_fanout(&ex, None))
        .await
        .expect("exchange declared");
    rc.bind_queue("/", &q, &ex, None, None)
        .await
        .expect("bound");
    let bindings = rc.list_queue_bindings("/", &q).await.unwrap();
    assert!(bindings.iter().any(|b| b.source == ex), "{bindings:?}");

    for body in ["one", "two"] {
        let routed = rc
            .publish_message("/", &ex, "", body, MessageProperties::default())
            .await
            .expect("published");
        assert!(routed.routed);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = rc.get_queue_info("/", &q).await.expect("queue info parses");
        if info.message_count == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = rc.list_queues_in("/").await.expect("queue listing parses");
    assert!(listed.iter().any(|i| i.name == q));
    let got = rc
        .get_messages("/", &q, 1, "ack_requeue_false")
        .await
        .expect("got");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, "one");
    assert_eq!(got[0].exchange, ex);
    rc.purge_queue("/", &q).await.expect("purged");
    assert_eq!(rc.get_queue_info("/", &q).await.unwrap().message_count, 0);

    // Definitions round trip: exported, the queue deleted, imported back.
    let definitions = rc
        .export_cluster_wide_definitions_as_data()
        .await
        .expect("definitions parse");
    assert!(definitions.queues.iter().any(|d| d.name == q));
    let raw = rc.export_cluster_wide_definitions().await.unwrap();
    rc.delete_queue("/", &q, false).await.expect("deleted");
    assert!(rc.get_queue_info("/", &q).await.is_err(), "gone");
    rc.import_definitions(serde_json::from_str(&raw).unwrap())
        .await
        .expect("imported");
    rc.get_queue_info("/", &q)
        .await
        .expect("back from the import");

    // A connection listed and closed with the reason given.
    let name = unique("rhc-conn");
    let conn = lapin::Connection::connect(
        &gw.uri(),
        ConnectionProperties::default()
            .with_client_property("connection_name".into(), name.as_str().into()),
    )
    .await
    .unwrap();
    let events = conn.events_listener();
    let listed = rc.list_connections().await.expect("connections parse");
    let mine = listed
        .iter()
        .find(|c| c.client_properties.connection_name == name)
        .expect("listed");
    rc.close_connection(&mine.name, Some("maintenance"), false)
        .await
        .expect("closed");
    let error = closed_by_server(events, "the client was told").await;
    assert_eq!(crate::reply_code(&error), Some(320), "{error}");
    assert!(error.to_string().contains("maintenance"), "{error}");
    rc.delete_queue("/", &q, false).await.unwrap();
    rc.delete_exchange("/", &ex, false).await.unwrap();
}
