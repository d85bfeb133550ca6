//! The real stack for tests: RocketMQ started once per test binary through
//! deploy/rocketmq/start.sh (on its own ports and data directory), and a
//! gateway per test, in process, on 127.0.0.1:0 with its own SQLite meta store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use lapin::{Connection, ConnectionProperties};
use proxy::{Config, Gateway};

pub const TEST_NAMESRV_PORT: u16 = 19876;
pub const TEST_BROKER_PORT: u16 = 20911;

/// The repository this test runs in. Cargo sets CARGO_MANIFEST_DIR when it
/// runs a test; the compile-time value is only a fallback, since a binary
/// reused from a clone at another path would otherwise run that clone's files.
pub fn repo_root() -> PathBuf {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    crate_dir.join("..")
}

/// target/debug, where build.sh put the RocketMQ binaries next to this test.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .to_path_buf()
}

/// Starts a name server and broker with start.sh; returns the name server address.
pub fn start_rocketmq(name: &str, namesrv_port: u16, broker_port: u16) -> String {
    let bin = bin_dir();
    assert!(
        bin.join("rocketmq-broker-rust").exists(),
        "RocketMQ binaries missing in {}: run deploy/rocketmq/build.sh first (README's test command does)",
        bin.display()
    );
    let data = rocketmq_data(name);
    let status = Command::new("bash")
        .arg(repo_root().join("deploy/rocketmq/start.sh"))
        .env("ROCKETMQ_BIN", &bin)
        .env("ROCKETMQ_DATA", &data)
        .env("NAMESRV_PORT", namesrv_port.to_string())
        .env("BROKER_PORT", broker_port.to_string())
        .status()
        .expect("run start.sh");
    assert!(status.success(), "start.sh failed for {name}");
    format!("127.0.0.1:{namesrv_port}")
}

/// The data directory (logs, store, pid files) of a test RocketMQ.
pub fn rocketmq_data(name: &str) -> PathBuf {
    bin_dir().join(format!("test-rocketmq-{name}"))
}

/// Stops a test RocketMQ cleanly (what it confirmed is in its commit log).
pub fn stop_rocketmq(name: &str) {
    let status = Command::new("bash")
        .arg(repo_root().join("deploy/rocketmq/stop.sh"))
        .env("ROCKETMQ_DATA", rocketmq_data(name))
        .status()
        .expect("run stop.sh");
    assert!(status.success(), "stop.sh failed for {name}");
}

/// The RocketMQ shared by the tests of this binary.
pub fn rocketmq() -> &'static str {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| match std::env::var("GATEWAY_TEST_NAMESRV") {
        Ok(addr) => addr,
        Err(_) => start_rocketmq("shared", TEST_NAMESRV_PORT, TEST_BROKER_PORT),
    })
}

pub struct TestGateway {
    pub addr: SocketAddr,
    /// The management API's address.
    pub management: Option<SocketAddr>,
    /// The Prometheus endpoint's address.
    pub prometheus: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestGateway {
        init_logging();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config {
            meta_url: format!("sqlite:{}", dir.path().join("meta.db").display()),
            name_server: rocketmq().to_owned(),
            listen: "127.0.0.1:0".parse().unwrap(),
            management_listen: "127.0.0.1:0".to_owned(),
            prometheus_listen: "127.0.0.1:0".to_owned(),
            ..Config::default()
        };
        tweak(&mut config);
        config.validate().expect("valid test config");
        let gateway = Gateway::start(config).await.expect("gateway starts");
        let management = proxy::management::start(&gateway).await;
        let prometheus = proxy::metrics::endpoint::start(&gateway).await;
        let (addr, task) = proxy::server::spawn(gateway.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind");
        TestGateway {
            addr,
            management,
            prometheus,
            gateway,
            task,
            _dir: dir,
        }
    }

    /// Adds a user (not loopback-only) with one permission pattern for
    /// configure, write and read on "/", and applies it to the topology.
    pub async fn add_user(&self, name: &str, password: &str, pattern: &str) {
        let store = &self.gateway.store;
        store
            .put_user(&meta::User {
                name: name.into(),
                password_hash: meta::password::hash_password(password),
                tags: String::new(),
                loopback_only: false,
            })
            .await
            .unwrap();
        store
            .put_permission(&meta::Permission {
                user: name.into(),
                vhost: "/".into(),
                configure: pattern.into(),
                write: pattern.into(),
                read: pattern.into(),
            })
            .await
            .unwrap();
        proxy::follow::catch_up_now(&self.gateway).await;
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.uri(), ConnectionProperties::default())
            .await
            .expect("lapin connects")
    }
}

/// TEST_LOG=debug (or any filter) shows the gateway's log in test output.
fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(proxy::logging::OneLine(
                    tracing_subscriber::fmt::TestWriter::new,
                ))
                .with_ansi(false)
                .try_init();
        }
    });
}

/// A name no other test (or earlier run against the same RocketMQ) uses.
/// Declares a queue only this channel's connection may use.
pub async fn declare_exclusive(ch: &lapin::Channel, name: &str) -> Result<(), lapin::Error> {
    ch.queue_declare(
        name.into(),
        lapin::options::QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        lapin::types::FieldTable::default(),
    )
    .await
    .map(drop)
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

/// A new, empty database on the test PostgreSQL (deploy/postgres/start.sh on
/// `port`, started once per port), as a meta store URL.
pub fn postgres_database(port: u16) -> String {
    static STARTED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let server = format!("postgres://postgres@127.0.0.1:{port}");
    {
        let mut started = STARTED.lock().unwrap();
        if !started.contains(&port) {
            let out = Command::new("bash")
                .arg(repo_root().join("deploy/postgres/start.sh"))
                .env("PG_PORT", port.to_string())
                .output()
                .expect("run deploy/postgres/start.sh");
            assert!(
                out.status.success(),
                "PostgreSQL did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            started.push(port);
        }
    }
    let name = format!("gw_test_{:08x}", rand_u32());
    let status = Command::new("psql")
        .arg(format!("{server}/postgres"))
        .args(["-qc", &format!("CREATE DATABASE {name}")])
        .status()
        .expect("psql");
    assert!(status.success(), "CREATE DATABASE {name}");
    format!("{server}/{name}")
}

/// Stops the test PostgreSQL on `port` (for the store-outage test).
pub fn stop_postgres(port: u16) {
    let status = Command::new("bash")
        .arg(repo_root().join("deploy/postgres/stop.sh"))
        .env("PG_PORT", port.to_string())
        .status()
        .expect("run deploy/postgres/stop.sh");
    assert!(status.success());
}

/// Starts it again.
pub fn restart_postgres(port: u16) {
    let status = Command::new("bash")
        .arg(repo_root().join("deploy/postgres/start.sh"))
        .env("PG_PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run deploy/postgres/start.sh");
    assert!(status.success());
}

/// A gateway in its own process, killable with -9.
pub struct GatewayProcess {
    pub child: std::process::Child,
    pub port: u16,
}

impl GatewayProcess {
    pub fn start(port: u16, meta: &std::path::Path) -> GatewayProcess {
        Self::start_url(port, &format!("sqlite:{}", meta.display()))
    }

    pub fn start_url(port: u16, meta_url: &str) -> GatewayProcess {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_amqp-gateway"))
            .env("AMQP_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("AMQP_GATEWAY_MANAGEMENT_LISTEN", "127.0.0.1:0")
            .env("AMQP_GATEWAY_PROMETHEUS_LISTEN", "127.0.0.1:0")
            .env("AMQP_GATEWAY_META_URL", meta_url)
            .env("AMQP_GATEWAY_NAME_SERVER", rocketmq())
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("start amqp-gateway");
        GatewayProcess { child, port }
    }

    pub async fn connect(&self) -> lapin::Connection {
        let uri = format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port);
        for _ in 0..200 {
            if let Ok(c) = lapin::Connection::connect(&uri, Default::default()).await {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("gateway process on {} does not answer", self.port);
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port for a server process to listen on: free now, and below Linux's
/// ephemeral range (32768-60999), so that no outgoing connection of a test
/// running meanwhile takes it before the process binds it (port 0 would
/// hand out an ephemeral one). Random, so parallel tests rarely meet.
pub fn free_port() -> u16 {
    loop {
        let port = 21000 + (rand::random::<u16>() % 9000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
