//! Prometheus' text exposition format 0.0.4: `# HELP` and `# TYPE` per family, then one line
//! per sample, label values escaped.

use std::fmt::Write;

/// The Content-Type of a scrape.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Metric types as the format names them.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

/// Writes families one after the other; a family's samples follow its [`Encoder::family`].
#[derive(Default)]
pub struct Encoder {
    out: String,
}

impl Encoder {
    /// Starts a family: its help text and type.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&number(value));
        self.out.push('\n');
    }

    /// A histogram's samples: cumulative `_bucket`s (`le`), then `_sum` and `_count`.
    /// `counts[i]` counts the observations in bucket `i` alone (not cumulative).
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
        count: u64,
    ) {
        let les: Vec<String> = bounds.iter().map(|b| number(*b)).collect();
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        let mut cumulative = 0;
        let bucket = format!("{name}_bucket");
        for (le, c) in les.iter().zip(counts) {
            cumulative += c;
            with_le.push(("le", le));
            self.sample(&bucket, &with_le, cumulative as f64);
            with_le.pop();
        }
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, count as f64);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A sample value: integers without a fraction, infinities as the format spells them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_families_labels_and_histograms() {
        let mut e = Encoder::default();
        e.family("x_total", Kind::Counter, "Things.\nMore");
        e.sample("x_total", &[("a", "q\"\\\n")], 3.0);
        e.family("h", Kind::Histogram, "Latency.");
        e.histogram("h", &[("m", "/a")], &[0.1, 1.0], &[2, 1], 0.75, 4);
        e.sample("g", &[], 0.5);
        assert_eq!(
            e.finish(),
            "# HELP x_total Things.\\nMore\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"\\\\\\n\"} 3\n\
             # HELP h Latency.\n# TYPE h histogram\n\
             h_bucket{m=\"/a\",le=\"0.1\"} 2\nh_bucket{m=\"/a\",le=\"1\"} 3\n\
             h_bucket{m=\"/a\",le=\"+Inf\"} 4\nh_sum{m=\"/a\"} 0.75\nh_count{m=\"/a\"} 4\n\
             g 0.5\n"
        );
    }
}
