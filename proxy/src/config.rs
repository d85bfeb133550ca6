//! The gateway's configuration: one struct, loaded from a TOML file, then
//! overridden by `AMQP_GATEWAY_*` environment variables, then validated.
//! deploy/gateway.example.toml mirrors it field for field.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the AMQP listener binds, e.g. "0.0.0.0:5672".
    pub listen: SocketAddr,
    /// Meta store URL: "sqlite:/var/lib/amqp-gateway/meta.db" (embedded) or,
    /// when several gateways share one store, a PostgreSQL URL.
    pub meta_url: String,
    /// RocketMQ name server address, "host:port".
    pub name_server: String,
    /// "rocketmq" (the real store) or "null" (confirms at once, keeps
    /// messages in memory only; for measuring the gateway's own ceiling).
    pub upstream: String,
    /// Most connections served at once; a client beyond it is told so
    /// (connection.close 530 at connection.open) and logged.
    pub max_connections: usize,
    /// channel_max offered in connection.tune.
    pub channel_max: u16,
    /// frame_max offered in connection.tune, in bytes (at least 4096).
    pub frame_max: u32,
    /// Heartbeat offered in connection.tune, in seconds (0 disables).
    pub heartbeat: u16,
    /// A client whose socket takes none of the waiting output for this long
    /// is disconnected and its unacked messages requeued, in milliseconds
    /// (RabbitMQ's send_timeout with send_timeout_close).
    pub client_write_timeout_ms: u64,
    /// Largest message body accepted, in bytes (RabbitMQ's default is 128 MiB).
    pub max_message_size: u64,
    /// Bytes of message bodies one connection may hold while they arrive
    /// (summed over its channels); beyond it the connection is closed with
    /// 506 RESOURCE_ERROR. At least `max_message_size` in effect.
    pub max_connection_content_bytes: u64,
    /// Publishes a connection may have in flight to RocketMQ; the gateway
    /// stops reading the socket when they are all taken (backpressure).
    pub max_in_flight: usize,
    /// Send requests (each one message or one batch for one queue) in flight
    /// to RocketMQ from the whole gateway; beyond it they wait their turn.
    pub upstream_max_in_flight: usize,
    /// How long the pipeline may stay full before clients that support it
    /// are sent connection.blocked, in milliseconds.
    pub blocked_after_ms: u64,
    /// RocketMQ send timeout, in milliseconds.
    pub send_timeout_ms: u64,
    /// Message queues per RocketMQ topic holding one AMQP queue (1 keeps FIFO).
    pub queues_per_topic: i32,
    /// RocketMQ producer group of the gateway.
    pub producer_group: String,
    /// Address of the plain-HTTP health endpoint (`GET /health`: 200 when
    /// the meta store answers, 503 while the gateway serves without it);
    /// empty to turn it off.
    pub health_listen: String,
    /// Address of RabbitMQ's management HTTP API (management/); empty to
    /// turn it off.
    pub management_listen: String,
    /// Where other gateways reach this one's management API (host:port),
    /// so that any gateway's API lists every gateway's connections; empty:
    /// the address it listens on (fine when that is not a wildcard).
    pub management_advertise: String,
    /// Address of the Prometheus endpoint (`GET /metrics` with RabbitMQ's
    /// metric names, `/metrics/per-object`, and `/health`), RabbitMQ's port
    /// 15692 by default; empty to turn it off.
    pub prometheus_listen: String,
    /// Address of the AMQP-over-TLS listener (amqps), used when
    /// `tls_certificate` is set; empty to keep TLS for the management API only.
    pub tls_listen: String,
    /// PEM file with the server's certificate chain (leaf first); empty: no TLS.
    pub tls_certificate: String,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: String,
    /// PEM file of CA certificates: clients are asked for a certificate,
    /// verified against these, and may log in with EXTERNAL. Empty: none asked.
    pub tls_ca: String,
    /// With `tls_ca`: a client that shows no certificate is refused
    /// (RabbitMQ's ssl_options.fail_if_no_peer_cert).
    pub tls_fail_if_no_peer_cert: bool,
    /// SASL mechanisms offered, in order, space-separated: PLAIN, AMQPLAIN
    /// and EXTERNAL (RabbitMQ's auth_mechanisms). EXTERNAL (a login as the
    /// client certificate's user, RabbitMQ's rabbitmq_auth_mechanism_ssl)
    /// needs `tls_ca` and is offered only to clients that showed a verified
    /// certificate; off by default, as in RabbitMQ, since clients such as
    /// py-amqp pick it whenever it is offered.
    pub auth_mechanisms: String,
    /// The user an EXTERNAL login is: the certificate's "common_name" or its
    /// whole "distinguished_name" (RabbitMQ's ssl_cert_login_from).
    pub tls_login_from: String,
    /// Serve the management API (and the web page) over HTTPS with the same
    /// certificate.
    pub management_tls: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 5672)),
            meta_url: "sqlite:data/meta.db".to_owned(),
            name_server: "127.0.0.1:9876".to_owned(),
            upstream: "rocketmq".to_owned(),
            max_connections: 10_000,
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
            client_write_timeout_ms: 15_000,
            max_message_size: 128 * 1024 * 1024,
            max_connection_content_bytes: 256 * 1024 * 1024,
            max_in_flight: 2048,
            upstream_max_in_flight: 256,
            blocked_after_ms: 500,
            send_timeout_ms: 3000,
            queues_per_topic: 1,
            producer_group: "amqp-gateway".to_owned(),
            health_listen: String::new(),
            management_listen: "127.0.0.1:15672".to_owned(),
            management_advertise: String::new(),
            prometheus_listen: "127.0.0.1:15692".to_owned(),
            tls_listen: "0.0.0.0:5671".to_owned(),
            tls_certificate: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
            tls_fail_if_no_peer_cert: false,
            tls_login_from: "common_name".to_owned(),
            auth_mechanisms: "PLAIN AMQPLAIN".to_owned(),
            management_tls: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid configuration file: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("environment variable {name}: {reason}")]
    Env { name: String, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file (if given), applies environment overrides, validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                toml::from_str(&text)?
            }
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// `AMQP_GATEWAY_<FIELD>` overrides a field, e.g. AMQP_GATEWAY_LISTEN.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn set<T: std::str::FromStr>(
            get: &impl Fn(&str) -> Option<String>,
            name: &str,
            field: &mut T,
        ) -> Result<(), ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            if let Some(value) = get(name) {
                *field = value.parse().map_err(|e: T::Err| ConfigError::Env {
                    name: name.to_owned(),
                    reason: e.to_string(),
                })?;
            }
            Ok(())
        }
        set(&get, "AMQP_GATEWAY_LISTEN", &mut self.listen)?;
        set(&get, "AMQP_GATEWAY_META_URL", &mut self.meta_url)?;
        set(&get, "AMQP_GATEWAY_NAME_SERVER", &mut self.name_server)?;
        set(&get, "AMQP_GATEWAY_UPSTREAM", &mut self.upstream)?;
        set(
            &get,
            "AMQP_GATEWAY_MAX_CONNECTIONS",
            &mut self.max_connections,
        )?;
        set(&get, "AMQP_GATEWAY_HEARTBEAT", &mut self.heartbeat)?;
        set(
            &get,
            "AMQP_GATEWAY_CLIENT_WRITE_TIMEOUT_MS",
            &mut self.client_write_timeout_ms,
        )?;
        set(&get, "AMQP_GATEWAY_FRAME_MAX", &mut self.frame_max)?;
        set(
            &get,
            "AMQP_GATEWAY_MAX_MESSAGE_SIZE",
            &mut self.max_message_size,
        )?;
        set(
            &get,
            "AMQP_GATEWAY_MAX_CONNECTION_CONTENT_BYTES",
            &mut self.max_connection_content_bytes,
        )?;
        set(&get, "AMQP_GATEWAY_MAX_IN_FLIGHT", &mut self.max_in_flight)?;
        set(
            &get,
            "AMQP_GATEWAY_QUEUES_PER_TOPIC",
            &mut self.queues_per_topic,
        )?;
        set(&get, "AMQP_GATEWAY_HEALTH_LISTEN", &mut self.health_listen)?;
        set(
            &get,
            "AMQP_GATEWAY_MANAGEMENT_LISTEN",
            &mut self.management_listen,
        )?;
        set(
            &get,
            "AMQP_GATEWAY_MANAGEMENT_ADVERTISE",
            &mut self.management_advertise,
        )?;
        set(
            &get,
            "AMQP_GATEWAY_PROMETHEUS_LISTEN",
            &mut self.prometheus_listen,
        )?;
        set(&get, "AMQP_GATEWAY_TLS_LISTEN", &mut self.tls_listen)?;
        set(
            &get,
            "AMQP_GATEWAY_TLS_CERTIFICATE",
            &mut self.tls_certificate,
        )?;
        set(&get, "AMQP_GATEWAY_TLS_KEY", &mut self.tls_key)?;
        set(&get, "AMQP_GATEWAY_TLS_CA", &mut self.tls_ca)?;
        set(
            &get,
            "AMQP_GATEWAY_TLS_FAIL_IF_NO_PEER_CERT",
            &mut self.tls_fail_if_no_peer_cert,
        )?;
        set(
            &get,
            "AMQP_GATEWAY_TLS_LOGIN_FROM",
            &mut self.tls_login_from,
        )?;
        set(
            &get,
            "AMQP_GATEWAY_AUTH_MECHANISMS",
            &mut self.auth_mechanisms,
        )?;
        set(
            &get,
            "AMQP_GATEWAY_MANAGEMENT_TLS",
            &mut self.management_tls,
        )?;
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.frame_max < 4096 {
            return invalid("frame_max must be at least 4096 (the AMQP minimum)");
        }
        if self.channel_max == 0 {
            return invalid("channel_max must be at least 1");
        }
        if self.max_in_flight == 0 || self.max_connections == 0 || self.upstream_max_in_flight == 0
        {
            return invalid(
                "max_in_flight, upstream_max_in_flight and max_connections must be at least 1",
            );
        }
        if !matches!(self.upstream.as_str(), "rocketmq" | "null") {
            return invalid("upstream must be \"rocketmq\" or \"null\"");
        }
        if self.client_write_timeout_ms == 0 {
            return invalid("client_write_timeout_ms must be at least 1");
        }
        if self.queues_per_topic < 1 {
            return invalid("queues_per_topic must be at least 1");
        }
        if self.tls_certificate.is_empty() != self.tls_key.is_empty() {
            return invalid("tls_certificate and tls_key go together");
        }
        if self.tls_certificate.is_empty() && (!self.tls_ca.is_empty() || self.management_tls) {
            return invalid("tls_ca and management_tls need tls_certificate and tls_key");
        }
        if self.tls_fail_if_no_peer_cert && self.tls_ca.is_empty() {
            return invalid("tls_fail_if_no_peer_cert needs tls_ca (the CA client certificates are verified against)");
        }
        let mechanisms: Vec<&str> = self.auth_mechanisms.split_whitespace().collect();
        if mechanisms.is_empty()
            || mechanisms
                .iter()
                .any(|m| !matches!(*m, "PLAIN" | "AMQPLAIN" | "EXTERNAL"))
        {
            return invalid("auth_mechanisms: one or more of PLAIN, AMQPLAIN, EXTERNAL");
        }
        if mechanisms.contains(&"EXTERNAL") && self.tls_ca.is_empty() {
            return invalid("auth_mechanisms EXTERNAL needs tls_ca (the CA client certificates are verified against)");
        }
        if !matches!(
            self.tls_login_from.as_str(),
            "common_name" | "distinguished_name"
        ) {
            return invalid("tls_login_from must be \"common_name\" or \"distinguished_name\"");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment_then_validation() {
        let mut c: Config =
            toml::from_str("listen = \"127.0.0.1:5673\"\nheartbeat = 10\n").unwrap();
        assert_eq!(c.heartbeat, 10);
        c.apply_env(|n| (n == "AMQP_GATEWAY_HEARTBEAT").then(|| "5".to_owned()))
            .unwrap();
        assert_eq!(c.heartbeat, 5);
        assert!(c.validate().is_ok());
        assert!(c
            .apply_env(|n| (n == "AMQP_GATEWAY_FRAME_MAX").then(|| "lots".to_owned()))
            .is_err());
        c.frame_max = 100;
        assert!(c.validate().is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(toml::from_str::<Config>("listn = \"127.0.0.1:1\"").is_err());
    }
}
