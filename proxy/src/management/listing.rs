//! Listings as RabbitMQ's API answers them: filtered by name, sorted,
//! paged, and cut down to the asked-for columns.

use serde_json::{json, Map, Value};

use super::api::Call;

/// A listing as RabbitMQ answers it: `?name=` (a substring, or a regular
/// expression with `use_regex=true`) filters by name, `?sort=a.b` and
/// `sort_reverse=true` order it, `?page=&page_size=` turns the answer into
/// a page object, and `?columns=a,b.c` keeps only those fields.
pub(super) fn columns(c: &Call<'_>, mut items: Vec<Value>) -> Value {
    let total = items.len();
    if let Some(pattern) = c.query.get("name").filter(|p| !p.is_empty()) {
        let regex = (c.query.get("use_regex").map(String::as_str) == Some("true"))
            .then(|| regex::Regex::new(pattern).ok())
            .flatten();
        items.retain(|item| {
            let name = item["name"].as_str().unwrap_or_default();
            match &regex {
                Some(r) => r.is_match(name),
                None => name.contains(pattern.as_str()),
            }
        });
    }
    if let Some(key) = c.query.get("sort").filter(|k| !k.is_empty()) {
        let field = |item: &Value| {
            key.split('.')
                .fold(item, |v, part| v.get(part).unwrap_or(&Value::Null))
                .clone()
        };
        items.sort_by(|a, b| compare(&field(a), &field(b)));
        if c.query.get("sort_reverse").map(String::as_str) == Some("true") {
            items.reverse();
        }
    }
    let page = c.query.get("page").and_then(|p| p.parse::<usize>().ok());
    let Some(page) = page.filter(|p| *p >= 1) else {
        return select_columns(c, items);
    };
    let page_size = c
        .query
        .get("page_size")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 500);
    let filtered = items.len();
    let page_count = filtered.div_ceil(page_size).max(1);
    let items: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .collect();
    json!({
        "filtered_count": filtered,
        "item_count": items.len(),
        "items": select_columns(c, items),
        "page": page,
        "page_count": page_count,
        "page_size": page_size,
        "total_count": total,
    })
}

/// Numbers by value, everything else by its text.
fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => {
            let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            text(a).cmp(&text(b))
        }
    }
}

fn select_columns(c: &Call<'_>, items: Vec<Value>) -> Value {
    let Some(wanted) = c.query.get("columns").filter(|w| !w.is_empty()) else {
        return Value::Array(items);
    };
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
    Value::Array(
        items
            .into_iter()
            .map(|item| {
                let mut out = Map::new();
                for column in &wanted {
                    let mut value = &item;
                    for part in column.split('.') {
                        value = value.get(part).unwrap_or(&Value::Null);
                    }
                    if !value.is_null() || item.get(*column).is_some() {
                        out.insert((*column).to_owned(), value.clone());
                    }
                }
                Value::Object(out)
            })
            .collect(),
    )
}
