//! AMQP over TLS (amqps) with lapin's rustls: the gateway's certificate,
//! client certificates verified against a CA and logging in with EXTERNAL,
//! certificates from another CA refused, and certificate files read again
//! when they change. Certificates: tests/certs (make.sh).

use std::path::PathBuf;
use std::sync::Arc;

use lapin::options::{BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::harness::{unique, TestGateway};

fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/certs")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(cert(name)).expect("test certificate")
}

/// A gateway serving amqps on a free loopback port with tests/certs'
/// server certificate (and, with `ca`, asking clients for theirs).
async fn tls_gateway(ca: bool, require: bool) -> TestGateway {
    TestGateway::start_with(|c| {
        if ca {
            c.auth_mechanisms = "PLAIN AMQPLAIN EXTERNAL".into();
        }
        c.tls_listen = "127.0.0.1:0".into();
        c.tls_certificate = cert("server.pem").display().to_string();
        c.tls_key = cert("server.key").display().to_string();
        if ca {
            c.tls_ca = cert("ca.pem").display().to_string();
        }
        c.tls_fail_if_no_peer_cert = require;
    })
    .await
}

fn amqps_uri(gw: &TestGateway, credentials: &str, query: &str) -> String {
    let port = gw.gateway.amqps_address.get().expect("amqps bound").port();
    format!("amqps://{credentials}localhost:{port}/%2f{query}")
}

/// Trusts tests/certs' CA; shows `identity` (a certificate and key of
/// tests/certs) when given.
fn client_tls(identity: Option<&str>) -> OwnedTLSConfig {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    OwnedTLSConfig {
        identity: identity.map(|name| OwnedIdentity::PKCS8 {
            pem: read(&format!("{name}.pem")).into_bytes(),
            key: read(&format!("{name}.key")).into_bytes(),
        }),
        cert_chain: Some(read("ca.pem")),
    }
}

async fn connect(uri: &str, tls: OwnedTLSConfig) -> Result<Connection, lapin::Error> {
    let runtime = lapin::runtime::default_runtime().expect("runtime");
    Connection::connect_with_config(uri, ConnectionProperties::default(), tls, runtime).await
}

/// Publishes one message with a confirm and gets it back.
async fn round_trip(conn: &Connection) {
    let ch = conn.create_channel().await.unwrap();
    let q = unique("tls");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let body = vec![7u8; 200_000];
    crate::publish::publish_all(
        &ch,
        [("", q.as_str(), body.as_slice(), BasicProperties::default())],
    )
    .await;
    let got = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message comes back over TLS");
    assert_eq!(got.delivery.data, body);
}

#[tokio::test]
async fn amqps_carries_messages_and_plain_amqp_goes_on_beside_it() {
    let gw = tls_gateway(false, false).await;
    let conn = connect(&amqps_uri(&gw, "guest:guest@", ""), client_tls(None))
        .await
        .expect("TLS connection with guest/guest");
    round_trip(&conn).await;
    let plain = gw.connect().await;
    round_trip(&plain).await;
}

#[tokio::test]
async fn a_client_certificate_logs_in_with_external_as_its_common_name() {
    let gw = tls_gateway(true, false).await;
    let uri = amqps_uri(&gw, "", "?auth_mechanism=external");
    // No such user yet: refused, as RabbitMQ refuses an unknown user.
    let refused = connect(&uri, client_tls(Some("client"))).await;
    assert!(refused.is_err(), "EXTERNAL as an unknown user is refused");

    gw.add_user("tls-user", "not used", ".*").await;
    let conn = connect(&uri, client_tls(Some("client")))
        .await
        .expect("EXTERNAL login as tls-user");
    round_trip(&conn).await;
    let listed = gw.gateway.connections.snapshot();
    assert!(
        listed.iter().any(|e| e.tls
            && e.opened
                .get()
                .is_some_and(|o| o.user == "tls-user" && o.auth_mechanism == "EXTERNAL")),
        "listed as a TLS connection of tls-user by EXTERNAL"
    );

    // Without a certificate EXTERNAL is not offered; PLAIN still works
    // (the CA is asked for, not required).
    assert!(connect(&uri, client_tls(None)).await.is_err());
    let conn = connect(&amqps_uri(&gw, "guest:guest@", ""), client_tls(None))
        .await
        .expect("PLAIN without a client certificate");
    round_trip(&conn).await;
}

#[tokio::test]
async fn a_certificate_of_another_ca_or_none_when_required_is_refused() {
    let gw = tls_gateway(true, true).await;
    let uri = amqps_uri(&gw, "guest:guest@", "");
    assert!(
        connect(&uri, client_tls(Some("stranger"))).await.is_err(),
        "a certificate another CA signed"
    );
    assert!(
        connect(&uri, client_tls(None)).await.is_err(),
        "no certificate with tls_fail_if_no_peer_cert"
    );
    let conn = connect(&uri, client_tls(Some("client")))
        .await
        .expect("the CA's client certificate");
    round_trip(&conn).await;
}

/// A TLS client that trusts tests/certs' CA and shows no certificate.
fn trusting_connector() -> tokio_rustls::TlsConnector {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(x509_der(&read(
            "ca.pem",
        ))))
        .unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The certificate a TLS client is shown on `port`.
async fn presented(port: u16) -> Vec<u8> {
    let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = trusting_connector()
        .connect(name, socket)
        .await
        .expect("handshake");
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The DER of the first certificate in a PEM text.
fn x509_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_while_open_ones_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(cert("server.pem"), &cert_path).unwrap();
    std::fs::copy(cert("server.key"), &key_path).unwrap();
    let gw = TestGateway::start_with(|c| {
        c.tls_listen = "127.0.0.1:0".into();
        c.tls_certificate = cert_path.display().to_string();
        c.tls_key = key_path.display().to_string();
    })
    .await;
    let port = gw.gateway.amqps_address.get().unwrap().port();
    let tls = gw.gateway.tls.clone().expect("TLS configured");
    assert_eq!(presented(port).await, x509_der(&read("server.pem")));
    let open = connect(&amqps_uri(&gw, "guest:guest@", ""), client_tls(None))
        .await
        .unwrap();

    // A broken file is refused and the old certificate stays.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    assert!(!tls.reload_if_changed(), "a broken file is not taken");
    assert_eq!(presented(port).await, x509_der(&read("server.pem")));

    std::fs::copy(cert("server2.pem"), &cert_path).unwrap();
    std::fs::copy(cert("server2.key"), &key_path).unwrap();
    assert!(tls.reload_if_changed(), "the renewed files are taken");
    assert_eq!(presented(port).await, x509_der(&read("server2.pem")));
    round_trip(&open).await;
}

/// GET `path` of a management API over HTTPS as guest; status and body.
async fn https_get(api: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = trusting_connector();
    let socket = tokio::net::TcpStream::connect(api).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector
        .connect(name, socket)
        .await
        .expect("HTTPS handshake");
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

#[tokio::test]
async fn the_management_api_over_https_lists_every_gateways_connections() {
    let dir = tempfile::tempdir().unwrap();
    let meta_url = format!("sqlite:{}", dir.path().join("meta.db").display());
    let start = || {
        let meta_url = meta_url.clone();
        TestGateway::start_with(move |c| {
            c.meta_url = meta_url;
            c.tls_listen = "127.0.0.1:0".into();
            c.tls_certificate = cert("server.pem").display().to_string();
            c.tls_key = cert("server.key").display().to_string();
            c.tls_ca = cert("ca.pem").display().to_string();
            c.management_tls = true;
        })
    };
    let (first, second) = (start().await, start().await);
    let _client = second.connect().await;
    let api = first.management.expect("management API");
    let (status, body) = https_get(api, "/api/overview").await;
    assert_eq!(status, 200, "{body}");
    // Plain HTTP on the HTTPS port gets no API answer.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut plain = tokio::net::TcpStream::connect(api).await.unwrap();
        plain
            .write_all(b"GET /api/overview HTTP/1.1\r\nhost: x\r\nauthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer).await;
        assert!(
            !answer.starts_with(b"HTTP/1.1 200"),
            "no API over plain HTTP"
        );
    }
    // The second gateway's connection, asked of it over HTTPS by the first.
    let mut listed = String::new();
    for _ in 0..50 {
        listed = https_get(api, "/api/connections").await.1;
        if listed.contains("\"ssl\":false") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let connections: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(
        connections.as_array().map(Vec::len),
        Some(1),
        "the other gateway's connection: {listed}"
    );
    // Debian's rabbitmqadmin over HTTPS, checking the certificate.
    let ca = cert("ca.pem").display().to_string();
    let listed = crate::management::rabbitmqadmin(
        api,
        &[
            "--ssl",
            "--ssl-ca-cert-file",
            &ca,
            "list",
            "connections",
            "user",
        ],
    )
    .await;
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        ["user", "guest"],
        "{listed}"
    );
}
