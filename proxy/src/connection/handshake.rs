//! connection.start / start-ok / tune / tune-ok / open: who the client is,
//! how big frames may be, how often to beat, and which vhost it works in.

use std::net::SocketAddr;
use std::sync::Arc;

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};

use crate::config::Config;
use crate::error::{ConnectionException, HardCode};
use crate::tls::PeerIdentity;
use crate::topology::{Permission, Vhost};
use crate::Gateway;

/// What the client told us it can handle.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientCapabilities {
    pub connection_blocked: bool,
    /// The client understands a server-sent basic.cancel.
    pub consumer_cancel_notify: bool,
}

/// Negotiated limits.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub channel_max: u16,
    pub frame_max: usize,
    pub heartbeat: u16,
}

/// The configured SASL mechanisms this client may use: EXTERNAL only if it
/// showed a verified TLS certificate (as rabbitmq_auth_mechanism_ssl offers it).
pub fn mechanisms(config: &Config, certified: bool) -> Vec<&str> {
    config
        .auth_mechanisms
        .split_whitespace()
        .filter(|m| *m != "EXTERNAL" || certified)
        .collect()
}

/// connection.start: our identity, capabilities and SASL mechanisms.
pub fn start(mechanisms: &[&str]) -> AMQPClass {
    let mut capabilities = FieldTable::default();
    // Only what works end to end today; each capability is added as it lands.
    for cap in [
        "publisher_confirms",
        "basic.nack",
        "connection.blocked",
        "authentication_failure_close",
        "exchange_exchange_bindings",
        "consumer_cancel_notify",
        "per_consumer_qos",
    ] {
        capabilities.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    props.insert(
        "product".into(),
        AMQPValue::LongString("amqp-rocketmq-gateway".into()),
    );
    props.insert(
        "version".into(),
        AMQPValue::LongString(env!("CARGO_PKG_VERSION").into()),
    );
    props.insert("platform".into(), AMQPValue::LongString("Rust".into()));
    props.insert(
        "cluster_name".into(),
        AMQPValue::LongString("amqp-rocketmq-gateway".into()),
    );
    props.insert(
        "information".into(),
        AMQPValue::LongString("AMQP 0-9-1 gateway storing messages in Apache RocketMQ".into()),
    );
    AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: props,
        mechanisms: mechanisms.join(" ").into(),
        locales: "en_US".into(),
    }))
}

/// Checks the credentials in start-ok; returns the user name. With
/// EXTERNAL the user is the one the client's verified certificate names
/// (`tls_login_from`), and must exist; no password is asked.
pub fn authenticate(
    gateway: &Gateway,
    peer: SocketAddr,
    certificate: Option<&PeerIdentity>,
    m: &connection::StartOk,
) -> Result<(String, ClientCapabilities), ConnectionException> {
    let offered = mechanisms(&gateway.config, certificate.is_some());
    if !offered.contains(&m.mechanism.as_str()) {
        return Err(refused(format!(
            "unsupported authentication mechanism '{}'; offered: {}",
            m.mechanism,
            offered.join(" ")
        )));
    }
    let credentials = match (m.mechanism.as_str(), certificate) {
        ("PLAIN", _) => plain(&m.response).map(|(user, password)| (user, Some(password))),
        ("AMQPLAIN", _) => amqplain(&m.response).map(|(user, password)| (user, Some(password))),
        ("EXTERNAL", Some(identity)) => {
            let name = external_user(&gateway.config, identity).ok_or_else(|| {
                refused(format!(
                    "EXTERNAL login refused: the client certificate ({}) has no {}",
                    identity.distinguished_name, gateway.config.tls_login_from
                ))
            })?;
            Some((name, None))
        }
        _ => None,
    };
    let (user, password) =
        credentials.ok_or_else(|| refused(format!("malformed {} response", m.mechanism)))?;
    let known = gateway.topology.user(&user);
    let Some(record) = known.filter(|u| match &password {
        Some(password) => meta::password::verify_password(&u.password_hash, password),
        None => true,
    }) else {
        return Err(refused(format!(
            "Login was refused using authentication mechanism {}. For details see the gateway log.",
            m.mechanism
        )));
    };
    if record.loopback_only && !is_loopback(peer) {
        return Err(refused(format!(
            "user '{user}' can only connect via localhost"
        )));
    }
    Ok((user, capabilities(&m.client_properties)))
}

/// The user a start-ok names (for the log of a refused login; never the
/// password).
pub fn claimed_user(m: &connection::StartOk) -> Option<String> {
    match m.mechanism.as_str() {
        "PLAIN" => plain(&m.response).map(|(user, _)| user),
        "AMQPLAIN" => amqplain(&m.response).map(|(user, _)| user),
        _ => None,
    }
}

/// The user a client certificate names, as `tls_login_from` says.
fn external_user(config: &Config, identity: &PeerIdentity) -> Option<String> {
    match config.tls_login_from.as_str() {
        "distinguished_name" => Some(identity.distinguished_name.clone()),
        _ => identity.common_name.clone(),
    }
}

/// A dual-stack `[::]` listener sees IPv4 clients as `::ffff:a.b.c.d`:
/// `::ffff:127.0.0.1` is loopback too.
fn is_loopback(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

fn refused(text: String) -> ConnectionException {
    ConnectionException::new(HardCode::AccessRefused, text).on_method(10, 11)
}

/// SASL PLAIN: `[authzid] NUL authcid NUL password`.
fn plain(response: &LongString) -> Option<(String, String)> {
    let text = std::str::from_utf8(response.as_bytes()).ok()?;
    let mut parts = text.split('\0');
    let (_authz, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    parts
        .next()
        .is_none()
        .then(|| (user.to_owned(), password.to_owned()))
}

/// RabbitMQ's AMQPLAIN: a field table (without its length prefix) holding LOGIN and PASSWORD.
fn amqplain(response: &LongString) -> Option<(String, String)> {
    let raw = response.as_bytes();
    let mut framed = (raw.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(raw);
    if crate::codec::depth::table_depth(&framed, 0) > crate::codec::depth::MAX_DEPTH {
        return None;
    }
    let (_, table) = amq_protocol::types::parsing::parse_field_table(framed.as_slice()).ok()?;
    let text = |key: &str| match table.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    Some((text("LOGIN")?, text("PASSWORD")?))
}

/// Whether the client advertises `authentication_failure_close`: it reads
/// a connection.close answering start-ok (403); others expect the socket to
/// close.
pub fn reads_auth_failure_close(client_properties: &FieldTable) -> bool {
    match client_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(caps)) => matches!(
            caps.inner().get("authentication_failure_close"),
            Some(AMQPValue::Boolean(true))
        ),
        _ => false,
    }
}

fn capabilities(client_properties: &FieldTable) -> ClientCapabilities {
    let caps = match client_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(t)) => t.clone(),
        _ => FieldTable::default(),
    };
    let on = |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
    ClientCapabilities {
        connection_blocked: on("connection.blocked"),
        consumer_cancel_notify: on("consumer_cancel_notify"),
    }
}

pub fn tune(config: &Config) -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
        channel_max: config.channel_max,
        frame_max: config.frame_max,
        heartbeat: config.heartbeat,
    }))
}

/// Accepts the client's tune-ok within our limits (0 means "no limit": ours).
pub fn accept_tune_ok(
    config: &Config,
    m: &connection::TuneOk,
) -> Result<Tuning, ConnectionException> {
    let not_allowed =
        |text: String| Err(ConnectionException::new(HardCode::NotAllowed, text).on_method(10, 31));
    let frame_max = if m.frame_max == 0 {
        config.frame_max
    } else {
        m.frame_max
    };
    if frame_max < 4096 {
        return not_allowed(format!("frame_max={frame_max} < 4096 min size"));
    }
    if frame_max > config.frame_max {
        return not_allowed(format!(
            "frame_max={frame_max} > {} max size",
            config.frame_max
        ));
    }
    let channel_max = if m.channel_max == 0 {
        config.channel_max
    } else {
        m.channel_max
    };
    if channel_max > config.channel_max {
        return not_allowed(format!(
            "channel_max={channel_max} > {} max",
            config.channel_max
        ));
    }
    Ok(Tuning {
        channel_max,
        frame_max: frame_max as usize,
        heartbeat: m.heartbeat,
    })
}

/// connection.open: the vhost must exist, the user must have a permission
/// on it, and neither may be at its connection limit.
pub fn open(
    gateway: &Gateway,
    user: &str,
    m: &connection::Open,
) -> Result<(Arc<Vhost>, Permission), ConnectionException> {
    let name = m.virtual_host.as_str();
    let not_allowed =
        |text: String| ConnectionException::new(HardCode::NotAllowed, text).on_method(10, 40);
    let vhost = gateway
        .topology
        .vhost(name)
        .ok_or_else(|| not_allowed(format!("vhost {name} not found")))?;
    // Limits before permissions, as RabbitMQ checks them.
    if let Some(text) = crate::registry::limits::connection_refused(gateway, name, user) {
        return Err(not_allowed(text));
    }
    let permission = gateway.topology.permission(user, name).ok_or_else(|| {
        not_allowed(format!(
            "access to vhost '{name}' refused for user '{user}'"
        ))
    })?;
    Ok((vhost, permission))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_amqplain_responses() {
        assert_eq!(
            plain(&"\0guest\0pw".into()),
            Some(("guest".into(), "pw".into()))
        );
        assert_eq!(plain(&"guest".into()), None);
        let mut t = FieldTable::default();
        t.insert("LOGIN".into(), AMQPValue::LongString("bob".into()));
        t.insert("PASSWORD".into(), AMQPValue::LongString("pw".into()));
        let encoded = cookie_factory::gen_simple(
            amq_protocol::types::generation::gen_field_table(&t),
            Vec::new(),
        )
        .unwrap();
        let response = LongString::from(encoded[4..].to_vec());
        assert_eq!(amqplain(&response), Some(("bob".into(), "pw".into())));
        assert_eq!(amqplain(&LongString::from(vec![1u8, 2, 3])), None);
    }

    #[test]
    fn ipv4_mapped_loopback_is_loopback() {
        for (addr, expected) in [
            ("127.0.0.1:1", true),
            ("[::1]:1", true),
            ("[::ffff:127.0.0.1]:1", true),
            ("[::ffff:127.9.0.1]:1", true),
            ("[::ffff:10.0.0.1]:1", false),
            ("10.0.0.1:1", false),
            ("[2001:db8::1]:1", false),
        ] {
            assert_eq!(is_loopback(addr.parse().unwrap()), expected, "{addr}");
        }
    }

    #[test]
    fn tune_ok_is_held_to_our_limits() {
        let config = Config::default();
        let ok = |frame_max, channel_max| connection::TuneOk {
            channel_max,
            frame_max,
            heartbeat: 5,
        };
        let t = accept_tune_ok(&config, &ok(0, 0)).unwrap();
        assert_eq!(
            (t.frame_max, t.channel_max, t.heartbeat),
            (131_072, 2047, 5)
        );
        assert_eq!(
            accept_tune_ok(&config, &ok(1024, 0)).unwrap_err().code,
            HardCode::NotAllowed
        );
        assert_eq!(
            accept_tune_ok(&config, &ok(1 << 20, 0)).unwrap_err().code,
            HardCode::NotAllowed
        );
        assert_eq!(
            accept_tune_ok(&config, &ok(8192, 10)).unwrap().channel_max,
            10
        );
    }
}
