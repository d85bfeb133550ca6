//! The markdown table and the SVG chart of a run.

use std::fmt::Write;

use crate::{Outcome, Scenario};

/// One scenario on one target, ready to print.
#[derive(Debug)]
pub struct Row {
    pub scenario: String,
    pub target: String,
    pub outcome: Option<Outcome>,
    /// Why there is no outcome (not applicable, or the error it ended with).
    pub note: Option<String>,
    /// CPU seconds per process label, over the run.
    pub cpu: Vec<(String, f64)>,
    /// Peak resident memory per process label, MiB.
    pub rss: Vec<(String, f64)>,
    /// The bench's own CPU seconds over the run.
    pub bench_cpu: f64,
}

impl Row {
    /// Messages per second that made it through the scenario: deliveries when
    /// there are consumers (0 if none came), confirms otherwise.
    pub fn rate(&self) -> Option<f64> {
        let o = self.outcome.as_ref()?;
        let n = if o.consumed { o.delivered } else { o.published };
        (o.seconds > 0.0).then(|| n as f64 / o.seconds)
    }

    fn published_rate(&self) -> Option<f64> {
        let o = self.outcome.as_ref()?;
        (o.seconds > 0.0).then(|| o.published as f64 / o.seconds)
    }

    /// CPU microseconds per published message.
    fn per_message(&self, seconds: f64) -> Option<f64> {
        let o = self.outcome.as_ref()?;
        (o.published > 0).then(|| seconds * 1e6 / o.published as f64)
    }

    /// Per delivered message (each queue's copy counts).
    fn per_delivery(&self, seconds: f64) -> Option<f64> {
        let o = self.outcome.as_ref()?;
        (o.delivered > 0).then(|| seconds * 1e6 / o.delivered as f64)
    }
}

fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v >= 100.0 && digits > 0 => format!("{v:.0}"),
        Some(v) => format!("{v:.digits$}"),
        None => "–".into(),
    }
}

fn thousands(v: Option<f64>) -> String {
    let Some(v) = v else { return "–".into() };
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn p50_p99(latencies: &mut crate::measure::Latencies) -> String {
    format!(
        "{} / {}",
        num(latencies.quantile_ms(0.5), 2),
        num(latencies.quantile_ms(0.99), 2)
    )
}

/// The markdown report: one table per scenario, then the ratios.
pub fn markdown(rows: &mut [Row]) -> String {
    let mut out = String::new();
    let mut scenarios: Vec<String> = Vec::new();
    for r in rows.iter() {
        if !scenarios.contains(&r.scenario) {
            scenarios.push(r.scenario.clone());
        }
    }
    for scenario in &scenarios {
        let _ = writeln!(out, "### {scenario}\n");
        if is_first_delivery(scenario) {
            first_delivery_table(&mut out, rows, scenario);
            continue;
        }
        let _ = writeln!(
            out,
            "| target | msg/s | published msg/s | nacked | confirm p50 / p99 ms | end-to-end p50 / p99 ms | server CPU µs per message | … per delivery | peak RSS MiB | bench CPU µs/msg |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
        for r in rows.iter_mut().filter(|r| &r.scenario == scenario) {
            let Some(o) = r.outcome.as_mut() else {
                let _ = writeln!(
                    out,
                    "| {} | {} | | | | | | | | |",
                    r.target,
                    r.note.as_deref().unwrap_or("no result")
                );
                continue;
            };
            let (confirm, e2e, nacked) = (p50_p99(&mut o.confirm), p50_p99(&mut o.e2e), o.nacked);
            let cpu = r
                .cpu
                .iter()
                .map(|(label, s)| format!("{label} {}", num(r.per_message(*s), 1)))
                .collect::<Vec<_>>()
                .join(" · ");
            let per_delivery = r
                .cpu
                .iter()
                .map(|(label, s)| format!("{label} {}", num(r.per_delivery(*s), 1)))
                .collect::<Vec<_>>()
                .join(" · ");
            let rss = r
                .rss
                .iter()
                .map(|(label, m)| format!("{label} {m:.0}"))
                .collect::<Vec<_>>()
                .join(" · ");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.target,
                thousands(r.rate()),
                thousands(r.published_rate()),
                nacked,
                confirm,
                e2e,
                cpu,
                if r.per_delivery(1.0).is_some() {
                    per_delivery
                } else {
                    "–".into()
                },
                rss,
                num(r.per_message(r.bench_cpu), 1),
            );
        }
        for r in rows.iter().filter(|r| &r.scenario == scenario) {
            if let Some(o) = r.outcome.as_ref().filter(|o| !o.split.is_empty()) {
                let _ = writeln!(out, "\nDeliveries on {}:{}", r.target, split(o));
            }
        }
        let _ = writeln!(out);
    }
    scenarios.retain(|s| !is_first_delivery(s));
    if scenarios.is_empty() {
        return out;
    }
    let _ = writeln!(out, "### Ratios (msg/s through the scenario)\n");
    let _ = writeln!(out, "| scenario | gateway / RabbitMQ | gateway / direct RocketMQ | gateway / its null-upstream ceiling |");
    let _ = writeln!(out, "|---|---|---|---|");
    for scenario in &scenarios {
        let rate = |name: &str| {
            rows.iter()
                .find(|r| &r.scenario == scenario && r.target == name)
                .and_then(Row::rate)
        };
        let ratio = |other: &str| match (rate("gateway"), rate(other)) {
            (Some(g), Some(o)) if o > 0.0 => format!("{:.2}", g / o),
            _ => "–".into(),
        };
        let _ = writeln!(
            out,
            "| {scenario} | {} | {} | {} |",
            ratio("rabbitmq"),
            ratio("direct"),
            ratio("gateway-null")
        );
    }
    let gateway_rate = |scenario: &str| {
        rows.iter()
            .find(|r| r.scenario == scenario && r.target == "gateway")
            .and_then(Row::rate)
    };
    let (two, one) = (Scenario::TwoGateways.name(), Scenario::EndToEnd.name());
    if let (Some(two), Some(one)) = (gateway_rate(&two), gateway_rate(&one)) {
        if one > 0.0 {
            let _ = writeln!(
                out,
                "\nOne queue on two gateways delivers {:.2}× what one gateway delivers end to end.",
                two / one
            );
        }
    }
    out
}

/// " (gateway 1 N · gateway 2 M)" where a scenario compares consumers, else "".
pub fn split(outcome: &Outcome) -> String {
    if outcome.split.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = outcome
        .split
        .iter()
        .map(|(name, n)| format!("{name} {}", thousands(Some(*n as f64))))
        .collect();
    format!(" ({})", parts.join(" · "))
}

/// Scenario 5 measures latency only: its table has no msg/s or CPU per message.
fn is_first_delivery(scenario: &str) -> bool {
    scenario == Scenario::FirstDelivery.name()
}

/// "n" when every trial delivered, else "delivered of n".
fn trials(delivered: usize, run: u32) -> String {
    if delivered == run as usize {
        run.to_string()
    } else {
        format!("{delivered} of {run}")
    }
}

fn first_delivery_table(out: &mut String, rows: &mut [Row], scenario: &str) {
    let _ = writeln!(
        out,
        "| target | idle: publish → deliver p50 / p99 ms | idle: consume-ok → deliver p50 / p99 ms | idle trials | busy: consume-ok → deliver p50 / p99 ms | busy trials | busy publisher msg/s |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for r in rows.iter_mut().filter(|r| r.scenario == scenario) {
        let Some(f) = r.outcome.as_mut().and_then(|o| o.first.as_mut()) else {
            let _ = writeln!(
                out,
                "| {} | {} | | | | | |",
                r.target,
                r.note.as_deref().unwrap_or("no result")
            );
            continue;
        };
        let idle_publish = p50_p99(&mut f.idle_publish);
        let idle_consume = p50_p99(&mut f.idle_consume);
        let busy_consume = p50_p99(&mut f.busy_consume);
        let _ = writeln!(
            out,
            "| {} | {idle_publish} | {idle_consume} | {} | {busy_consume} | {} | {} |",
            r.target,
            trials(f.idle_consume.count(), f.idle_trials),
            trials(f.busy_consume.count(), f.busy_trials),
            thousands(Some(f.busy_rate)),
        );
    }
    let _ = writeln!(out);
}

const COLORS: [(&str, &str); 6] = [
    ("gateway", "#1f77b4"),
    ("gateway-null", "#9ecae1"),
    ("rabbitmq", "#ff7f0e"),
    ("direct", "#2ca02c"),
    ("direct-lmq", "#98df8a"),
    ("direct-pop", "#bcbd22"),
];

/// Grouped horizontal bars: msg/s per target, one group per scenario, each
/// group on its own scale (the longest bar of a group spans the width).
pub fn svg(rows: &[Row], title: &str) -> String {
    let mut scenarios: Vec<&str> = Vec::new();
    for r in rows {
        if !scenarios.contains(&r.scenario.as_str()) && !is_first_delivery(&r.scenario) {
            scenarios.push(&r.scenario);
        }
    }
    let (left, width, bar, gap) = (210.0, 560.0, 16.0, 18.0);
    let targets: Vec<&str> = COLORS.iter().map(|(t, _)| *t).collect();
    let group = bar * targets.len() as f64 + gap;
    let height = 70.0 + group * scenarios.len() as f64 + 30.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">"#,
        w = left + width + 120.0
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let mut x = 10.0;
    for (name, color) in COLORS {
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="34" width="12" height="12" fill="{color}"/><text x="{}" y="45">{name}</text>"#,
            x + 16.0
        );
        x += 24.0 + 8.0 * name.len() as f64;
    }
    let mut y = 64.0;
    for scenario in &scenarios {
        let best = rows
            .iter()
            .filter(|r| r.scenario == *scenario)
            .filter_map(Row::rate)
            .fold(0.0f64, f64::max);
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}" font-weight="bold">{}</text>"#,
            y + group / 2.0 - 4.0,
            escape(scenario)
        );
        for (i, target) in targets.iter().enumerate() {
            let by = y + i as f64 * bar;
            let rate = rows
                .iter()
                .find(|r| r.scenario == *scenario && r.target == *target)
                .and_then(Row::rate);
            let color = COLORS[i].1;
            match rate {
                Some(rate) if best > 0.0 => {
                    let w = (rate / best * width).max(1.0);
                    let _ = writeln!(
                        s,
                        r#"<rect x="{left}" y="{by}" width="{w:.1}" height="{}" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                        bar - 3.0,
                        left + w + 4.0,
                        by + bar - 5.0,
                        thousands(Some(rate))
                    );
                }
                _ => {
                    let _ = writeln!(
                        s,
                        r##"<text x="{left}" y="{:.1}" fill="#888">n/a</text>"##,
                        by + bar - 5.0
                    );
                }
            }
        }
        y += group;
    }
    let _ = writeln!(
        s,
        r##"<text x="10" y="{}" fill="#555">msg/s through each scenario (deliveries when there are consumers); each group has its own scale</text>"##,
        y + 12.0
    );
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(Some(1234567.4)), "1,234,567");
        assert_eq!(thousands(Some(999.0)), "999");
        assert_eq!(thousands(None), "–");
    }
}
