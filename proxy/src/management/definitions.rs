//! `GET` and `POST /api/definitions`: the whole topology out and in,
//! through the code of `amqp-gateway export` / `import`
//! (crate::definitions), administrators only.

use serde_json::Value;

use super::api::{Call, Reply};

pub(super) async fn export(c: &Call<'_>) -> Reply {
    if !c.caller.is_administrator() {
        return Reply::forbidden("definitions are for administrators");
    }
    match crate::definitions::export(&c.gateway.store).await {
        Ok(defs) => Reply::ok(serde_json::to_value(defs).unwrap_or(Value::Null)),
        Err(e) => Reply::error(503, "unavailable", &e.to_string()),
    }
}

/// `POST /api/definitions`: merged into what exists, through the code of
/// `amqp-gateway import` (a JSON body; RabbitMQ's multipart form upload is
/// not taken). Answers once this gateway sees the result.
pub(super) async fn import(c: &Call<'_>) -> Reply {
    if !c.caller.is_administrator() {
        return Reply::forbidden("definitions are for administrators");
    }
    let defs: crate::definitions::Definitions = match serde_json::from_slice(&c.body) {
        Ok(defs) => defs,
        Err(e) => return Reply::bad_request(&format!("malformed definitions: {e}")),
    };
    match crate::definitions::import(&c.gateway.store, c.gateway.upstream.as_ref(), &defs).await {
        Ok(report) => {
            crate::follow::catch_up_now(c.gateway).await;
            tracing::info!(
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
