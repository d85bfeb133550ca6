//! Connection layer: protocol header, login, tune, vhost, heartbeats, and the
//! spec's reply code for each protocol violation.

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, connection, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};
use lapin::options::QueueDeclareOptions;

use crate::harness::TestGateway;
use crate::raw::Raw;

#[tokio::test]
async fn a_wrong_protocol_header_gets_ours_back_and_the_socket_closed() {
    let gw = TestGateway::start().await;
    let mut raw = Raw::tcp(gw.addr).await;
    raw.send_bytes(b"AMQP\x01\x01\x00\x0a").await;
    let mut answer = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut raw.stream, &mut answer)
        .await
        .unwrap();
    assert_eq!(answer, b"AMQP\x00\x00\x09\x01");
}

/// Logs in as a client advertising `authentication_failure_close`.
async fn login(gw: &TestGateway, response: &str) -> Raw {
    let mut capabilities = FieldTable::default();
    capabilities.insert(
        "authentication_failure_close".into(),
        AMQPValue::Boolean(true),
    );
    let mut client_properties = FieldTable::default();
    client_properties.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    login_as(gw, response, client_properties).await
}

async fn login_as(gw: &TestGateway, response: &str, client_properties: FieldTable) -> Raw {
    let mut raw = Raw::tcp(gw.addr).await;
    raw.send_bytes(b"AMQP\x00\x00\x09\x01").await;
    raw.recv().await.expect("connection.start");
    raw.send(AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties,
            mechanism: "PLAIN".into(),
            response: response.into(),
            locale: "en_US".into(),
        })),
    ))
    .await;
    raw
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_403() {
    let gw = TestGateway::start().await;
    let mut raw = login(&gw, "\0guest\0wrong").await;
    assert_eq!(raw.connection_close_code().await, 403);
    let mut raw = login(&gw, "\0nobody\0guest").await;
    assert_eq!(raw.connection_close_code().await, 403);
    // Without authentication_failure_close the socket closes, no method
    // (RabbitMQ's answer, which such clients read as a possible
    // authentication failure).
    let mut raw = login_as(&gw, "\0guest\0wrong", FieldTable::default()).await;
    let next = raw.recv().await;
    assert!(next.is_none(), "the socket closed, got {next:?}");
    // Those were three refusals from this address: the next ones are
    // answered later and later (200 ms, then 400 ms...), a good login still
    // at once.
    for at_least in [200, 400] {
        let started = std::time::Instant::now();
        let mut raw = login(&gw, "\0guest\0wrong").await;
        assert_eq!(raw.connection_close_code().await, 403);
        let took = started.elapsed();
        assert!(
            took >= std::time::Duration::from_millis(at_least),
            "refusal answered after {took:?}, not slowed to {at_least} ms"
        );
    }
    // (A refusal now would wait 800 ms.)
    let started = std::time::Instant::now();
    Raw::open(gw.addr, 0).await;
    assert!(started.elapsed() < std::time::Duration::from_millis(800));
}

#[tokio::test]
async fn an_unknown_vhost_is_530() {
    let gw = TestGateway::start().await;
    let mut raw = login(&gw, "\0guest\0guest").await;
    raw.recv().await.expect("tune");
    raw.send(AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 0,
            frame_max: 131_072,
            heartbeat: 0,
        })),
    ))
    .await;
    raw.send(AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "no-such-vhost".into(),
        })),
    ))
    .await;
    assert_eq!(raw.connection_close_code().await, 530);
}

#[tokio::test]
async fn a_frame_over_frame_max_is_501_and_other_connections_carry_on() {
    let gw = TestGateway::start().await;
    let bystander = gw.connect().await;
    let mut raw = Raw::open(gw.addr, 0).await;
    raw.open_channel(1).await;
    // A body frame claiming 1 MiB, above the negotiated 128 KiB.
    raw.send_bytes(&[3, 0, 1, 0, 0x10, 0, 0]).await;
    assert_eq!(raw.connection_close_code().await, 501);
    let ch = bystander
        .create_channel()
        .await
        .expect("bystander still works");
    ch.queue_declare(
        "".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("declare");
}

#[tokio::test]
async fn a_frame_without_its_end_octet_is_501() {
    let gw = TestGateway::start().await;
    let mut raw = Raw::open(gw.addr, 0).await;
    raw.send_bytes(&[8, 0, 0, 0, 0, 0, 0, 0x00]).await;
    assert_eq!(raw.connection_close_code().await, 501);
}

#[tokio::test]
async fn a_method_on_a_channel_that_is_not_open_is_504() {
    let gw = TestGateway::start().await;
    let mut raw = Raw::open(gw.addr, 0).await;
    raw.send(AMQPFrame::Method(
        7,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "x".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    ))
    .await;
    assert_eq!(raw.connection_close_code().await, 504);
}

#[tokio::test]
async fn a_content_header_without_a_publish_is_505() {
    let gw = TestGateway::start().await;
    let mut raw = Raw::open(gw.addr, 0).await;
    raw.open_channel(1).await;
    let header = AMQPContentHeader {
        class_id: 60,
        body_size: 3,
        properties: Default::default(),
    };
    raw.send(AMQPFrame::Header(1, header)).await;
    assert_eq!(raw.connection_close_code().await, 505);
}

#[tokio::test]
async fn an_unknown_method_is_540_and_malformed_arguments_502() {
    let gw = TestGateway::start().await;
    let mut raw = Raw::open(gw.addr, 0).await;
    raw.open_channel(1).await;
    raw.send_bytes(&[1, 0, 1, 0, 0, 0, 4, 0, 99, 0, 7, 0xCE])
        .await;
    assert_eq!(raw.connection_close_code().await, 540);

    let mut raw = Raw::open(gw.addr, 0).await;
    raw.open_channel(1).await;
    // queue.declare with its arguments cut off after one byte.
    raw.send_bytes(&[1, 0, 1, 0, 0, 0, 5, 0, 50, 0, 10, 0, 0xCE])
        .await;
    assert_eq!(raw.connection_close_code().await, 502);
}

#[tokio::test]
async fn publishing_with_immediate_is_540() {
    let gw = TestGateway::start().await;
    let mut raw = Raw::open(gw.addr, 0).await;
    raw.open_channel(1).await;
    let publish = basic::Publish {
        exchange: "".into(),
        routing_key: "q".into(),
        mandatory: false,
        immediate: true,
    };
    raw.send(AMQPFrame::Method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(publish)),
    ))
    .await;
    assert_eq!(raw.connection_close_code().await, 540);
}

#[tokio::test]
async fn a_channel_above_channel_max_is_refused() {
    let gw = TestGateway::start_with(|c| c.channel_max = 8).await;
    let mut raw = Raw::open(gw.addr, 0).await;
    raw.open_channel(8).await;
    raw.send(AMQPFrame::Method(
        9,
        AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::Open(
            amq_protocol::protocol::channel::Open {},
        )),
    ))
    .await;
    assert_eq!(raw.connection_close_code().await, 504);
}

#[tokio::test]
async fn heartbeats_are_sent_and_a_silent_client_is_dropped() {
    let gw = TestGateway::start().await;
    let mut raw = Raw::open(gw.addr, 1).await;
    let started = std::time::Instant::now();
    let mut beats = 0;
    // We never beat back: after two missed intervals the gateway closes the socket.
    while let Some(frame) = raw.recv().await {
        assert_eq!(frame, AMQPFrame::Heartbeat);
        beats += 1;
    }
    assert!(beats >= 1, "the gateway sent heartbeats");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= std::time::Duration::from_millis(1500)
            && elapsed < std::time::Duration::from_secs(5),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn lapin_connects_and_closes_cleanly() {
    let gw = TestGateway::start().await;
    let conn = gw.connect().await;
    let ch = conn.create_channel().await.unwrap();
    ch.close(200, "bye".into()).await.unwrap();
    conn.close(200, "bye".into()).await.unwrap();
}

#[tokio::test]
async fn a_channel_error_closes_only_that_channel() {
    let gw = TestGateway::start().await;
    let mut raw = Raw::open(gw.addr, 0).await;
    raw.open_channel(1).await;
    raw.open_channel(2).await;
    let publish = basic::Publish {
        exchange: "no-such-exchange".into(),
        routing_key: "k".into(),
        mandatory: false,
        immediate: false,
    };
    raw.send(AMQPFrame::Method(
        2,
        AMQPClass::Basic(basic::AMQPMethod::Publish(publish)),
    ))
    .await;
    assert_eq!(raw.channel_close_code().await, (2, 404));
    // Channel 1 still answers.
    raw.send(AMQPFrame::Method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "".into(),
            passive: false,
            durable: false,
            exclusive: true,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    ))
    .await;
    match raw.recv().await {
        Some(AMQPFrame::Method(1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)))) => {}
        other => panic!("expected queue.declare-ok on channel 1, got {other:?}"),
    }
}

#[tokio::test]
async fn channel_flow_is_answered_and_a_heartbeat_on_a_channel_is_505() {
    use amq_protocol::protocol::channel;
    let gw = TestGateway::start().await;
    let mut raw = Raw::open(gw.addr, 0).await;
    raw.open_channel(1).await;
    raw.send(AMQPFrame::Method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Flow(channel::Flow { active: false })),
    ))
    .await;
    match raw.recv().await {
        Some(AMQPFrame::Method(1, AMQPClass::Channel(channel::AMQPMethod::FlowOk(ok)))) => {
            assert!(!ok.active)
        }
        other => panic!("expected channel.flow-ok, got {other:?}"),
    }
    // RabbitMQ 3.10 answers 505 UNEXPECTED_FRAME (its Java suite checks it).
    raw.send(AMQPFrame::InvalidHeartbeat(1)).await;
    assert_eq!(raw.connection_close_code().await, 505);
}

/// A method's payload sent as a content header, where no content was
/// expected, is 505 UNEXPECTED_FRAME (RabbitMQ's answer), not a parse error.
#[tokio::test]
async fn a_content_header_where_a_method_was_expected_is_505() {
    let gw = TestGateway::start().await;
    let mut raw = Raw::open(gw.addr, 0).await;
    raw.open_channel(1).await;
    // basic.publish's payload (class 60, method 40) in a header frame.
    let payload = [0, 60, 0, 40, 0, 0, 0, 1, b'q', 0];
    let mut frame = vec![2, 0, 1];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    raw.send_bytes(&frame).await;
    assert_eq!(raw.connection_close_code().await, 505);
}

/// basic.qos with prefetch_size ≠ 0 is 540 NOT_IMPLEMENTED, as in RabbitMQ
/// (a client asking to limit by bytes must learn it is not done).
#[tokio::test]
async fn a_prefetch_size_is_refused_with_540() {
    let gw = TestGateway::start().await;
    let mut raw = Raw::open(gw.addr, 0).await;
    raw.open_channel(1).await;
    // class 60, method 10, prefetch_size 65536, prefetch_count 10, global 0
    let payload = [0, 60, 0, 10, 0, 1, 0, 0, 0, 10, 0];
    let mut frame = vec![1, 0, 1];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    raw.send_bytes(&frame).await;
    assert_eq!(raw.connection_close_code().await, 540);
}

/// pika's TestUpdateSecret: RabbitMQ's internal users take any new secret
/// (only token backends check it); the connection goes on as before.
#[tokio::test]
async fn update_secret_is_answered_and_the_connection_goes_on() {
    let gw = TestGateway::start().await;
    let mut raw = Raw::open(gw.addr, 0).await;
    raw.send(AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(
            connection::UpdateSecret {
                new_secret: "new_secret".into(),
                reason: "token refresh".into(),
            },
        )),
    ))
    .await;
    match raw.recv().await {
        Some(AMQPFrame::Method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(_)),
        )) => {}
        other => panic!("expected update-secret-ok, got {other:?}"),
    }
    raw.open_channel(1).await;
}
