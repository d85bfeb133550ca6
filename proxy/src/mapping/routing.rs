//! Which queues a message reaches: RabbitMQ's exchange semantics, evaluated by
//! the gateway at publish time over the bindings it holds.

use amq_protocol::types::{AMQPValue, FieldTable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    Queue(String),
    Exchange(String),
}

/// How a headers binding compares the message's headers with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XMatch {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

/// The arguments of a headers-exchange binding, read once at bind time.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadersSpec {
    mode: XMatch,
    pairs: Vec<(String, AMQPValue)>,
}

impl HeadersSpec {
    /// Reads `x-match` and the pairs to compare. Keys starting with `x-` are
    /// ignored unless the mode is `all-with-x` / `any-with-x` (RabbitMQ 3.10).
    pub fn from_arguments(arguments: &FieldTable) -> Result<HeadersSpec, String> {
        let mode = match arguments.inner().get("x-match") {
            None => XMatch::All,
            Some(AMQPValue::LongString(s)) => {
                parse_x_match(&String::from_utf8_lossy(s.as_bytes()))?
            }
            Some(AMQPValue::ShortString(s)) => parse_x_match(s.as_str())?,
            Some(other) => return Err(format!("x-match must be a string, got {other:?}")),
        };
        let with_x = matches!(mode, XMatch::AllWithX | XMatch::AnyWithX);
        let pairs = arguments
            .inner()
            .iter()
            .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")))
            .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
            .collect();
        Ok(HeadersSpec { mode, pairs })
    }

    pub fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let present = |key: &str, want: &AMQPValue| -> bool {
            headers
                .and_then(|h| h.inner().get(key))
                .is_some_and(|have| match want {
                    // A void binding value asks only that the header is present.
                    AMQPValue::Void => true,
                    want => values_equal(want, have),
                })
        };
        match self.mode {
            XMatch::All | XMatch::AllWithX => self.pairs.iter().all(|(k, v)| present(k, v)),
            XMatch::Any | XMatch::AnyWithX => self.pairs.iter().any(|(k, v)| present(k, v)),
        }
    }
}

fn parse_x_match(text: &str) -> Result<XMatch, String> {
    match text {
        "all" => Ok(XMatch::All),
        "any" => Ok(XMatch::Any),
        "all-with-x" => Ok(XMatch::AllWithX),
        "any-with-x" => Ok(XMatch::AnyWithX),
        other => Err(format!(
            "Invalid x-match field value {other:?}; expected all, any, all-with-x or any-with-x"
        )),
    }
}

/// Integers compare by value whatever their width, strings whatever their
/// short/long encoding, as RabbitMQ's term comparison does.
fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (as_integer(a), as_integer(b)) {
        (Some(x), Some(y)) => return x == y,
        (Some(_), None) | (None, Some(_)) => return false,
        (None, None) => {}
    }
    match (as_text(a), as_text(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn as_integer(v: &AMQPValue) -> Option<i128> {
    Some(match *v {
        AMQPValue::ShortShortInt(n) => n.into(),
        AMQPValue::ShortShortUInt(n) => n.into(),
        AMQPValue::ShortInt(n) => n.into(),
        AMQPValue::ShortUInt(n) => n.into(),
        AMQPValue::LongInt(n) => n.into(),
        AMQPValue::LongUInt(n) => n.into(),
        AMQPValue::LongLongInt(n) => n.into(),
        AMQPValue::Timestamp(n) => n.into(),
        _ => return None,
    })
}

fn as_text(v: &AMQPValue) -> Option<&[u8]> {
    match v {
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A binding as the router evaluates it.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteBinding {
    pub destination: Destination,
    pub routing_key: String,
    /// Present on bindings of headers exchanges.
    pub headers: Option<HeadersSpec>,
}

/// Whether a binding of an exchange of `kind` takes a message.
pub fn binding_matches(
    kind: ExchangeKind,
    binding: &RouteBinding,
    routing_key: &str,
    headers: Option<&FieldTable>,
) -> bool {
    match kind {
        ExchangeKind::Direct => binding.routing_key == routing_key,
        ExchangeKind::Fanout => true,
        ExchangeKind::Topic => topic_matches(&binding.routing_key, routing_key),
        ExchangeKind::Headers => binding
            .headers
            .as_ref()
            .is_some_and(|spec| spec.matches(headers)),
    }
}

/// AMQP topic matching: words separated by `.`, `*` is exactly one word, `#`
/// zero or more words.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    let pattern = words(pattern);
    let key = words(key);
    // Iterative matching with one backtrack point per `#` (the classic
    // wildcard algorithm): linear in practice, never exponential.
    let (mut p, mut k) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        if p < pattern.len() && pattern[p] == "#" {
            star = Some((p, k));
            p += 1;
        } else if p < pattern.len() && (pattern[p] == "*" || pattern[p] == key[k]) {
            p += 1;
            k += 1;
        } else if let Some((sp, sk)) = star {
            p = sp + 1;
            k = sk + 1;
            star = Some((sp, sk + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|w| *w == "#")
}

/// RabbitMQ splits "" into zero words, anything else on every `.`.
fn words(text: &str) -> Vec<&str> {
    if text.is_empty() {
        Vec::new()
    } else {
        text.split('.').collect()
    }
}

/// What the router needs to know about the exchanges of one vhost.
pub trait ExchangeGraph {
    /// The kind and bindings of an exchange, or None if it does not exist.
    fn exchange(&self, name: &str) -> Option<(ExchangeKind, &[RouteBinding])>;

    /// The exchange's alternate exchange (its `alternate-exchange`
    /// argument), which takes what the exchange itself routes nowhere.
    fn alternate(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// The queues a message published to `exchange` reaches, each once, in a
/// stable order. Exchange-to-exchange bindings are followed, cycles cut; an
/// exchange none of whose bindings match hands the message to its
/// alternate exchange, as RabbitMQ's routing does (a missing one routes
/// nowhere).
///
/// `routing_keys` holds the message's routing key and those its CC and BCC
/// headers add: a binding matches when any of them does, at every hop, as
/// in RabbitMQ.
pub fn route<G: ExchangeGraph>(
    graph: &G,
    exchange: &str,
    routing_keys: &[&str],
    headers: Option<&FieldTable>,
) -> Vec<String> {
    let mut queues: Vec<String> = Vec::new();
    let mut visited: Vec<&str> = Vec::new();
    let mut pending: Vec<&str> = vec![exchange];
    while let Some(name) = pending.pop() {
        if visited.contains(&name) {
            continue;
        }
        visited.push(name);
        let Some((kind, bindings)) = graph.exchange(name) else {
            continue;
        };
        let mut matched = false;
        for binding in bindings {
            if !routing_keys
                .iter()
                .any(|key| binding_matches(kind, binding, key, headers))
            {
                continue;
            }
            matched = true;
            match &binding.destination {
                Destination::Queue(q) => queues.push(q.clone()),
                Destination::Exchange(e) => pending.push(e.as_str()),
            }
        }
        if !matched {
            pending.extend(graph.alternate(name));
        }
    }
    queues.sort();
    queues.dedup();
    queues
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn topic_patterns_follow_rabbitmq() {
        let cases = [
            ("a.b.c", "a.b.c", true),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.c", false),
            ("a.#", "a", true),
            ("a.#", "a.b.c", true),
            ("#", "", true),
            ("#", "anything.at.all", true),
            ("*", "", false),
            ("*", "a.b", false),
            ("#.c", "c", true),
            ("#.c", "a.b.c", true),
            ("#.c", "a.b.cd", false),
            ("a.#.b.#.c", "a.x.b.y.z.c", true),
            ("a.#.b.#.c", "a.b.c", true),
            ("a.#.b.#.c", "a.c.b", false),
            ("*.#", "", false),
            ("*.*", "a", false),
            ("", "", true),
            ("", "a", false),
        ];
        for (pattern, key, want) in cases {
            assert_eq!(topic_matches(pattern, key), want, "{pattern:?} vs {key:?}");
        }
    }

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn headers_all_any_and_x_keys() {
        let all = HeadersSpec::from_arguments(&table(&[
            ("format", AMQPValue::LongString("pdf".into())),
            ("type", AMQPValue::LongString("report".into())),
            ("x-ignored", AMQPValue::Boolean(true)),
        ]))
        .unwrap();
        let both = table(&[
            ("format", AMQPValue::ShortString("pdf".into())),
            ("type", AMQPValue::LongString("report".into())),
        ]);
        let one = table(&[("format", AMQPValue::LongString("pdf".into()))]);
        assert!(all.matches(Some(&both)));
        assert!(!all.matches(Some(&one)));
        assert!(!all.matches(None));

        let any = HeadersSpec::from_arguments(&table(&[
            ("x-match", AMQPValue::LongString("any".into())),
            ("format", AMQPValue::LongString("pdf".into())),
            ("type", AMQPValue::LongString("log".into())),
        ]))
        .unwrap();
        assert!(any.matches(Some(&one)));
        assert!(!any.matches(Some(&table(&[(
            "type",
            AMQPValue::LongString("report".into())
        )]))));

        let ints =
            HeadersSpec::from_arguments(&table(&[("n", AMQPValue::ShortShortInt(5))])).unwrap();
        assert!(ints.matches(Some(&table(&[("n", AMQPValue::LongLongInt(5))]))));
        assert!(!ints.matches(Some(&table(&[("n", AMQPValue::LongString("5".into()))]))));

        assert!(HeadersSpec::from_arguments(&table(&[(
            "x-match",
            AMQPValue::LongString("some".into())
        )]))
        .is_err());
    }

    struct Graph(HashMap<String, (ExchangeKind, Vec<RouteBinding>)>);

    impl ExchangeGraph for Graph {
        fn exchange(&self, name: &str) -> Option<(ExchangeKind, &[RouteBinding])> {
            self.0.get(name).map(|(k, b)| (*k, b.as_slice()))
        }
    }

    fn to(dest: Destination, key: &str) -> RouteBinding {
        RouteBinding {
            destination: dest,
            routing_key: key.into(),
            headers: None,
        }
    }

    #[test]
    fn routes_through_exchange_bindings_once_and_cuts_cycles() {
        let mut g = HashMap::new();
        g.insert(
            "front".to_string(),
            (
                ExchangeKind::Topic,
                vec![
                    to(Destination::Queue("q1".into()), "a.*"),
                    to(Destination::Exchange("fan".into()), "a.#"),
                    to(Destination::Queue("q1".into()), "#"),
                ],
            ),
        );
        g.insert(
            "fan".to_string(),
            (
                ExchangeKind::Fanout,
                vec![
                    to(Destination::Queue("q2".into()), ""),
                    to(Destination::Exchange("front".into()), ""),
                ],
            ),
        );
        let graph = Graph(g);
        assert_eq!(
            route(&graph, "front", &["a.b"], None),
            vec!["q1".to_string(), "q2".to_string()]
        );
        assert_eq!(route(&graph, "front", &["b"], None), vec!["q1".to_string()]);
        assert!(route(&graph, "missing", &["a"], None).is_empty());
    }
}
