//! RabbitMQ's management HTTP API on the gateway, driven by a client
//! nobody here wrote (Debian's `rabbitmqadmin`) and by raw HTTP for the
//! error answers; topology it changes is what AMQP sees, and the reverse.

mod connections;
mod http_client;
mod messages;
mod page;
mod stats;

use std::net::SocketAddr;
use std::process::Command;

use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{unique, TestGateway};
use crate::publish::{message_count_expecting, publish_all};
use crate::reply_code;

/// Runs rabbitmqadmin against the gateway's API as guest; its stdout. (On
/// the blocking pool: the gateway answers on this test's runtime.)
pub async fn rabbitmqadmin(api: SocketAddr, args: &[&str]) -> String {
    let owned: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("rabbitmqadmin")
            .args(["-H", "127.0.0.1", "-P", &api.port().to_string()])
            .args(["-u", "guest", "-p", "guest", "-f", "tsv"])
            .args(&owned)
            .output()
    })
    .await
    .unwrap()
    .expect("rabbitmqadmin runs (Debian's rabbitmq-server installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rabbitmqadmin {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn rabbitmqadmin_declares_lists_binds_purges_and_deletes_what_amqp_sees() {
    let gw = TestGateway::start().await;
    let api = gw.management.expect("management API listening");
    let (q, ex) = (unique("admin-q"), unique("admin-ex"));
    rabbitmqadmin(
        api,
        &["declare", "queue", &format!("name={q}"), "durable=true"],
    )
    .await;
    rabbitmqadmin(
        api,
        &["declare", "exchange", &format!("name={ex}"), "type=direct"],
    )
    .await;
    rabbitmqadmin(
        api,
        &[
            "declare",
            "binding",
            &format!("source={ex}"),
            &format!("destination={q}"),
            "routing_key=k",
        ],
    )
    .await;
    // What the API declared and bound routes AMQP publishes.
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    publish_all(
        &ch,
        (0..3).map(|_| (ex.as_str(), "k", &b"x"[..], Default::default())),
    )
    .await;
    assert_eq!(message_count_expecting(&ch, &q, Some(3)).await, 3);
    // The API counts what AMQP counts.
    let listed = rabbitmqadmin(api, &["list", "queues", "name", "messages"]).await;
    assert!(
        listed.lines().any(|l| l == format!("{q}\t3")),
        "list queues shows 3 messages: {listed}"
    );
    let bindings = rabbitmqadmin(
        api,
        &["list", "bindings", "source", "destination", "routing_key"],
    )
    .await;
    assert!(
        bindings.lines().any(|l| l == format!("{ex}\t{q}\tk")),
        "{bindings}"
    );
    // The binding, seen from the exchange and from the queue, then deleted.
    for path in [
        format!("/api/exchanges/%2F/{ex}/bindings/source"),
        format!("/api/queues/%2F/{q}/bindings"),
        format!("/api/bindings/%2F/e/{ex}/q/{q}"),
    ] {
        let (status, body) = http(api, "GET", &path, Some("guest:guest"), "").await;
        assert_eq!(status, 200, "{path}: {body}");
        let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["source"] == ex.as_str() && b["routing_key"] == "k"),
            "{path}: {body}"
        );
    }
    rabbitmqadmin(
        api,
        &[
            "delete",
            "binding",
            &format!("source={ex}"),
            &format!("destination={q}"),
            "destination_type=queue",
            "properties_key=k",
        ],
    )
    .await;
    let bindings = rabbitmqadmin(api, &["list", "bindings", "source", "destination"]).await;
    assert!(
        !bindings.lines().any(|l| l == format!("{ex}\t{q}")),
        "{bindings}"
    );
    let (status, _) = http(
        api,
        "DELETE",
        &format!("/api/bindings/%2F/e/{ex}/q/{q}/k"),
        Some("guest:guest"),
        "",
    )
    .await;
    assert_eq!(status, 404, "already gone");
    rabbitmqadmin(api, &["purge", "queue", &format!("name={q}")]).await;
    assert_eq!(message_count_expecting(&ch, &q, Some(0)).await, 0);
    rabbitmqadmin(api, &["delete", "queue", &format!("name={q}")]).await;
    let gone = ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&gone), Some(404), "deleted through the API");
}

/// The error a client's connection was closed with by the server, within
/// 5 s of asking (`events` from `events_listener()` before the close).
pub async fn closed_by_server(
    mut events: impl futures_util::Stream<Item = lapin::Event> + Unpin,
    what: &str,
) -> lapin::Error {
    use futures_util::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match events.next().await {
                Some(lapin::Event::Error(e)) => return e,
                Some(_) => {}
                None => panic!("{what}: events ended without an error"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not closed within 5 s"))
}

/// One raw HTTP/1.1 request; the status code and body.
pub async fn http(
    api: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String) {
    http_with(api, method, path, auth, "", body).await
}

/// The same, with more header lines (each ending in CRLF).
pub async fn http_with(
    api: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(api).await.unwrap();
    let auth = auth
        .map(|a| {
            use base64::Engine;
            format!(
                "authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(a)
            )
        })
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}{headers}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[tokio::test]
async fn bad_requests_get_rabbitmqs_status_codes_and_error_shape() {
    let gw = TestGateway::start().await;
    let api = gw.management.expect("management API listening");
    let guest = Some("guest:guest");
    let (status, body) = http(api, "GET", "/api/overview", None, "").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"error\":\"not_authorized\""), "{body}");
    assert_eq!(
        http(api, "GET", "/api/overview", Some("guest:wrong"), "")
            .await
            .0,
        401
    );
    let (status, body) = http(api, "GET", "/api/whoami", guest, "").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"name\":\"guest\"") && body.contains("administrator"),
        "{body}"
    );
    let (status, body) = http(api, "GET", "/api/queues/%2F/no-such-queue", guest, "").await;
    assert_eq!(
        (status, body.contains("Object Not Found")),
        (404, true),
        "{body}"
    );
    let q = unique("api-bad");
    let path = format!("/api/queues/%2F/{q}");
    let (status, body) = http(api, "PUT", &path, guest, "{not json").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_request"), "{body}");
    // The same refusal queue.declare gives (406 there), with its reason.
    let (status, body) = http(
        api,
        "PUT",
        &path,
        guest,
        r#"{"arguments":{"x-max-length":-1}}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("x-max-length"), "{body}");
    assert_eq!(
        http(api, "PUT", &path, guest, r#"{"durable":true}"#)
            .await
            .0,
        201
    );
    assert_eq!(
        http(api, "PUT", &path, guest, r#"{"durable":true}"#)
            .await
            .0,
        204,
        "declared again"
    );
    let (status, body) = http(api, "GET", &path, guest, "").await;
    assert_eq!(status, 200);
    let queue: serde_json::Value = serde_json::from_str(&body).unwrap();
    for field in [
        "name",
        "vhost",
        "type",
        "durable",
        "auto_delete",
        "exclusive",
        "arguments",
    ] {
        assert!(
            queue.get(field).is_some(),
            "the Rust client requires {field}: {body}"
        );
    }
    assert_eq!(queue["messages"], 0);
    // AMQP traffic is unaffected by all of the above.
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(message_count_expecting(&ch, &q, Some(0)).await, 0);
}

#[tokio::test]
async fn rabbitmqadmin_creates_a_user_that_logs_in_over_amqp_with_its_permissions() {
    let gw = TestGateway::start().await;
    let api = gw.management.expect("management API listening");
    let user = unique("app");
    rabbitmqadmin(
        api,
        &[
            "declare",
            "user",
            &format!("name={user}"),
            "password=s3cret",
            "tags=management",
        ],
    )
    .await;
    rabbitmqadmin(
        api,
        &[
            "declare",
            "permission",
            "vhost=/",
            &format!("user={user}"),
            "configure=^app-.*",
            "write=.*",
            "read=.*",
        ],
    )
    .await;
    let users = rabbitmqadmin(api, &["list", "users", "name", "tags"]).await;
    assert!(
        users.lines().any(|l| l.starts_with(&format!("{user}\t"))),
        "{users}"
    );
    let permissions = rabbitmqadmin(api, &["list", "permissions", "user", "configure"]).await;
    assert!(
        permissions.lines().any(|l| l == format!("{user}\t^app-.*")),
        "{permissions}"
    );
    for path in [
        format!("/api/users/{user}/permissions"),
        "/api/vhosts/%2F/permissions".to_owned(),
    ] {
        let (status, body) = http(api, "GET", &path, Some("guest:guest"), "").await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.contains("\"configure\":\"^app-.*\""), "{path}: {body}");
    }
    let (status, body) = http(
        api,
        "GET",
        &format!("/api/permissions/%2F/{user}"),
        Some("guest:guest"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let one: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (one["user"].as_str(), one["write"].as_str()),
        (Some(user.as_str()), Some(".*"))
    );
    // The new user logs in over AMQP at once, and its configure pattern holds.
    let uri = format!("amqp://{user}:s3cret@{}/%2f", gw.addr);
    let conn = lapin::Connection::connect(&uri, Default::default())
        .await
        .expect("the new user logs in");
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        unique("app-q").as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("allowed by ^app-.*");
    let refused = ch
        .queue_declare(
            unique("other").as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&refused), Some(403));
    // A management user may use the API, but users are for administrators.
    let (status, _) = http(
        api,
        "GET",
        "/api/users",
        Some(&format!("{user}:s3cret")),
        "",
    )
    .await;
    assert_eq!(status, 403, "users are for administrators");
    conn.close(200, "bye".into()).await.unwrap();
    // Without its permission the user may not open the vhost; deleted, it
    // may not log in.
    rabbitmqadmin(
        api,
        &["delete", "permission", "vhost=/", &format!("user={user}")],
    )
    .await;
    let refused = lapin::Connection::connect(&uri, Default::default())
        .await
        .expect_err("no permission on /");
    assert_eq!(reply_code(&refused), Some(530), "{refused}");
    rabbitmqadmin(api, &["delete", "user", &format!("name={user}")]).await;
    let users = rabbitmqadmin(api, &["list", "users", "name"]).await;
    assert!(!users.lines().any(|l| l == user), "{users}");
    assert!(
        lapin::Connection::connect(&uri, Default::default())
            .await
            .is_err(),
        "a deleted user cannot log in"
    );
}

#[tokio::test]
async fn a_vhost_created_through_the_api_serves_amqp_at_once_and_its_deletion_closes_its_connections(
) {
    let gw = TestGateway::start().await;
    let api = gw.management.expect("management API listening");
    let vhost = unique("vh");
    rabbitmqadmin(api, &["declare", "vhost", &format!("name={vhost}")]).await;
    let listed = rabbitmqadmin(api, &["list", "vhosts", "name"]).await;
    assert!(listed.lines().any(|l| l == vhost), "{listed}");
    // Its creator (guest) has full permissions on it, as in RabbitMQ.
    let uri = format!("amqp://guest:guest@{}/{vhost}", gw.addr);
    let conn = lapin::Connection::connect(&uri, Default::default())
        .await
        .expect("the new vhost opens");
    let ch = conn.create_channel().await.unwrap();
    let q = unique("in-vh");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let queues = rabbitmqadmin(api, &["-V", &vhost, "list", "queues", "name"]).await;
    assert!(queues.lines().any(|l| l == q), "{queues}");

    // Its definitions: its own objects, without a vhost field.
    let path = format!("/api/definitions/{vhost}");
    let (status, exported) = http(api, "GET", &path, Some("guest:guest"), "").await;
    assert_eq!(status, 200, "{exported}");
    let exported: serde_json::Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(exported["queues"][0]["name"], q.as_str(), "{exported}");
    assert!(exported["queues"][0].get("vhost").is_none(), "{exported}");
    assert!(exported.get("users").is_none(), "{exported}");

    // Deleted: its connections are closed with 320, its queues go with it.
    let events = conn.events_listener();
    rabbitmqadmin(api, &["delete", "vhost", &format!("name={vhost}")]).await;
    let closed = closed_by_server(events, "the vhost's connection").await;
    assert_eq!(reply_code(&closed), Some(320), "{closed}");
    let listed = rabbitmqadmin(api, &["list", "vhosts", "name"]).await;
    assert!(!listed.lines().any(|l| l == vhost), "{listed}");
    let (status, _) = http(
        api,
        "GET",
        &format!("/api/vhosts/{vhost}"),
        Some("guest:guest"),
        "",
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        lapin::Connection::connect(&uri, Default::default())
            .await
            .is_err(),
        "a deleted vhost does not open"
    );

    // Created again, its definitions come back from a multipart upload
    // (the form the management UI sends).
    rabbitmqadmin(api, &["declare", "vhost", &format!("name={vhost}")]).await;
    let form = format!(
        "--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"defs.json\"\r\n\
         Content-Type: application/json\r\n\r\n{exported}\r\n--b0undary--\r\n"
    );
    let (status, body) = http_with(
        api,
        "POST",
        &path,
        Some("guest:guest"),
        "content-type: multipart/form-data; boundary=b0undary\r\n",
        &form,
    )
    .await;
    assert!(status == 204 || status == 201, "{status} {body}");
    let queues = rabbitmqadmin(api, &["-V", &vhost, "list", "queues", "name"]).await;
    assert!(queues.lines().any(|l| l == q), "{queues}");
}

#[tokio::test]
async fn listings_filter_sort_and_page_as_rabbitmq_does() {
    let gw = TestGateway::start().await;
    let api = gw.management.unwrap();
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let prefix = unique("paged");
    for n in ["a", "b", "c"] {
        ch.queue_declare(
            format!("{prefix}-{n}").as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let path = format!(
        "/api/queues?page=1&page_size=2&name={prefix}&sort=name&sort_reverse=true&columns=name"
    );
    let (status, body) = http(api, "GET", &path, Some("guest:guest"), "").await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["filtered_count"], 3);
    assert_eq!(
        (page["item_count"].as_u64(), page["page_count"].as_u64()),
        (Some(2), Some(2))
    );
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [format!("{prefix}-c"), format!("{prefix}-b")]);
    let (_, body) = http(
        api,
        "GET",
        &path.replace("page=1", "page=2"),
        Some("guest:guest"),
        "",
    )
    .await;
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["items"][0]["name"], format!("{prefix}-a"));
    let regex = format!("/api/queues?name=%5E{prefix}-%5Bab%5D%24&use_regex=true&columns=name");
    let (_, body) = http(api, "GET", &regex, Some("guest:guest"), "").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2,
        "{body}"
    );
}

#[tokio::test]
async fn health_checks_answer_as_rabbitmq_and_fail_when_they_should() {
    let gw = TestGateway::start().await;
    let api = gw.management.unwrap();
    let guest = Some("guest:guest");
    let check = |path: String| async move { http(api, "GET", &path, guest, "").await };
    let amqp = format!("/api/health/checks/port-listener/{}", gw.addr.port());
    for path in [
        amqp,
        "/api/health/checks/alarms".to_owned(),
        "/api/health/checks/virtual-hosts".to_owned(),
        "/api/health/checks/protocol-listener/amqp".to_owned(),
        "/api/health/checks/certificate-expiration/1/months".to_owned(),
    ] {
        let (status, body) = check(path.clone()).await;
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"status":"ok"}"#),
            "{path}"
        );
    }
    let (status, body) = check("/api/health/checks/port-listener/1".into()).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(r#""status":"failed""#) && body.contains("No active listener"),
        "{body}"
    );
    let (status, _) = check("/api/health/checks/protocol-listener/stomp".into()).await;
    assert_eq!(status, 503);
    let (status, _) = check("/api/health/checks/no-such-check".into()).await;
    assert_eq!(status, 404);
}

/// Names with `/` and `%` in them, as clients may give them: each path
/// segment is decoded on its own, so `%2F` inside a name stays in the name.
#[tokio::test]
async fn names_with_slashes_and_percent_signs_are_one_object() {
    let gw = TestGateway::start().await;
    let api = gw.management.unwrap();
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    let name = format!("{}/orders%2Fq", unique("slash"));
    ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let encoded = name.replace('%', "%25").replace('/', "%2F");
    let (status, body) = http(
        api,
        "GET",
        &format!("/api/queues/%2F/{encoded}"),
        Some("guest:guest"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let queue: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(queue["name"], name.as_str());
    let (status, _) = http(
        api,
        "DELETE",
        &format!("/api/queues/%2F/{encoded}"),
        Some("guest:guest"),
        "",
    )
    .await;
    assert_eq!(status, 204);
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let gone = conn
        .create_channel()
        .await
        .unwrap()
        .queue_declare(name.as_str().into(), passive, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&gone), Some(404), "deleted through the API");
}
