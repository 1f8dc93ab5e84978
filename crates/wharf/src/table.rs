//! Output of listings: aligned tables, JSON, or a `{{.Field}}` template per row.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(c.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(c);
                } else {
                    let pad = widths[i].saturating_sub(c.chars().count()) + 3;
                    s.push_str(c);
                    s.extend(std::iter::repeat_n(' ', pad));
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(&self.header);
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

/// Prints `rows` per `--format`: `table` (default), `json` (one object per line, as docker), or
/// a template like `{{.Name}} {{.Status}}`.
pub fn output(
    format: Option<&str>,
    rows: &[BTreeMap<String, serde_json::Value>],
    table: Table,
) -> Result<()> {
    match format {
        None | Some("table") | Some("") => print!("{}", table.render()),
        Some("json") => {
            for r in rows {
                println!("{}", serde_json::to_string(r)?);
            }
        }
        Some(t) if t.contains("{{") => {
            for r in rows {
                println!("{}", template(t, r)?);
            }
        }
        Some(other) => {
            bail!("--format {other:?}: want table, json or a template like '{{{{.Name}}}}'")
        }
    }
    Ok(())
}

/// Fills `{{.Field}}` (and `{{json .Field}}`) placeholders.
pub fn template(t: &str, row: &BTreeMap<String, serde_json::Value>) -> Result<String> {
    let mut out = String::new();
    let mut rest = t;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            bail!("template {t:?}: unclosed {{{{");
        };
        let expr = after[..end].trim();
        let (json, field) = match expr.strip_prefix("json ") {
            Some(f) => (true, f.trim()),
            None => (false, expr),
        };
        let Some(name) = field.strip_prefix('.') else {
            bail!("template {t:?}: {expr:?} is not a field like .Name");
        };
        let Some(v) = row.get(name) else {
            let known: Vec<&str> = row.keys().map(String::as_str).collect();
            bail!(
                "template field .{name} unknown; fields: {}",
                known.join(", ")
            );
        };
        match (json, v) {
            (false, serde_json::Value::String(s)) => out.push_str(s),
            _ => out.push_str(&v.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out.replace("\\t", "\t").replace("\\n", "\n"))
}

pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[u]
    }
}

/// "3 minutes ago" for a unix time.
pub fn ago(secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(secs);
    let d = (now - secs).max(0);
    let (n, unit) = match d {
        0..=1 => return "Less than a second ago".into(),
        2..=59 => (d, "second"),
        60..=3599 => (d / 60, "minute"),
        3600..=86399 => (d / 3600, "hour"),
        _ => (d / 86400, "day"),
    };
    if n == 1 {
        format!(
            "About a{} {unit} ago",
            if unit == "hour" { "n" } else { "" }
        )
    } else {
        format!("{n} {unit}s ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_templates_fill() {
        let mut t = Table::new(&["NAME", "STATUS"]);
        t.row(vec!["web".into(), "Up".into()]);
        t.row(vec!["database".into(), "Exited (0)".into()]);
        assert_eq!(
            t.render(),
            "NAME       STATUS\nweb        Up\ndatabase   Exited (0)\n"
        );
        let row = BTreeMap::from([
            ("Name".to_string(), serde_json::json!("web")),
            ("Pid".to_string(), serde_json::json!(42)),
        ]);
        assert_eq!(template("{{.Name}}:{{.Pid}}", &row).unwrap(), "web:42");
        assert!(template("{{.Nope}}", &row).is_err());
        assert_eq!(human_size(1_234_567), "1.235MB");
        assert_eq!(human_size(999), "999B");
    }
}
