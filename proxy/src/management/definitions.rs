//! `GET` and `POST /api/definitions[/{vhost}]`: the topology out and in,
//! through the code of `amqp-gateway export` / `import`
//! (crate::definitions), administrators only. A vhost's definitions are
//! RabbitMQ's shape for one vhost: its queues, exchanges, bindings,
//! policies and parameters, without a `vhost` field; imported, they go into
//! the vhost of the path. Uploads come as a JSON body or, as the management
//! UI and `rabbitmqadmin import` send them, as a multipart form whose field
//! `file` holds the JSON.

use serde_json::{Map, Value};

use super::api::{visible_vhost, Call, Reply};

/// The parts of a definitions document that belong to a vhost.
const PER_VHOST: [&str; 5] = ["queues", "exchanges", "bindings", "policies", "parameters"];

pub(super) async fn export(c: &Call<'_>, vhost: Option<&str>) -> Reply {
    if !c.caller.is_administrator() {
        return Reply::forbidden("definitions are for administrators");
    }
    if let Some(name) = vhost {
        if visible_vhost(c, name).is_none() {
            return Reply::not_found();
        }
    }
    let all = match crate::definitions::export(&c.gateway.store).await {
        Ok(defs) => serde_json::to_value(defs).unwrap_or(Value::Null),
        Err(e) => return Reply::error(503, "unavailable", &e.to_string()),
    };
    match (vhost, all) {
        (Some(name), Value::Object(all)) => Reply::ok(Value::Object(of_vhost(all, name))),
        (_, all) => Reply::ok(all),
    }
}

/// One vhost's part of a whole export, its objects without `vhost`.
fn of_vhost(mut all: Map<String, Value>, name: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for key in [
        "rabbit_version",
        "rabbitmq_version",
        "product_name",
        "product_version",
    ] {
        if let Some(v) = all.remove(key) {
            out.insert(key.to_owned(), v);
        }
    }
    for key in PER_VHOST {
        let items = match all.remove(key) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        let mine = items
            .into_iter()
            .filter(|item| item["vhost"] == name)
            .map(|mut item| {
                if let Some(fields) = item.as_object_mut() {
                    fields.remove("vhost");
                }
                item
            })
            .collect();
        out.insert(key.to_owned(), Value::Array(mine));
    }
    out
}

/// Merged into what exists, through the code of `amqp-gateway import`.
/// Answers once this gateway sees the result.
pub(super) async fn import(c: &Call<'_>, vhost: Option<&str>) -> Reply {
    if !c.caller.is_administrator() {
        return Reply::forbidden("definitions are for administrators");
    }
    let json = match uploaded(c) {
        Ok(json) => json,
        Err(reason) => return Reply::bad_request(&reason),
    };
    let mut document: Value = match serde_json::from_slice(json) {
        Ok(document) => document,
        Err(e) => return Reply::bad_request(&format!("malformed definitions: {e}")),
    };
    if let Some(name) = vhost {
        if visible_vhost(c, name).is_none() {
            return Reply::not_found();
        }
        let Some(fields) = document.as_object_mut() else {
            return Reply::bad_request("definitions must be a JSON object");
        };
        into_vhost(fields, name);
    }
    let defs: crate::definitions::Definitions = match serde_json::from_value(document) {
        Ok(defs) => defs,
        Err(e) => return Reply::bad_request(&format!("malformed definitions: {e}")),
    };
    match crate::definitions::import(&c.gateway.store, c.gateway.upstream.as_ref(), &defs).await {
        Ok(report) => {
            crate::follow::catch_up_now(c.gateway).await;
            tracing::info!(
                vhost = vhost.unwrap_or("(all)"),
                created = report.created.len(),
                existing = report.existing.len(),
                skipped = report.skipped.len(),
                "Definitions imported through the management API."
            );
            if report.skipped.is_empty() {
                Reply::no_content()
            } else {
                let skipped: Vec<String> = report
                    .skipped
                    .iter()
                    .map(|(what, why)| format!("{what}: {why}"))
                    .collect();
                Reply::error(
                    400,
                    "bad_request",
                    &format!("imported, except: {}", skipped.join("; ")),
                )
            }
        }
        Err(e) => Reply::error(503, "unavailable", &e.to_string()),
    }
}

/// A vhost's definitions apply to that vhost only: its objects are put in
/// it whatever they say, and users, vhosts and permissions are not taken.
fn into_vhost(fields: &mut Map<String, Value>, name: &str) {
    for key in [
        "users",
        "vhosts",
        "permissions",
        "topic_permissions",
        "global_parameters",
    ] {
        if fields.remove(key).is_some() {
            tracing::warn!(vhost = %name, part = key, "A vhost's definitions carried a server-wide part; left out (as RabbitMQ does).");
        }
    }
    for key in PER_VHOST {
        if let Some(Value::Array(items)) = fields.get_mut(key) {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                item.insert("vhost".into(), Value::String(name.to_owned()));
            }
        }
    }
}

/// The JSON of an upload: the body, or the `file` field of a multipart form.
fn uploaded<'a>(c: &'a Call<'_>) -> Result<&'a [u8], String> {
    let Some(content_type) = c.content_type.as_deref() else {
        return Ok(&c.body);
    };
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Ok(&c.body);
    }
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"'))
        .next()
        .ok_or("a multipart upload without a boundary")?;
    form_field(&c.body, boundary, "file")
        .ok_or_else(|| "a multipart upload needs the definitions in the field 'file'".to_owned())
}

/// The content of form field `name` in a multipart/form-data body.
fn form_field<'a>(body: &'a [u8], boundary: &str, name: &str) -> Option<&'a [u8]> {
    let delimiter = format!("--{boundary}");
    let wanted = format!("name=\"{name}\"");
    let mut rest = body;
    while let Some(at) = find(rest, delimiter.as_bytes()) {
        rest = &rest[at + delimiter.len()..];
        let end = find(rest, delimiter.as_bytes()).unwrap_or(rest.len());
        let part = &rest[..end];
        let Some(split) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let headers = String::from_utf8_lossy(&part[..split]);
        let content = &part[split + 4..];
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        let disposition = headers
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"));
        if disposition.is_some_and(|d| d.split(';').any(|p| p.trim() == wanted)) {
            return Some(content);
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_field_of_a_multipart_form_is_the_upload() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nno\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.json\"\r\n\
Content-Type: application/json\r\n\r\n{\"queues\": []}\r\n--XyZ--\r\n";
        assert_eq!(
            form_field(body, "XyZ", "file"),
            Some(&b"{\"queues\": []}"[..])
        );
        assert_eq!(form_field(body, "XyZ", "missing"), None);
    }

    #[test]
    fn a_vhosts_part_has_its_objects_only_without_the_vhost_field() {
        let all = serde_json::json!({
            "rabbit_version": "3.10.8",
            "users": [{"name": "guest"}],
            "queues": [{"name": "a", "vhost": "/"}, {"name": "b", "vhost": "other"}],
            "bindings": [],
        });
        let Value::Object(all) = all else { panic!() };
        let part = of_vhost(all, "other");
        assert_eq!(part["queues"], serde_json::json!([{"name": "b"}]));
        assert!(part.get("users").is_none());
        assert_eq!(part["exchanges"], serde_json::json!([]));
        assert_eq!(part["rabbit_version"], "3.10.8");
    }
}
