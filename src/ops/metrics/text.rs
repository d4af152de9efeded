//! The Prometheus text exposition format, version 0.0.4: `# HELP` and
//! `# TYPE` once per family, then one line per series.
//!
//! Small enough to write by hand; see `mod.rs` for why there is no
//! metrics crate.

use std::fmt::{Display, Write as _};

use super::histogram::Histogram;

/// The `Content-Type` of a scrape.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A scrape being written.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

/// A metric family's type, as `# TYPE` names it.
#[derive(Debug, Clone, Copy)]
pub enum Type {
    Counter,
    Gauge,
    Histogram,
}

impl Text {
    pub fn new() -> Text {
        Text { out: String::with_capacity(16 * 1024) }
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Every series of
    /// the family must follow before the next family starts.
    pub fn family(&mut self, name: &str, kind: Type, help: &str) {
        let kind = match kind {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
        };
        // HELP escapes only backslash and line feed (0.0.4).
        let help = help.replace('\\', r"\\").replace('\n', r"\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One series: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// A histogram's series: cumulative `_bucket`s up to `+Inf`, `_sum`
    /// (seconds) and `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let snapshot = h.snapshot();
        let mut cumulative = 0;
        for (i, count) in snapshot.buckets.iter().enumerate() {
            cumulative += count;
            let le = h.bounds().get(i).map_or("+Inf", |b| b.1);
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", snapshot.sum_micros as f64 / 1e6);
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {cumulative}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let le = le.map(|le| ("le", le));
        for (i, (name, value)) in labels.iter().chain(le.iter()).enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(name);
            self.out.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => self.out.push_str(r"\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str(r"\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        self.out.push('}');
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::metrics::histogram::LATENCY;

    #[test]
    fn families_series_and_escaping() {
        let mut t = Text::new();
        t.family("olive_x_total", Type::Counter, "Things.\nMore \\ things.");
        t.sample("olive_x_total", &[], 3);
        t.sample("olive_x_total", &[("route", "/a\"b\\c\nd"), ("status", "2xx")], 1);
        assert_eq!(
            t.finish(),
            "# HELP olive_x_total Things.\\nMore \\\\ things.\n# TYPE olive_x_total counter\n\
             olive_x_total 3\n\
             olive_x_total{route=\"/a\\\"b\\\\c\\nd\",status=\"2xx\"} 1\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_inf_equal_to_count() {
        let h = Histogram::new(LATENCY);
        h.observe_micros(1_000); // 0.001 s: the first bucket (le 0.005)
        h.observe_micros(5_000); // exactly on a bound counts in it
        h.observe_micros(20_000_000); // past the last bound: +Inf only
        let mut t = Text::new();
        t.histogram("olive_h_seconds", &[("upstream", "u")], &h);
        let text = t.finish();
        assert!(text.starts_with("olive_h_seconds_bucket{upstream=\"u\",le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("olive_h_seconds_bucket{upstream=\"u\",le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("olive_h_seconds_bucket{upstream=\"u\",le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("olive_h_seconds_sum{upstream=\"u\"} 20.006\n"), "{text}");
        assert!(text.ends_with("olive_h_seconds_count{upstream=\"u\"} 3\n"), "{text}");
    }
}
