//! Bounds the nesting of field tables and arrays before amq-protocol's
//! parser sees a payload.
//!
//! amq-protocol parses a table inside a table by recursion, so a 1 KB frame
//! of tables nested ~140 deep overflows a worker thread's stack and aborts
//! the whole process (before login: connection.start-ok carries a table).
//! This walk is iterative and reads only lengths and type tags; it looks at
//! exactly the places a known method or a content header holds a table.
//! Malformed bytes end the walk quietly: the parser that runs next reports
//! them with the spec's code.

/// Deepest nesting accepted. Real clients send two or three levels (x-death
/// is an array of tables); 32 keeps the parser far from the stack's end.
pub const MAX_DEPTH: usize = 32;

/// What comes before a method's field table.
#[derive(Clone, Copy)]
enum Skip {
    Octets(usize),
    ShortString,
}

use Skip::{Octets, ShortString};

/// The arguments before the table of each method that carries one.
fn before_table(class_id: u16, method_id: u16) -> Option<&'static [Skip]> {
    Some(match (class_id, method_id) {
        (10, 10) => &[Octets(2)], // connection.start
        (10, 11) => &[],          // connection.start-ok
        (40, 10) => &[Octets(2), ShortString, ShortString, Octets(1)], // exchange.declare
        (40, 30) | (40, 40) | (50, 20) => {
            &[Octets(2), ShortString, ShortString, ShortString, Octets(1)]
        } // exchange.bind / unbind, queue.bind
        (50, 10) => &[Octets(2), ShortString, Octets(1)], // queue.declare
        (50, 50) => &[Octets(2), ShortString, ShortString, ShortString], // queue.unbind
        (60, 20) => &[Octets(2), ShortString, ShortString, Octets(1)], // basic.consume
        _ => return None,
    })
}

fn skip(bytes: &[u8], mut at: usize, fields: &[Skip]) -> Option<usize> {
    for field in fields {
        at += match field {
            Octets(n) => *n,
            ShortString => 1 + usize::from(*bytes.get(at)?),
        };
    }
    Some(at)
}

/// The nesting depth of a method payload's field table (0 without one).
pub fn method_depth(payload: &[u8]) -> usize {
    let (Some(class), Some(method)) = (payload.get(0..2), payload.get(2..4)) else {
        return 0;
    };
    let class_id = u16::from_be_bytes([class[0], class[1]]);
    let method_id = u16::from_be_bytes([method[0], method[1]]);
    before_table(class_id, method_id)
        .and_then(|fields| skip(payload, 4, fields))
        .map_or(0, |at| table_depth(payload, at))
}

/// The nesting depth of a content header's `headers` property (0 without).
pub fn header_depth(payload: &[u8]) -> usize {
    // class-id, weight, body-size: 12 octets, then the property flags.
    payload.get(12..).map_or(0, properties_depth)
}

/// The nesting depth of the `headers` in basic properties as a content
/// header encodes them (flags, then the list): 0 without headers.
pub fn properties_depth(wire: &[u8]) -> usize {
    let Some(flags) = wire.get(0..2) else {
        return 0;
    };
    let flags = u16::from_be_bytes([flags[0], flags[1]]);
    if flags & (1 << 13) == 0 {
        return 0;
    }
    let mut before = Vec::with_capacity(2);
    if flags & (1 << 15) != 0 {
        before.push(ShortString);
    }
    if flags & (1 << 14) != 0 {
        before.push(ShortString);
    }
    skip(wire, 2, &before).map_or(0, |at| table_depth(wire, at))
}

#[derive(Clone, Copy, PartialEq)]
enum Container {
    Table,
    Array,
}

fn long_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Depth of the table (length-prefixed) starting at `start`; the table
/// itself is 1. Stops once past [`MAX_DEPTH`], so the answer is at most
/// `MAX_DEPTH + 1`.
pub fn table_depth(bytes: &[u8], start: usize) -> usize {
    let Some(len) = long_at(bytes, start) else {
        return 0;
    };
    // Open containers: (end offset, kind).
    let mut open = vec![(start + 4 + len, Container::Table)];
    let mut deepest = 1;
    let mut at = start + 4;
    while let Some(&(end, kind)) = open.last() {
        if at >= end {
            if at > end {
                return deepest; // malformed: lengths disagree
            }
            open.pop();
            continue;
        }
        if kind == Container::Table {
            let Some(&key_len) = bytes.get(at) else {
                return deepest;
            };
            at += 1 + usize::from(key_len);
        }
        let Some(&tag) = bytes.get(at) else {
            return deepest;
        };
        at += 1;
        let size = match tag {
            b't' | b'b' | b'B' => 1,
            b's' | b'u' | b'U' => 2,
            b'I' | b'i' | b'f' => 4,
            b'D' => 5,
            b'L' | b'l' | b'd' | b'T' => 8,
            b'V' => 0,
            b'S' | b'x' => match long_at(bytes, at) {
                Some(n) => 4 + n,
                None => return deepest,
            },
            b'F' | b'A' => {
                let Some(n) = long_at(bytes, at) else {
                    return deepest;
                };
                at += 4;
                let inner = if tag == b'F' {
                    Container::Table
                } else {
                    Container::Array
                };
                open.push((at + n, inner));
                deepest = deepest.max(open.len());
                if deepest > MAX_DEPTH {
                    return deepest;
                }
                continue;
            }
            _ => return deepest,
        };
        at += size;
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame};
    use amq_protocol::protocol::{basic, connection, queue, AMQPClass};
    use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};

    /// A table holding a table holding ... `depth` tables, built without recursion.
    fn nested_table_bytes(depth: usize) -> Vec<u8> {
        let mut table = vec![0, 0, 0, 0];
        for _ in 1..depth {
            let mut entry = vec![1, b'x', b'F'];
            entry.extend_from_slice(&table);
            table = (entry.len() as u32).to_be_bytes().to_vec();
            table.extend_from_slice(&entry);
        }
        table
    }

    fn payload(frame: AMQPFrame) -> Vec<u8> {
        let bytes = cookie_factory::gen_simple(gen_frame(&frame), Vec::new()).unwrap();
        bytes[7..bytes.len() - 1].to_vec()
    }

    fn nested(depth: usize) -> FieldTable {
        let mut value = FieldTable::default();
        value.insert("leaf".into(), AMQPValue::LongString("v".into()));
        for i in 1..depth {
            let mut outer = FieldTable::default();
            outer.insert("n".into(), AMQPValue::LongLongInt(i as i64));
            if i % 2 == 0 {
                outer.insert("t".into(), AMQPValue::FieldTable(value));
            } else {
                let mut array = FieldArray::default();
                array.push(AMQPValue::Boolean(true));
                array.push(AMQPValue::FieldTable(value));
                outer.insert("a".into(), AMQPValue::FieldArray(array));
            }
            value = outer;
        }
        value
    }

    #[test]
    fn counts_tables_and_arrays_in_start_ok() {
        let start_ok = |table| {
            payload(AMQPFrame::Method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                    client_properties: table,
                    mechanism: "PLAIN".into(),
                    response: "\0a\0b".into(),
                    locale: "en_US".into(),
                })),
            ))
        };
        assert_eq!(method_depth(&start_ok(FieldTable::default())), 1);
        // Odd levels add an array and a table: depth 5 is 1 + 2 + 1 + 2 + 1 ... levels.
        let d = method_depth(&start_ok(nested(5)));
        assert_eq!(
            d, 7,
            "3 tables with arrays between them plus 2 plain tables"
        );
    }

    #[test]
    fn finds_the_table_after_the_arguments_of_queue_declare() {
        let declare = payload(AMQPFrame::Method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "some-queue".into(),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: nested(3),
            })),
        ));
        assert_eq!(method_depth(&declare), 4);
        let purge = payload(AMQPFrame::Method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
                queue: "q".into(),
                nowait: false,
            })),
        ));
        assert_eq!(method_depth(&purge), 0);
    }

    #[test]
    fn finds_the_headers_of_a_content_header() {
        let properties = basic::AMQPProperties::default()
            .with_content_type("text/plain".into())
            .with_headers(nested(4));
        let header = payload(AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: 3,
                properties,
            },
        ));
        assert_eq!(header_depth(&header), 6);
        let plain = payload(AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: 3,
                properties: basic::AMQPProperties::default(),
            },
        ));
        assert_eq!(header_depth(&plain), 0);
    }

    #[test]
    fn stops_counting_past_the_limit_and_survives_garbage() {
        let deep = nested_table_bytes(100_000);
        assert_eq!(table_depth(&deep, 0), MAX_DEPTH + 1);
        assert_eq!(table_depth(&nested_table_bytes(MAX_DEPTH), 0), MAX_DEPTH);
        // Truncated or lying lengths end the walk without a panic.
        for cut in 0..40 {
            let _ = table_depth(&deep[..cut], 0);
        }
        let _ = table_depth(&[0xff, 0xff, 0xff, 0xff, 1, b'x', b'F', 0xff], 0);
    }
}
