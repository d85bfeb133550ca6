//! A field table as a client sends it (queue arguments, message headers,
//! AMQPLAIN logins): the depth guard first, as the gateway does, then the
//! parser, then the JSON the management API and definitions export show.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::codec::depth::{table_depth, MAX_DEPTH};

fuzz_target!(|data: &[u8]| {
    let mut framed = (data.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(data);
    if table_depth(&framed, 0) > MAX_DEPTH {
        return;
    }
    if let Ok((_, table)) = amq_protocol::types::parsing::parse_field_table(framed.as_slice()) {
        let _ = proxy::definitions::table_to_json(&table);
    }
});
