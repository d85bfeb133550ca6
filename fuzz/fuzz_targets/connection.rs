//! A whole connection fed arbitrary bytes after a valid handshake: the
//! gateway's own connection task, over a loopback socket, on a gateway with
//! the in-memory upstream and a scratch meta store. Whatever the bytes, the
//! connection must end once the client has sent them and closed its side,
//! and nothing may panic (a panic in the connection's task is caught by
//! tokio, so the target checks that the task finished normally).
//!
//! The gateway is shared between inputs, as connections share one in
//! production, and replaced every `REBUILD_EVERY` inputs so that what the
//! inputs declare does not accumulate without bound.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use proxy::config::Config;
use proxy::connection::transport::Transport;
use proxy::connection::Connection;
use proxy::upstream::null::NullUpstream;
use proxy::{Gateway, Surroundings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const REBUILD_EVERY: u64 = 20_000;
/// After the client's last byte, the connection must be gone within this.
const END_WITHIN: Duration = Duration::from_secs(15);

struct Bench {
    runtime: Runtime,
    listener: TcpListener,
    gateway: Mutex<(Arc<Gateway>, u64)>,
}

fn bench() -> &'static Bench {
    static BENCH: OnceLock<Bench> = OnceLock::new();
    BENCH.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let gateway = runtime.block_on(start_gateway(0));
        Bench {
            runtime,
            listener,
            gateway: Mutex::new((gateway, 0)),
        }
    })
}

async fn start_gateway(generation: u64) -> Arc<Gateway> {
    let dir = std::env::temp_dir().join(format!("fuzz-connection-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join(format!("meta-{generation}.db"));
    let _ = std::fs::remove_file(&db);
    let config = Config {
        meta_url: format!("sqlite:{}", db.display()),
        ..Config::default()
    };
    let surroundings = Surroundings {
        upstream: Some(Arc::new(NullUpstream::default())),
        ..Surroundings::default()
    };
    Gateway::start_in(config, surroundings).await.unwrap()
}

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(0xce);
    out
}

fn method(class: u16, id: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = class.to_be_bytes().to_vec();
    payload.extend_from_slice(&id.to_be_bytes());
    payload.extend_from_slice(args);
    frame(1, 0, &payload)
}

fn shortstr(s: &[u8]) -> Vec<u8> {
    let mut out = vec![s.len() as u8];
    out.extend_from_slice(s);
    out
}

/// Protocol header, start-ok (PLAIN guest/guest), tune-ok, connection.open "/".
fn handshake() -> Vec<u8> {
    let mut out = b"AMQP\x00\x00\x09\x01".to_vec();
    let response = b"\0guest\0guest";
    let mut start_ok = 0u32.to_be_bytes().to_vec();
    start_ok.extend(shortstr(b"PLAIN"));
    start_ok.extend_from_slice(&(response.len() as u32).to_be_bytes());
    start_ok.extend_from_slice(response);
    start_ok.extend(shortstr(b"en_US"));
    out.extend(method(10, 11, &start_ok));
    let mut tune_ok = 2047u16.to_be_bytes().to_vec();
    tune_ok.extend_from_slice(&131_072u32.to_be_bytes());
    tune_ok.extend_from_slice(&0u16.to_be_bytes());
    out.extend(method(10, 31, &tune_ok));
    let mut open = shortstr(b"/");
    open.extend(shortstr(b""));
    open.push(0);
    out.extend(method(10, 40, &open));
    out
}

fuzz_target!(|data: &[u8]| {
    let bench = bench();
    let gateway = {
        let mut held = bench.gateway.lock().unwrap();
        held.1 += 1;
        if held.1 % REBUILD_EVERY == 0 {
            held.0 = bench.runtime.block_on(start_gateway(held.1));
        }
        held.0.clone()
    };
    let mut input = handshake();
    input.extend_from_slice(data);
    bench.runtime.block_on(async {
        let (client, accepted) = tokio::join!(
            TcpStream::connect(bench.listener.local_addr().unwrap()),
            bench.listener.accept()
        );
        let (mut client, (socket, peer)) = (client.unwrap(), accepted.unwrap());
        let served = tokio::spawn(Connection::new(gateway, Transport::plain(socket), peer, 1).run());
        let (mut reader, mut writer) = client.split();
        let talk = async {
            // The gateway may close before reading everything: a failed
            // write is an answer, not a finding.
            let _ = writer.write_all(&input).await;
            let _ = writer.shutdown().await;
        };
        let listen = async {
            let mut sink = vec![0u8; 64 * 1024];
            while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        let ended = tokio::time::timeout(END_WITHIN, async {
            tokio::join!(talk, listen);
            served.await
        })
        .await;
        match ended {
            Err(_) => panic!("the connection did not end within {END_WITHIN:?} of the client's close"),
            Ok(Err(e)) => panic!("the connection's task failed: {e}"),
            Ok(Ok(())) => {}
        }
    });
});
