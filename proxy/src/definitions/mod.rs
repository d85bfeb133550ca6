//! RabbitMQ definitions (the JSON of `rabbitmqctl export_definitions` and
//! GET /api/definitions): import into the meta store and RocketMQ, export
//! back in the same format. For migration engineers moving a RabbitMQ
//! topology onto the gateway (docs/operations.md).
//!
//! Import is idempotent: what exists is left as it is and reported as such;
//! what cannot be mapped is reported with the reason, never dropped silently.

mod limits;

use std::collections::BTreeMap;

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::mapping::names;
use crate::mapping::routing::HeadersSpec;
use crate::registry::arguments::QueueArguments;
use crate::registry::exchanges;
use crate::registry::queues::{self, QueueSpec};
use crate::registry::RegistryError;
use crate::topology::{decode_arguments, encode_arguments};
use crate::upstream::Upstream;

/// The definitions format (fields this gateway does not use are kept as JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Definitions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbit_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_version: Option<String>,
    #[serde(default)]
    pub users: Vec<UserDef>,
    #[serde(default)]
    pub vhosts: Vec<VhostDef>,
    #[serde(default)]
    pub permissions: Vec<PermissionDef>,
    #[serde(default)]
    pub topic_permissions: Vec<Value>,
    #[serde(default)]
    pub parameters: Vec<Value>,
    #[serde(default)]
    pub global_parameters: Vec<Value>,
    #[serde(default)]
    pub policies: Vec<Value>,
    #[serde(default)]
    pub queues: Vec<QueueDef>,
    #[serde(default)]
    pub exchanges: Vec<ExchangeDef>,
    #[serde(default)]
    pub bindings: Vec<BindingDef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDef {
    pub name: String,
    pub password_hash: String,
    #[serde(default = "sha256")]
    pub hashing_algorithm: String,
    #[serde(default)]
    pub tags: Tags,
    #[serde(default)]
    pub limits: Map<String, Value>,
}

fn sha256() -> String {
    SHA256.to_owned()
}

const SHA256: &str = "rabbit_password_hashing_sha256";

/// A list since RabbitMQ 3.9, a comma-separated string before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Tags {
    List(Vec<String>),
    Text(String),
}

impl Default for Tags {
    fn default() -> Self {
        Tags::List(Vec::new())
    }
}

impl Tags {
    fn list(&self) -> Vec<String> {
        match self {
            Tags::List(l) => l.clone(),
            Tags::Text(t) => t
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VhostDef {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PermissionDef {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueDef {
    pub name: String,
    pub vhost: String,
    pub durable: bool,
    pub auto_delete: bool,
    #[serde(default)]
    pub arguments: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeDef {
    pub name: String,
    pub vhost: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub arguments: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingDef {
    pub source: String,
    pub vhost: String,
    pub destination: String,
    pub destination_type: String,
    pub routing_key: String,
    #[serde(default)]
    pub arguments: Map<String, Value>,
}

/// What an import did, line by line.
#[derive(Debug, Default)]
pub struct Report {
    pub created: Vec<String>,
    pub existing: Vec<String>,
    /// What could not be mapped, and why.
    pub skipped: Vec<(String, String)>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.created {
            writeln!(f, "created   {c}")?;
        }
        for e in &self.existing {
            writeln!(f, "exists    {e}")?;
        }
        for (what, why) in &self.skipped {
            writeln!(f, "skipped   {what}: {why}")?;
        }
        write!(
            f,
            "{} created, {} already there, {} not mapped",
            self.created.len(),
            self.existing.len(),
            self.skipped.len()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DefinitionsError {
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
    #[error("RocketMQ: {0}")]
    Upstream(#[from] crate::upstream::UpstreamError),
}

/// JSON as RabbitMQ converts it to AMQP field values: integers are signed
/// 64-bit ("l"), other numbers doubles, strings long strings.
pub fn json_to_amqp(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(a) => AMQPValue::FieldArray(FieldArray::from(
            a.iter().map(json_to_amqp).collect::<Vec<_>>(),
        )),
        Value::Object(o) => AMQPValue::FieldTable(json_to_table(o)),
    }
}

pub fn json_to_table(map: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in map {
        table.insert(k.as_str().into(), json_to_amqp(v));
    }
    table
}

pub fn amqp_to_json(value: &AMQPValue) -> Value {
    let int = |i: i64| Value::Number(Number::from(i));
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => int(i64::from(*i)),
        AMQPValue::ShortShortUInt(i) => int(i64::from(*i)),
        AMQPValue::ShortInt(i) => int(i64::from(*i)),
        AMQPValue::ShortUInt(i) => int(i64::from(*i)),
        AMQPValue::LongInt(i) => int(i64::from(*i)),
        AMQPValue::LongUInt(i) => int(i64::from(*i)),
        AMQPValue::LongLongInt(i) => int(*i),
        AMQPValue::Timestamp(t) => Value::Number(Number::from(*t)),
        AMQPValue::Float(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        AMQPValue::Double(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        AMQPValue::DecimalValue(d) => {
            let v = f64::from(d.value) / 10f64.powi(i32::from(d.scale));
            Number::from_f64(v).map_or(Value::Null, Value::Number)
        }
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => {
            Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::ByteArray(b) => {
            Value::String(String::from_utf8_lossy(b.as_slice()).into_owned())
        }
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_to_json).collect()),
        AMQPValue::FieldTable(t) => Value::Object(table_to_json(t)),
        AMQPValue::Void => Value::Null,
    }
}

pub fn table_to_json(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), amqp_to_json(v)))
        .collect()
}

fn stored_json(raw: &[u8]) -> Map<String, Value> {
    decode_arguments(raw)
        .map(|t| table_to_json(&t))
        .unwrap_or_default()
}

/// Creates what the definitions describe, in the meta store and (for
/// queues) in RocketMQ. Running gateways pick it up from the revision log.
pub async fn import(
    store: &meta::Store,
    upstream: &dyn Upstream,
    defs: &Definitions,
) -> Result<Report, DefinitionsError> {
    let mut report = Report::default();
    for v in &defs.vhosts {
        let what = format!("vhost '{}'", v.name);
        if store.vhost(&v.name).await?.is_some() {
            report.existing.push(what);
            continue;
        }
        store
            .put_vhost(&meta::Vhost {
                name: v.name.clone(),
                namespace: names::vhost_namespace(&v.name),
            })
            .await?;
        report.created.push(what);
    }
    for u in &defs.users {
        let what = format!("user '{}'", u.name);
        if u.hashing_algorithm != SHA256 {
            report.skipped.push((
                what,
                format!(
                    "password hashing '{}' is not supported (only {SHA256}); set a new password",
                    u.hashing_algorithm
                ),
            ));
            continue;
        }
        if !meta::password::is_valid_hash(&u.password_hash) {
            report.skipped.push((
                what,
                "password_hash is not a salted SHA-256 hash in RabbitMQ's format".into(),
            ));
            continue;
        }
        let user = meta::User {
            name: u.name.clone(),
            password_hash: u.password_hash.clone(),
            tags: u.tags.list().join(","),
            // RabbitMQ's default loopback_users.
            loopback_only: u.name == "guest",
        };
        if store.user(&u.name).await?.as_ref() == Some(&user) {
            report.existing.push(what);
            continue;
        }
        store.put_user(&user).await?;
        report.created.push(what);
    }
    for p in &defs.permissions {
        let what = format!("permission of '{}' on vhost '{}'", p.user, p.vhost);
        if store.vhost(&p.vhost).await?.is_none() || store.user(&p.user).await?.is_none() {
            report
                .skipped
                .push((what, "its user or vhost is not there".into()));
            continue;
        }
        let permission = meta::Permission {
            user: p.user.clone(),
            vhost: p.vhost.clone(),
            configure: p.configure.clone(),
            write: p.write.clone(),
            read: p.read.clone(),
        };
        if let Err(e) = [&p.configure, &p.write, &p.read]
            .iter()
            .try_for_each(|r| regex::Regex::new(r).map(drop))
        {
            report.skipped.push((what, format!("bad pattern: {e}")));
            continue;
        }
        if store.permission(&p.user, &p.vhost).await?.as_ref() == Some(&permission) {
            report.existing.push(what);
            continue;
        }
        store.put_permission(&permission).await?;
        report.created.push(what);
    }
    for e in &defs.exchanges {
        let what = format!("exchange '{}' in vhost '{}'", e.name, e.vhost);
        if e.name.is_empty() || e.name.starts_with("amq.") {
            report.existing.push(format!("{what} (built in)"));
            continue;
        }
        if let Err(refused) = exchanges::kind(&e.kind) {
            report.skipped.push((
                what,
                format!("{refused} (direct, fanout, topic, headers are supported)"),
            ));
            continue;
        }
        if store.vhost(&e.vhost).await?.is_none() {
            report.skipped.push((what, "its vhost is not there".into()));
            continue;
        }
        let record = meta::Exchange {
            vhost: e.vhost.clone(),
            name: e.name.clone(),
            kind: e.kind.clone(),
            durable: e.durable,
            auto_delete: e.auto_delete,
            internal: e.internal,
            arguments: encode_arguments(&json_to_table(&e.arguments)),
        };
        if store.exchange(&e.vhost, &e.name).await?.is_some() {
            report.existing.push(what);
            continue;
        }
        store.put_exchange(&record).await?;
        report.created.push(what);
    }
    for q in &defs.queues {
        let what = format!("queue '{}' in vhost '{}'", q.name, q.vhost);
        let Some(vhost) = store.vhost(&q.vhost).await? else {
            report.skipped.push((what, "its vhost is not there".into()));
            continue;
        };
        if store.queue(&q.vhost, &q.name).await?.is_some() {
            report.existing.push(what);
            continue;
        }
        let spec = QueueSpec {
            name: q.name.clone(),
            durable: q.durable,
            auto_delete: q.auto_delete,
            exclusive_owner: None,
            arguments: json_to_table(&q.arguments),
        };
        // Checked as queue.declare checks them.
        let arguments = match QueueArguments::parse(&spec.arguments, &q.name, &q.vhost) {
            Ok(arguments) => arguments,
            Err(refused) => {
                report.skipped.push((what, refused.to_string()));
                continue;
            }
        };
        match queues::create(store, upstream, &vhost, &spec, &arguments).await {
            Ok((_, true)) => report.created.push(what.clone()),
            Ok((_, false)) => {
                report.existing.push(what);
                continue;
            }
            Err(RegistryError::Meta { error, .. }) => return Err(error.into()),
            Err(RegistryError::Upstream { error, .. }) => return Err(error.into()),
            Err(refused) => {
                report.skipped.push((what, refused.to_string()));
                continue;
            }
        }
        for key in arguments.unapplied() {
            report.skipped.push((
                format!("argument {key} of {what}"),
                "stored, not applied yet (docs/mapping.md)".into(),
            ));
        }
    }
    for b in &defs.bindings {
        let what = format!(
            "binding '{}' -> {} '{}' ({:?}) in vhost '{}'",
            b.source, b.destination_type, b.destination, b.routing_key, b.vhost
        );
        let Some(destination_kind) = meta::DestinationKind::parse(&b.destination_type) else {
            report
                .skipped
                .push((what, format!("destination type '{}'", b.destination_type)));
            continue;
        };
        if b.source.is_empty() {
            report
                .existing
                .push(format!("{what} (the default exchange's implicit binding)"));
            continue;
        }
        let source = if b.source.starts_with("amq.") {
            crate::topology::BUILTIN_EXCHANGES
                .iter()
                .find(|(n, _)| *n == b.source)
                .map(|(_, k)| k.as_str().to_owned())
        } else {
            store.exchange(&b.vhost, &b.source).await?.map(|e| e.kind)
        };
        let Some(source_kind) = source else {
            report.skipped.push((
                what,
                format!("source exchange '{}' is not there (RabbitMQ 3.10 leaves internal exchanges out of its export)", b.source),
            ));
            continue;
        };
        let destination_there = match destination_kind {
            meta::DestinationKind::Queue => store.queue(&b.vhost, &b.destination).await?.is_some(),
            meta::DestinationKind::Exchange => {
                b.destination.starts_with("amq.")
                    || store.exchange(&b.vhost, &b.destination).await?.is_some()
            }
        };
        if !destination_there {
            report.skipped.push((
                what,
                format!("destination '{}' is not there", b.destination),
            ));
            continue;
        }
        let arguments = json_to_table(&b.arguments);
        if source_kind == "headers" {
            if let Err(e) = HeadersSpec::from_arguments(&arguments) {
                report.skipped.push((what, e));
                continue;
            }
        }
        let record = meta::Binding {
            vhost: b.vhost.clone(),
            source: b.source.clone(),
            destination: b.destination.clone(),
            destination_kind,
            routing_key: b.routing_key.clone(),
            arguments: encode_arguments(&arguments),
        };
        if store
            .bindings_from(&b.vhost, &b.source)
            .await?
            .contains(&record)
        {
            report.existing.push(what);
            continue;
        }
        store.put_binding(&record).await?;
        report.created.push(what);
    }
    limits::import(store, defs, &mut report).await?;
    let parameters: Vec<Value> = defs
        .parameters
        .iter()
        .filter(|p| !limits::is_vhost_limits(p))
        .cloned()
        .collect();
    for (section, items, why) in [
        (
            "policy",
            &defs.policies,
            "policies are not applied; set the arguments on the queues or exchanges",
        ),
        (
            "parameter",
            &parameters,
            "runtime parameters (shovels, federation) are not supported",
        ),
        (
            "global parameter",
            &defs.global_parameters,
            "global parameters are RabbitMQ cluster settings",
        ),
        (
            "topic permission",
            &defs.topic_permissions,
            "topic permissions are not applied",
        ),
    ] {
        for item in items {
            let name = item
                .get("name")
                .or_else(|| item.get("user"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            report
                .skipped
                .push((format!("{section} '{name}'"), why.to_owned()));
        }
    }
    Ok(report)
}

/// Everything in the meta store, as RabbitMQ definitions. Built-in `amq.*`
/// exchanges and exclusive queues are left out, as RabbitMQ leaves them out.
pub async fn export(store: &meta::Store) -> Result<Definitions, DefinitionsError> {
    let snap = store.snapshot().await?;
    let mut defs = Definitions {
        rabbit_version: Some("3.10.0".into()),
        product_name: Some("amqp-gateway".into()),
        product_version: Some(env!("CARGO_PKG_VERSION").into()),
        ..Definitions::default()
    };
    defs.users = snap
        .users
        .iter()
        .map(|u| UserDef {
            name: u.name.clone(),
            password_hash: u.password_hash.clone(),
            hashing_algorithm: SHA256.into(),
            tags: Tags::List(Tags::Text(u.tags.clone()).list()),
            limits: Map::new(),
        })
        .collect();
    defs.vhosts = snap
        .vhosts
        .iter()
        .map(|v| VhostDef {
            name: v.name.clone(),
        })
        .collect();
    defs.permissions = snap
        .permissions
        .iter()
        .map(|p| PermissionDef {
            user: p.user.clone(),
            vhost: p.vhost.clone(),
            configure: p.configure.clone(),
            write: p.write.clone(),
            read: p.read.clone(),
        })
        .collect();
    defs.exchanges = snap
        .exchanges
        .iter()
        .map(|e| ExchangeDef {
            name: e.name.clone(),
            vhost: e.vhost.clone(),
            kind: e.kind.clone(),
            durable: e.durable,
            auto_delete: e.auto_delete,
            internal: e.internal,
            arguments: stored_json(&e.arguments),
        })
        .collect();
    defs.queues = snap
        .queues
        .iter()
        .filter(|q| q.exclusive_owner.is_none())
        .map(|q| QueueDef {
            name: q.name.clone(),
            vhost: q.vhost.clone(),
            durable: q.durable,
            auto_delete: q.auto_delete,
            arguments: stored_json(&q.arguments),
        })
        .collect();
    let exclusive: BTreeMap<(&str, &str), ()> = snap
        .queues
        .iter()
        .filter(|q| q.exclusive_owner.is_some())
        .map(|q| ((q.vhost.as_str(), q.name.as_str()), ()))
        .collect();
    defs.bindings = snap
        .bindings
        .iter()
        .filter(|b| {
            b.destination_kind != meta::DestinationKind::Queue
                || !exclusive.contains_key(&(b.vhost.as_str(), b.destination.as_str()))
        })
        .map(|b| BindingDef {
            source: b.source.clone(),
            vhost: b.vhost.clone(),
            destination: b.destination.clone(),
            destination_type: b.destination_kind.as_str().into(),
            routing_key: b.routing_key.clone(),
            arguments: stored_json(&b.arguments),
        })
        .collect();
    limits::export(&snap, &mut defs);
    Ok(defs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip_between_json_and_amqp_as_rabbitmq_converts_them() {
        let json: Map<String, Value> = serde_json::from_str(
            r#"{"x-message-ttl": 600000, "x-dead-letter-exchange": "dlx", "flag": true,
                "ratio": 0.5, "list": [1, "a"], "nested": {"k": "v"}}"#,
        )
        .unwrap();
        let table = json_to_table(&json);
        assert_eq!(
            table.inner().get("x-message-ttl"),
            Some(&AMQPValue::LongLongInt(600000))
        );
        assert_eq!(table_to_json(&table), json);
        let stored = encode_arguments(&table);
        assert_eq!(stored_json(&stored), json);
    }

    #[tokio::test]
    async fn import_refuses_queue_arguments_that_queue_declare_refuses() {
        let store = meta::Store::open("sqlite::memory:").await.unwrap();
        let upstream = crate::upstream::null::NullUpstream::default();
        let defs: Definitions = serde_json::from_str(
            r#"{"vhosts": [{"name": "/"}], "queues": [
                {"name": "good", "vhost": "/", "durable": true, "auto_delete": false,
                 "arguments": {"x-max-length": 10}},
                {"name": "bad", "vhost": "/", "durable": true, "auto_delete": false,
                 "arguments": {"x-max-length": -1}},
                {"name": "stream", "vhost": "/", "durable": true, "auto_delete": false,
                 "arguments": {"x-queue-type": "stream"}}]}"#,
        )
        .unwrap();
        let report = import(&store, &upstream, &defs).await.unwrap();
        assert_eq!(report.created, ["vhost '/'", "queue 'good' in vhost '/'"]);
        let skipped: Vec<&str> = report.skipped.iter().map(|(w, _)| w.as_str()).collect();
        assert!(skipped.contains(&"queue 'bad' in vhost '/'"), "{report}");
        assert!(skipped.contains(&"queue 'stream' in vhost '/'"), "{report}");
        assert!(store.queue("/", "bad").await.unwrap().is_none());
        let again = import(&store, &upstream, &defs).await.unwrap();
        assert_eq!(again.existing, ["vhost '/'", "queue 'good' in vhost '/'"]);
    }

    #[test]
    fn tags_are_read_as_a_list_or_as_rabbitmq_3_8s_string() {
        let old: UserDef = serde_json::from_str(
            r#"{"name":"a","password_hash":"h","tags":"administrator, monitoring"}"#,
        )
        .unwrap();
        assert_eq!(old.tags.list(), ["administrator", "monitoring"]);
        assert_eq!(old.hashing_algorithm, SHA256, "the default when absent");
    }
}
