//! RocketMQ resource names for AMQP objects.
//!
//! RocketMQ accepts `[0-9A-Za-z%_|-]`, at most 127 characters; AMQP names are up
//! to 255 bytes of nearly anything. `encode` keeps `[0-9A-Za-z_-]` and writes
//! every other byte as `|XX` (upper-case hex), which is injective. `%` is left
//! out of the encoding: it separates a namespace from a name. Names too long
//! after encoding keep a prefix and end in `|H` plus a 64-bit hash (`H` is no hex digit, so this never reads as an escape) of the whole
//! name; the store records every chosen name and refuses a duplicate, so a hash
//! collision becomes a clear error rather than two queues sharing a topic.

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

/// The topic that stores a queue's messages.
pub fn queue_topic(namespace: &str, queue: &str) -> String {
    resource(namespace, 'Q', queue)
}

/// The consumer group whose committed offset is a queue's read position.
pub fn queue_group(namespace: &str, queue: &str) -> String {
    resource(namespace, 'G', queue)
}

fn resource(namespace: &str, kind: char, name: &str) -> String {
    let full = format!("{namespace}%{kind}_{}", encode(name));
    if full.len() <= MAX_RESOURCE_NAME {
        return full;
    }
    // The kind letter is repeated in the digest: a cut may remove the first one.
    let digest = format!(
        "|H{kind}{:016X}",
        fnv1a64(namespace.as_bytes(), kind, name.as_bytes())
    );
    let mut cut = MAX_RESOURCE_NAME - digest.len();
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

    #[test]
    fn keeps_plain_names_readable() {
        assert_eq!(vhost_namespace("/"), "vh_|2F");
        assert_eq!(queue_topic("vh_|2F", "orders"), "vh_|2F%Q_orders");
        assert_eq!(queue_group("vh_|2F", "task.q"), "vh_|2F%G_task|2Eq");
    }

    #[test]
    fn long_names_are_cut_with_a_hash() {
        let a = "x".repeat(255);
        let b = format!("{}y", "x".repeat(254));
        let (ta, tb) = (queue_topic("vh_a", &a), queue_topic("vh_a", &b));
        assert_eq!(ta.len(), MAX_RESOURCE_NAME);
        assert_ne!(ta, tb);
        assert!(is_valid_resource(&ta));
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
            let topic = queue_topic(&ns, &queue);
            prop_assert!(is_valid_resource(&topic), "{}", topic);
            prop_assert_eq!(topic, queue_topic(&ns, &queue));
            prop_assert_ne!(queue_topic(&ns, &queue), queue_group(&ns, &queue));
        }

        #[test]
        fn short_resource_names_are_injective(q1 in "[a-z.]{0,30}", q2 in "[a-z.]{0,30}") {
            prop_assume!(q1 != q2);
            prop_assert_ne!(queue_topic("vh_x", &q1), queue_topic("vh_x", &q2));
        }
    }
}
