//! Security defects a probe found (issue 12): each test failed before its fix.

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, connection, AMQPClass};

use crate::harness::TestGateway;
use crate::raw::Raw;

/// A field table holding a table holding ... `depth` tables, as bytes built
/// without recursion (so the test itself cannot overflow).
fn nested_table(depth: usize) -> Vec<u8> {
    let mut table = vec![0, 0, 0, 0];
    for _ in 1..depth {
        let mut entry = vec![1, b'x', b'F'];
        entry.extend_from_slice(&table);
        table = (entry.len() as u32).to_be_bytes().to_vec();
        table.extend_from_slice(&entry);
    }
    table
}

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f.push(0xCE);
    f
}

fn short_string(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn long_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// connection.start-ok with the given client properties (bytes of a table).
fn start_ok(client_properties: &[u8], mechanism: &str, response: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 10, 0, 11];
    p.extend_from_slice(client_properties);
    short_string(&mut p, mechanism);
    long_string(&mut p, response);
    short_string(&mut p, "en_US");
    frame(1, 0, &p)
}

async fn greeted(gw: &TestGateway) -> Raw {
    let mut raw = Raw::tcp(gw.addr).await;
    raw.send_bytes(b"AMQP\x00\x00\x09\x01").await;
    match raw.recv().await {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(_)))) => raw,
        other => panic!("expected connection.start, got {other:?}"),
    }
}

#[tokio::test]
async fn deeply_nested_tables_are_refused_with_502_and_crash_nothing() {
    let gw = TestGateway::start().await;
    let bystander = gw.connect().await;

    // Before login, in client_properties, with a wrong password: 150 levels
    // overflowed the parser's stack and aborted the process.
    let mut raw = greeted(&gw).await;
    raw.send_bytes(&start_ok(&nested_table(150), "PLAIN", b"\0guest\0wrong"))
        .await;
    assert_eq!(raw.connection_close_code().await, 502);

    // Tables in arrays in tables: 10,000 levels in one frame.
    let (mut deep, mut deep_tag) = (vec![0, 0, 0, 0], b'F');
    for i in 0..10_000 {
        let in_table = i % 2 == 1;
        let mut entry = if in_table { vec![1, b'k'] } else { vec![] };
        entry.push(deep_tag);
        entry.extend_from_slice(&deep);
        deep = (entry.len() as u32).to_be_bytes().to_vec();
        deep.extend_from_slice(&entry);
        deep_tag = if in_table { b'F' } else { b'A' };
    }
    let mut inner = vec![1, b'a', deep_tag];
    inner.extend_from_slice(&deep);
    let mut wrapped = vec![];
    long_string(&mut wrapped, &inner);
    // (Over 4,096 bytes before tune-ok: refused as too large a frame
    // before anything is parsed, 501, as RabbitMQ refuses it.)
    let mut raw = greeted(&gw).await;
    raw.send_bytes(&start_ok(&wrapped, "PLAIN", b"\0guest\0guest"))
        .await;
    assert_eq!(raw.connection_close_code().await, 501);

    // AMQPLAIN's response is itself a table: a deep one is a refused login
    // (told by closing the socket: these client properties do not
    // advertise authentication_failure_close).
    let mut raw = greeted(&gw).await;
    let response = &nested_table(150)[4..];
    raw.send_bytes(&start_ok(&nested_table(1), "AMQPLAIN", response))
        .await;
    assert!(raw.recv().await.is_none(), "refused: the socket closed");

    // After login: message headers and queue arguments.
    let mut raw = Raw::open(gw.addr, 0).await;
    raw.open_channel(1).await;
    raw.send(AMQPFrame::Method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "nowhere".into(),
            mandatory: false,
            immediate: false,
        })),
    ))
    .await;
    // class 60, weight 0, body size 0, flags: headers only, then the table.
    let mut header = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0];
    header.extend_from_slice(&nested_table(200));
    raw.send_bytes(&frame(2, 1, &header)).await;
    assert_eq!(raw.connection_close_code().await, 502);

    let mut raw = Raw::open(gw.addr, 0).await;
    raw.open_channel(1).await;
    let mut declare = vec![0, 50, 0, 10, 0, 0];
    short_string(&mut declare, "deep-args");
    declare.push(0);
    declare.extend_from_slice(&nested_table(200));
    raw.send_bytes(&frame(1, 1, &declare)).await;
    assert_eq!(raw.connection_close_code().await, 502);

    // Depths real clients use still pass, and the process is alive.
    let mut raw = greeted(&gw).await;
    raw.send_bytes(&start_ok(&nested_table(8), "PLAIN", b"\0guest\0guest"))
        .await;
    match raw.recv().await {
        Some(AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(_)))) => {}
        other => panic!("expected connection.tune, got {other:?}"),
    }
    bystander
        .create_channel()
        .await
        .expect("the bystander's connection still works");
}

#[tokio::test]
async fn an_empty_permission_pattern_grants_nothing() {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let gw = TestGateway::start().await;
    let intruder = crate::harness::unique("empty-perms");
    gw.add_user(&intruder, "pw", "").await;
    let victim = crate::harness::unique("victim");
    let owner = gw.connect().await;
    let owner_ch = owner.create_channel().await.unwrap();
    owner_ch
        .queue_declare(
            victim.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    owner_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    owner_ch
        .basic_publish(
            "".into(),
            victim.as_str().into(),
            BasicPublishOptions::default(),
            b"mine",
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let uri = format!("amqp://{intruder}:pw@{}/%2f", gw.addr);
    let mut conn = None;
    for _ in 0..100 {
        // The gateway follows the store: the user appears within moments.
        match lapin::Connection::connect(&uri, Default::default()).await {
            Ok(c) => {
                conn = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let conn = conn.expect("the intruder logs in (login needs no permission pattern)");
    let ch = conn.create_channel().await.unwrap();
    let got = ch
        .basic_get(victim.as_str().into(), Default::default())
        .await;
    assert_eq!(
        crate::reply_code(&got.expect_err("read \"\" refuses basic.get")),
        Some(403)
    );
    let ch = conn.create_channel().await.unwrap();
    let deleted = ch
        .queue_delete(victim.as_str().into(), Default::default())
        .await;
    assert_eq!(
        crate::reply_code(&deleted.expect_err("configure \"\" refuses delete")),
        Some(403)
    );
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let published = ch
        .basic_publish(
            "".into(),
            victim.as_str().into(),
            BasicPublishOptions::default(),
            b"theirs",
            Default::default(),
        )
        .await
        .unwrap()
        .await;
    assert_eq!(
        crate::reply_code(&published.expect_err("write \"\" refuses publishing")),
        Some(403)
    );

    let kept = owner_ch
        .queue_declare(
            victim.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the queue is still there");
    assert_eq!(
        kept.message_count(),
        1,
        "and holds only its owner's message"
    );
}

#[tokio::test]
async fn guest_from_127_0_0_1_logs_in_on_a_dual_stack_listener() {
    let gw = TestGateway::start().await;
    let Ok((addr, _task)) =
        proxy::server::spawn(gw.gateway.clone(), "[::]:0".parse().unwrap()).await
    else {
        eprintln!("no IPv6 on this machine: nothing to check");
        return;
    };
    let uri = format!("amqp://guest:guest@127.0.0.1:{}/%2f", addr.port());
    lapin::Connection::connect(&uri, Default::default())
        .await
        .expect("guest from ::ffff:127.0.0.1 is a loopback user");
}
