//! RocketMQ resource names for AMQP objects.
//!
//! RocketMQ accepts `[0-9A-Za-z%_|-]`, at most 127 characters; AMQP names are up
//! to 255 bytes of nearly anything. `encode` keeps `[0-9A-Za-z_-]` and writes
//! every other byte as `|XX` (upper-case hex), which is injective. `%` is left
//! out of the encoding: it separates a namespace from a name. Names too long
//! after encoding keep a prefix and end in `|H` plus a 64-bit hash (`H` is no hex digit, so this never reads as an escape) of the whole
//! name; the store records every chosen name and refuses a duplicate, so a hash
//! collision becomes a clear error rather than two queues sharing a topic.
//!
//! A queue's topic and group end in `|I` and an incarnation drawn when the
//! queue is declared, so a queue deleted and declared again never meets the
//! old one's messages or offsets: RocketMQ keeps a deleted topic's messages
//! in its commit log, and a broker restart indexes them again under the
//! topic's name (and goes on counting offsets from them).

/// RocketMQ's limit on topic and group names.
pub const MAX_RESOURCE_NAME: usize = 127;

/// Encodes an AMQP name into RocketMQ's alphabet, injectively.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push('|');
            out.push(HEX[(byte >> 4) as usize] as char);
            out.push(HEX[(byte & 0xf) as usize] as char);
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The namespace of a vhost: every RocketMQ resource of the vhost starts with it.
pub fn vhost_namespace(vhost: &str) -> String {
    format!("vh_{}", encode(vhost))
}

/// One declaration of a queue: its topic and group names end in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incarnation(u64);

impl Incarnation {
    /// A fresh one (random: gateways declaring at once need no coordination;
    /// the store's UNIQUE names turn the unlikely clash into an error).
    pub fn new() -> Incarnation {
        Incarnation(rand::random::<u64>() % INCARNATIONS)
    }

    fn suffix(self) -> String {
        let mut digits = [b'0'; INCARNATION_DIGITS];
        let mut n = self.0;
        for d in digits.iter_mut().rev() {
            *d = BASE36[(n % 36) as usize];
            n /= 36;
        }
        format!("|I{}", String::from_utf8_lossy(&digits))
    }
}

impl Default for Incarnation {
    fn default() -> Self {
        Incarnation::new()
    }
}

const INCARNATION_DIGITS: usize = 8;
/// 36^8: eight base-36 digits.
const INCARNATIONS: u64 = 2_821_109_907_456;
const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// The topic and group of a queue being declared, for a new incarnation.
pub fn new_queue_names(namespace: &str, queue: &str) -> (String, String) {
    let incarnation = Incarnation::new();
    (
        queue_topic(namespace, queue, incarnation),
        queue_group(namespace, queue, incarnation),
    )
}

/// The topic that stores a queue's messages.
pub fn queue_topic(namespace: &str, queue: &str, incarnation: Incarnation) -> String {
    resource(namespace, 'Q', queue, incarnation)
}

/// The consumer group whose committed offset is a queue's read position.
pub fn queue_group(namespace: &str, queue: &str, incarnation: Incarnation) -> String {
    resource(namespace, 'G', queue, incarnation)
}

fn resource(namespace: &str, kind: char, name: &str, incarnation: Incarnation) -> String {
    let suffix = incarnation.suffix();
    format!(
        "{}{suffix}",
        named(namespace, kind, name, MAX_RESOURCE_NAME - suffix.len())
    )
}

/// `<namespace>%<kind>_<encoded name>`, cut to `limit` with a hash if longer.
fn named(namespace: &str, kind: char, name: &str, limit: usize) -> String {
    let full = format!("{namespace}%{kind}_{}", encode(name));
    if full.len() <= limit {
        return full;
    }
    // The kind letter is repeated in the digest: a cut may remove the first one.
    let digest = format!(
        "|H{kind}{:016X}",
        fnv1a64(namespace.as_bytes(), kind, name.as_bytes())
    );
    let mut cut = limit - digest.len();
    // Never cut inside an `|XX` escape: the prefix must stay a valid encoding.
    while let Some(pos) = full[..cut].rfind('|') {
        if pos + 3 <= cut {
            break;
        }
        cut = pos;
    }
    format!("{}{digest}", &full[..cut])
}

/// FNV-1a over the namespace, a separator, the kind and the name: stable across builds and platforms.
fn fnv1a64(namespace: &[u8], kind: char, name: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in namespace.iter().chain(&[0u8, kind as u8]).chain(name) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Whether `name` is a valid RocketMQ resource name.
pub fn is_valid_resource(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_RESOURCE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'_' | b'|' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ONE: Incarnation = Incarnation(0);

    #[test]
    fn keeps_plain_names_readable() {
        assert_eq!(vhost_namespace("/"), "vh_|2F");
        let i = Incarnation(36 * 36 + 35);
        assert_eq!(
            queue_topic("vh_|2F", "orders", i),
            "vh_|2F%Q_orders|I0000010z"
        );
        assert_eq!(
            queue_group("vh_|2F", "task.q", i),
            "vh_|2F%G_task|2Eq|I0000010z"
        );
    }

    #[test]
    fn every_declaration_gets_its_own_names() {
        let (a, b) = (Incarnation::new(), Incarnation::new());
        assert_ne!(a, b, "a clash of two random draws out of 36^8");
        assert_ne!(queue_topic("vh_a", "q", a), queue_topic("vh_a", "q", b));
        let highest = Incarnation(INCARNATIONS - 1);
        assert_eq!(queue_topic("vh_a", "q", highest), "vh_a%Q_q|Izzzzzzzz");
    }

    #[test]
    fn long_names_are_cut_with_a_hash() {
        let a = "x".repeat(255);
        let b = format!("{}y", "x".repeat(254));
        let (ta, tb) = (queue_topic("vh_a", &a, ONE), queue_topic("vh_a", &b, ONE));
        assert_eq!(ta.len(), MAX_RESOURCE_NAME);
        assert_ne!(ta, tb);
        assert!(is_valid_resource(&ta));
        assert!(ta.ends_with("|I00000000"));
    }

    proptest! {
        #[test]
        fn encoding_is_injective(a in ".{0,40}", b in ".{0,40}") {
            prop_assume!(a != b);
            prop_assert_ne!(encode(&a), encode(&b));
        }

        #[test]
        fn resource_names_are_always_valid_and_stable(vhost in ".{1,60}", queue in ".{0,255}") {
            let ns = vhost_namespace(&vhost);
            let topic = queue_topic(&ns, &queue, ONE);
            prop_assert!(is_valid_resource(&topic), "{}", topic);
            prop_assert_eq!(topic, queue_topic(&ns, &queue, ONE));
            prop_assert_ne!(queue_topic(&ns, &queue, ONE), queue_group(&ns, &queue, ONE));
        }

        #[test]
        fn short_resource_names_are_injective(q1 in "[a-z.]{0,30}", q2 in "[a-z.]{0,30}") {
            prop_assume!(q1 != q2);
            prop_assert_ne!(queue_topic("vh_x", &q1, ONE), queue_topic("vh_x", &q2, ONE));
        }
    }
}
