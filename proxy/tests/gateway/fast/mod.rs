//! The fast tier: gateways in this process on the null upstream (messages
//! kept in memory) and an SQLite store in a temporary file, under tokio's
//! paused clock held still. Time moves only when a test calls `pass`, so
//! TTLs, leases and shutdowns that take minutes are tested in milliseconds,
//! the same way every run. The other modules (RocketMQ underneath) stay the
//! end-to-end tier.
//!
//! Every test here runs on `#[tokio::test(start_paused = true)]` and calls
//! `hold_clock` first. Waiting for something that takes no time (a reply, a
//! delivery) is bounded in real time by `within`; never by tokio's timers,
//! which do not fire while the clock is held.

mod expiry;
mod pruned;
mod reclaim;
mod shutdown;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use lapin::{Connection, ConnectionProperties};
use proxy::clock::Clock;
use proxy::upstream::null::NullUpstream;
use proxy::upstream::Upstream;
use proxy::{Config, Gateway, Surroundings};

/// What one gateway of the fast tier is.
pub struct FastGateway {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serving: tokio::task::JoinHandle<()>,
}

/// Several gateways share a store and an upstream, as gateways behind one
/// load balancer share PostgreSQL and RocketMQ.
pub struct Site {
    pub upstream: Arc<dyn Upstream>,
    /// The same upstream, as itself (what it holds).
    pub null: Arc<NullUpstream>,
    meta_url: String,
    clock: Clock,
    _dir: tempfile::TempDir,
}

impl Site {
    pub fn new() -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Clock::tokio();
        let null = Arc::new(NullUpstream::with_clock(clock));
        Site {
            upstream: null.clone(),
            null,
            meta_url: format!("sqlite:{}", dir.path().join("meta.db").display()),
            clock,
            _dir: dir,
        }
    }

    pub async fn gateway(&self) -> FastGateway {
        let config = Config {
            meta_url: self.meta_url.clone(),
            upstream: "null".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        config.validate().expect("valid test config");
        let surroundings = Surroundings {
            clock: self.clock,
            upstream: Some(self.upstream.clone()),
        };
        let gateway = within(Gateway::start_in(config, surroundings))
            .await
            .expect("gateway starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(proxy::server::serve(gateway, listener, async {
            let _ = stopped.await;
        }));
        FastGateway {
            addr,
            stop: Some(stop),
            serving,
        }
    }
}

impl FastGateway {
    /// A lapin connection without heartbeats (time jumps in `pass`).
    pub async fn connect(&self) -> Connection {
        let uri = format!("amqp://guest:guest@{}/%2f?heartbeat=0", self.addr);
        within(Connection::connect(&uri, ConnectionProperties::default()))
            .await
            .expect("lapin connects")
    }

    /// Shuts the gateway down as SIGTERM does, and waits until it has.
    /// The grace period for clients runs on tokio's clock: `pass` it.
    pub fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub fn stopped(&self) -> bool {
        self.serving.is_finished()
    }
}

impl Drop for FastGateway {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// Keeps the runtime busy so that tokio never advances its paused clock on
/// its own (it does whenever every task waits, and a query waiting for
/// SQLite's thread looks like that): time moves only in `pass`. After a
/// minute of real time it lets go, so that a test waiting for something
/// that never comes ends by its own timeouts instead of hanging.
pub fn hold_clock() {
    let start = Instant::now();
    tokio::spawn(async move {
        while start.elapsed() < Duration::from_secs(60) {
            tokio::task::yield_now().await;
        }
    });
}

/// Lets `span` of tokio time pass, a tenth of a second at a time, giving
/// the gateway's tasks real time to do what each step woke them for.
pub async fn pass(span: Duration) {
    const STEP: Duration = Duration::from_millis(100);
    let mut left = span;
    while !left.is_zero() {
        let step = left.min(STEP);
        tokio::time::advance(step).await;
        settle().await;
        left -= step;
    }
}

/// A little real time for work that needs no tokio time (SQLite queries,
/// loopback sockets), with the clock still held.
pub async fn settle() {
    let until = Instant::now() + Duration::from_millis(3);
    while Instant::now() < until {
        tokio::task::yield_now().await;
    }
}

/// What `work` gives within 10 s of real time (no tokio time passes).
pub async fn within<F: Future>(work: F) -> F::Output {
    within_real(Duration::from_secs(10), work)
        .await
        .expect("done within 10 s of real time")
}

/// What `work` gives within `wait` of real time, or None.
pub async fn within_real<F: Future>(wait: Duration, work: F) -> Option<F::Output> {
    let deadline = Instant::now() + wait;
    let mut work = pin!(work);
    std::future::poll_fn(|cx| match work.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending if Instant::now() >= deadline => Poll::Ready(None),
        Poll::Pending => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
