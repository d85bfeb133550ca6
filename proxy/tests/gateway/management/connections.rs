//! What is open on a gateway, through the management API: connections,
//! channels and consumers as rabbitmqadmin lists them, and a connection
//! closed through the API with 320 and RabbitMQ's reason, its unacked
//! messages back in the queue.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

use crate::consume::{fill, queue_with_channel};
use crate::harness::{unique, TestGateway};
use crate::management::{closed_by_server, http, http_with, rabbitmqadmin};
use crate::publish::message_count_expecting;

const GUEST: Option<&str> = Some("guest:guest");

async fn get_json(api: std::net::SocketAddr, path: &str) -> Value {
    let (status, body) = http(api, "GET", path, GUEST, "").await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn the_api_lists_what_is_open_and_closes_a_connection_with_320() {
    let gw = TestGateway::start().await;
    let api = gw.management.expect("management API");
    let name = unique("api-conn");
    let conn = Connection::connect(
        &gw.uri(),
        ConnectionProperties::default()
            .with_client_property("connection_name".into(), name.as_str().into()),
    )
    .await
    .unwrap();
    let closed_with: Arc<Mutex<Option<lapin::Error>>> = Arc::default();
    let seen = closed_with.clone();
    let mut events = conn.events_listener();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let lapin::Event::Error(e) = event {
                *seen.lock().unwrap() = Some(e);
            }
        }
    });
    let q = unique("api-conn-q");
    let ch = queue_with_channel(&conn, &q, FieldTable::default()).await;
    fill(&ch, &q, 3).await;
    let cc = conn.create_channel().await.unwrap();
    cc.basic_qos(10, BasicQosOptions::default()).await.unwrap();
    let _consumer = cc
        .basic_consume(
            q.as_str().into(),
            "api-tag".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // rabbitmqadmin, a client nobody here wrote, lists them.
    let listed = rabbitmqadmin(api, &["list", "connections", "name", "user", "channels"]).await;
    let line = listed
        .lines()
        .find(|l| l.contains("guest"))
        .unwrap_or_else(|| panic!("the connection in {listed}"));
    assert!(line.ends_with("\t2"), "two channels: {line}");
    let channels = rabbitmqadmin(
        api,
        &[
            "list",
            "channels",
            "number",
            "consumer_count",
            "messages_unacknowledged",
        ],
    )
    .await;
    assert!(
        channels.lines().any(|l| l == "2\t1\t3"),
        "the consumer's channel holds 3 unacked: {channels}"
    );
    let consumers = rabbitmqadmin(api, &["list", "consumers", "consumer_tag", "queue.name"]).await;
    assert!(
        consumers.lines().any(|l| l == format!("api-tag\t{q}")),
        "{consumers}"
    );

    let all = get_json(api, "/api/connections").await;
    let ours = all
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["user_provided_name"] == name.as_str())
        .expect("listed with its connection_name")
        .clone();
    for field in [
        "name",
        "node",
        "protocol",
        "user",
        "connected_at",
        "client_properties",
    ] {
        assert!(!ours[field].is_null(), "{field} in {ours}");
    }
    assert_eq!(ours["vhost"], "/");
    let nodes = get_json(api, "/api/nodes").await;
    assert!(nodes
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["name"] == ours["node"]));
    let overview = get_json(api, "/api/overview").await;
    assert_eq!(overview["object_totals"]["connections"], 1);
    let stats = &overview["message_stats"];
    assert!(
        stats["publish"].as_u64() >= Some(3),
        "publishes counted: {stats}"
    );
    assert!(stats["publish_details"]["rate"].is_number(), "{stats}");

    let conn_name = ours["name"].as_str().unwrap();
    let path = format!("/api/connections/{}", urlencode(conn_name));
    let (status, _) = http_with(
        api,
        "DELETE",
        &path,
        GUEST,
        "x-reason: moving you to another host\r\n",
        "",
    )
    .await;
    assert_eq!(status, 204);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while closed_with.lock().unwrap().is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let error = closed_with
        .lock()
        .unwrap()
        .take()
        .expect("the client was closed");
    assert_eq!(crate::reply_code(&error), Some(320), "{error}");
    assert!(
        error.to_string().contains("moving you to another host"),
        "{error}"
    );
    // Its three unacked messages are back, ready.
    let check = gw.connect().await.create_channel().await.unwrap();
    assert_eq!(message_count_expecting(&check, &q, Some(3)).await, 3);
    let (status, _) = http(api, "GET", &path, GUEST, "").await;
    assert_eq!(status, 404, "gone from the list");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Two gateways on one meta store: the API of either lists the other's
/// connections and closes them there.
#[tokio::test]
async fn any_gateway_lists_and_closes_the_connections_of_every_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("meta.db").display());
    let a = TestGateway::start_with(|c| c.meta_url = url.clone()).await;
    let b = TestGateway::start_with(|c| c.meta_url = url.clone()).await;
    let api = a.management.unwrap();
    let name = unique("elsewhere");
    let conn = Connection::connect(
        &b.uri(),
        ConnectionProperties::default()
            .with_client_property("connection_name".into(), name.as_str().into()),
    )
    .await
    .unwrap();
    let events = conn.events_listener();
    let _ch = conn.create_channel().await.unwrap();

    // Heartbeats carry each gateway's API address within a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let listed = loop {
        let all = get_json(api, "/api/connections").await;
        let found = all
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["user_provided_name"] == name.as_str())
            .cloned();
        if let Some(found) = found {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B's connection listed through A: {all}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(
        listed["node"],
        get_json(api, "/api/overview").await["node"],
        "listed as B's, not A's"
    );
    let own = get_json(api, "/api/connections?local=true").await;
    assert!(own
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["user_provided_name"] != name.as_str()));
    let channels = get_json(api, "/api/channels").await;
    assert!(channels
        .as_array()
        .unwrap()
        .iter()
        .any(|ch| ch["connection_details"]["name"] == listed["name"]));

    let path = format!(
        "/api/connections/{}",
        urlencode(listed["name"].as_str().unwrap())
    );
    let (status, _) = http(api, "DELETE", &path, GUEST, "").await;
    assert_eq!(status, 204, "closed through A");
    let error = closed_by_server(events, "B's client was closed").await;
    assert_eq!(crate::reply_code(&error), Some(320), "{error}");
    assert!(
        error.to_string().contains("Closed via management plugin"),
        "{error}"
    );
}
