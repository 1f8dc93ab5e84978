//! containerd's filter syntax for List calls and event subscriptions.
//!
//! A filter string is a comma-separated conjunction of selectors; several filter strings are a
//! disjunction. A selector is a field path (`name`, `labels."io.x/y"`, `labels.a`) optionally followed
//! by an operator (`==`, `!=`, `~=` regular expression) and a value (bare or quoted). A bare field path
//! matches when the field is present. An empty filter list matches everything.

use crate::{Error, Result};

/// Something whose fields can be filtered: returns the value at a field path, if present.
pub trait Adaptor {
    fn field(&self, path: &[String]) -> Option<String>;
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(regex_lite::Regex),
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// A parsed list of filters (OR of ANDs).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    any: Vec<Vec<Selector>>,
}

impl Filter {
    /// Parses filter strings; an empty list (or only empty strings) matches everything.
    pub fn parse<S: AsRef<str>>(filters: &[S]) -> Result<Self> {
        let mut any = Vec::new();
        for f in filters {
            let f = f.as_ref();
            if f.trim().is_empty() {
                continue;
            }
            any.push(parse_conjunction(f)?);
        }
        Ok(Filter { any })
    }

    pub fn is_empty(&self) -> bool {
        self.any.is_empty()
    }

    pub fn matches(&self, a: &dyn Adaptor) -> bool {
        self.any.is_empty()
            || self.any.iter().any(|all| {
                all.iter().all(|s| {
                    let v = a.field(&s.path);
                    match (&s.op, v) {
                        (Op::Present, v) => v.is_some(),
                        (Op::Equal(want), Some(v)) => &v == want,
                        (Op::NotEqual(want), Some(v)) => &v != want,
                        (Op::NotEqual(_), None) => true,
                        (Op::Matches(re), Some(v)) => re.is_match(&v),
                        _ => false,
                    }
                })
            })
    }
}

/// Looks up `labels.<key>` style paths in a label map: shared by every adaptor.
pub fn label_field(
    labels: &std::collections::BTreeMap<String, String>,
    path: &[String],
) -> Option<String> {
    if path.len() == 1 {
        // `labels` alone: present when there are any.
        return (!labels.is_empty()).then(String::new);
    }
    labels.get(&path[1..].join(".")).cloned()
}

struct Scanner<'a> {
    s: &'a [u8],
    pos: usize,
    input: &'a str,
}

impl<'a> Scanner<'a> {
    fn err(&self, msg: &str) -> Error {
        Error::InvalidArgument(format!(
            "filters: {msg} at position {} in {:?}",
            self.pos, self.input
        ))
    }

    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn starts_with(&self, t: &str) -> bool {
        self.s[self.pos..].starts_with(t.as_bytes())
    }

    fn quoted(&mut self, q: u8) -> Result<String> {
        self.pos += 1;
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.pos += 1;
            if c == b'\\' && q != b'/' {
                match self.peek() {
                    Some(n) => {
                        out.push(n);
                        self.pos += 1;
                    }
                    None => break,
                }
            } else if c == b'\\' && self.peek() == Some(b'/') {
                out.push(b'/');
                self.pos += 1;
            } else if c == q {
                return String::from_utf8(out).map_err(|_| self.err("invalid utf-8"));
            } else {
                out.push(c);
            }
        }
        Err(self.err("unterminated quoted string"))
    }

    fn field_component(&mut self) -> Result<String> {
        self.skip_ws();
        match self.peek() {
            Some(q @ (b'"' | b'`')) => self.quoted(q),
            _ => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'/' {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                if start == self.pos {
                    return Err(self.err("expected field name"));
                }
                Ok(self.input[start..self.pos].to_string())
            }
        }
    }

    /// A value; `/…/` quoting is only for regular expressions, so `topic==/tasks/exit` is bare.
    fn value(&mut self, regex: bool) -> Result<String> {
        self.skip_ws();
        match self.peek() {
            Some(q @ (b'"' | b'`')) => self.quoted(q),
            Some(b'/') if regex => self.quoted(b'/'),
            _ => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    if c == b',' || c.is_ascii_whitespace() {
                        break;
                    }
                    self.pos += 1;
                }
                if start == self.pos {
                    return Err(self.err("expected value"));
                }
                Ok(self.input[start..self.pos].to_string())
            }
        }
    }
}

fn parse_conjunction(input: &str) -> Result<Vec<Selector>> {
    let mut sc = Scanner {
        s: input.as_bytes(),
        pos: 0,
        input,
    };
    let mut out = Vec::new();
    loop {
        let mut path = vec![sc.field_component()?];
        while sc.peek() == Some(b'.') {
            sc.pos += 1;
            path.push(sc.field_component()?);
        }
        sc.skip_ws();
        let op = if sc.starts_with("==") {
            sc.pos += 2;
            Op::Equal(sc.value(false)?)
        } else if sc.starts_with("!=") {
            sc.pos += 2;
            Op::NotEqual(sc.value(false)?)
        } else if sc.starts_with("~=") {
            sc.pos += 2;
            let v = sc.value(true)?;
            Op::Matches(
                regex_lite::Regex::new(&v).map_err(|e| sc.err(&format!("bad regexp: {e}")))?,
            )
        } else {
            Op::Present
        };
        out.push(Selector { path, op });
        sc.skip_ws();
        match sc.peek() {
            None => break,
            Some(b',') => sc.pos += 1,
            Some(_) => return Err(sc.err("unexpected input")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Obj {
        name: String,
        labels: BTreeMap<String, String>,
    }
    impl Adaptor for Obj {
        fn field(&self, path: &[String]) -> Option<String> {
            match path.first().map(String::as_str) {
                Some("name") => Some(self.name.clone()),
                Some("labels") => label_field(&self.labels, path),
                _ => None,
            }
        }
    }

    fn obj() -> Obj {
        let mut labels = BTreeMap::new();
        labels.insert("io.x/y".to_string(), "v1".to_string());
        labels.insert("a".to_string(), "b".to_string());
        Obj {
            name: "docker.io/library/busybox:latest".into(),
            labels,
        }
    }

    fn m(f: &[&str]) -> bool {
        Filter::parse(f).unwrap().matches(&obj())
    }

    #[test]
    fn selectors() {
        assert!(m(&[]));
        assert!(m(&["name==docker.io/library/busybox:latest"]));
        assert!(!m(&["name==x"]));
        assert!(m(&["name!=x"]));
        assert!(m(&["name~=busybox"]));
        assert!(m(&[r#"labels."io.x/y"==v1"#]));
        assert!(m(&["labels.a"]));
        assert!(!m(&["labels.zz"]));
        assert!(m(&["labels.a==b,name~=^docker"]));
        assert!(!m(&["labels.a==c,name~=^docker"]));
        assert!(m(&["labels.a==c", "name~=box"]));
        assert!(m(&[r#"name=="docker.io/library/busybox:latest""#]));
    }

    #[test]
    fn errors() {
        for bad in ["==x", "name==", "name~=(", "name==a b", r#"labels."x"#] {
            assert!(Filter::parse(&[bad]).is_err(), "{bad}");
        }
    }
}
