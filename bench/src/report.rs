//! A scenario's results: printed as an aligned table for people, then as one
//! JSON line (the last line on stdout) for scripts.
//!
//! JSON is written by hand: the values are numbers and short strings, and it
//! keeps `serde_json` out of the binary's dependencies.

use std::fmt::Write as _;

use crate::hist::Histogram;

/// One result value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A count.
    Int(u64),
    /// A rate or a latency, printed with the given decimals.
    Float(f64, usize),
    /// A word or a note.
    Text(String),
}

/// The named results of one run, in the order they were added.
pub struct Report {
    rows: Vec<(String, Value)>,
}

impl Report {
    /// A report whose first field is `"scenario": name`.
    pub fn new(name: &str) -> Report {
        Report {
            rows: vec![("scenario".into(), Value::Text(name.into()))],
        }
    }

    /// Adds a count.
    pub fn int(&mut self, key: &str, v: u64) -> &mut Self {
        self.rows.push((key.into(), Value::Int(v)));
        self
    }

    /// Adds a float with `decimals` digits.
    pub fn float(&mut self, key: &str, v: f64, decimals: usize) -> &mut Self {
        self.rows.push((key.into(), Value::Float(v, decimals)));
        self
    }

    /// Adds a string.
    pub fn text(&mut self, key: &str, v: &str) -> &mut Self {
        self.rows.push((key.into(), Value::Text(v.into())));
        self
    }

    /// Adds `<prefix>_samples`, `_p50_us`, `_p99_us`, `_p999_us` and `_max_us` from a histogram of ns.
    pub fn latency(&mut self, prefix: &str, h: &Histogram) -> &mut Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        self.int(&format!("{prefix}_samples"), h.len());
        self.float(&format!("{prefix}_p50_us"), us(h.value_at_quantile(0.50)), 1);
        self.float(&format!("{prefix}_p99_us"), us(h.value_at_quantile(0.99)), 1);
        self.float(&format!("{prefix}_p999_us"), us(h.value_at_quantile(0.999)), 1);
        self.float(&format!("{prefix}_max_us"), us(h.max()), 1)
    }

    /// The aligned human-readable table.
    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut s = String::new();
        for (k, v) in &self.rows {
            let _ = writeln!(s, "  {k:<width$}  {}", human(v));
        }
        s
    }

    /// The single-line JSON object.
    pub fn json(&self) -> String {
        let mut s = String::from("{");
        for (i, (k, v)) in self.rows.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            json_str(&mut s, k);
            s.push(':');
            match v {
                Value::Int(n) => {
                    let _ = write!(s, "{n}");
                }
                Value::Float(f, d) if f.is_finite() => {
                    let _ = write!(s, "{f:.d$}");
                }
                Value::Float(..) => s.push_str("null"),
                Value::Text(t) => json_str(&mut s, t),
            }
        }
        s.push('}');
        s
    }

    /// Prints the table, then the JSON line, to stdout.
    pub fn print(&self) {
        print!("{}", self.table());
        println!("{}", self.json());
    }
}

fn human(v: &Value) -> String {
    match v {
        Value::Int(n) => group(&n.to_string()),
        Value::Float(f, d) => {
            let s = format!("{f:.d$}");
            match s.split_once('.') {
                Some((int, frac)) => format!("{}.{frac}", group(int)),
                None => group(&s),
            }
        }
        Value::Text(t) => t.clone(),
    }
}

/// `1234567` → `1 234 567`, easier to read at a glance in the table.
fn group(digits: &str) -> String {
    let (sign, digits) = digits.strip_prefix('-').map_or(("", digits), |d| ("-", d));
    let mut out = String::from(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn json_str(s: &mut String, t: &str) {
    s.push('"');
    for c in t.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_one_line_and_escaped() {
        let mut r = Report::new("fanout");
        r.int("n", 1_234_567)
            .float("rate", 2.5, 1)
            .text("note", "a \"b\"\n")
            .float("nan", f64::NAN, 1);
        assert_eq!(
            r.json(),
            r#"{"scenario":"fanout","n":1234567,"rate":2.5,"note":"a \"b\"\u000a","nan":null}"#
        );
        assert!(r.table().contains("1 234 567"));
    }
}
