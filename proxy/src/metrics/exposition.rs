//! Prometheus' text exposition format (version 0.0.4): a family's HELP and
//! TYPE lines, then its samples, label values escaped.

use std::fmt::{Display, Write};

#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family: `kind` is counter, gauge, histogram or untyped.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\n', " "));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family of one sample.
    pub fn single(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        self.family(name, kind, help).sample(name, labels, value)
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_families_have_help_and_type() {
        let mut e = Exposition::default();
        e.single(
            "rabbitmq_queue_messages",
            "gauge",
            "Sum of ready and unacknowledged messages",
            &[("vhost", "/"), ("queue", "a\"b\\c\nd")],
            7,
        );
        assert_eq!(
            e.finish(),
            "# HELP rabbitmq_queue_messages Sum of ready and unacknowledged messages\n\
             # TYPE rabbitmq_queue_messages gauge\n\
             rabbitmq_queue_messages{vhost=\"/\",queue=\"a\\\"b\\\\c\\nd\"} 7\n"
        );
    }
}
