//! containerd's identifier rules: `[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*`, at most 76 characters.
//! Every id that ends up in a path or a key is validated with [`validate`] at the edge.

use crate::{Error, Result};

/// Longest identifier containerd accepts.
pub const MAX_LENGTH: usize = 76;

/// Validates an identifier (namespace, container id, lease id…) with containerd's rules.
pub fn validate(s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::InvalidArgument(
            "identifier must not be empty".into(),
        ));
    }
    if s.len() > MAX_LENGTH {
        return Err(Error::InvalidArgument(format!(
            "identifier {s:?} greater than maximum length ({MAX_LENGTH} characters)"
        )));
    }
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    let sep = |c: u8| c == b'.' || c == b'_' || c == b'-';
    let ok = alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter().all(|&c| alnum(c) || sep(c))
        && !b.windows(2).any(|w| sep(w[0]) && sep(w[1]));
    if !ok {
        return Err(Error::InvalidArgument(format!(
            "identifier {s:?} must match [A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_containerd_identifiers() {
        for ok in [
            "default",
            "k8s.io",
            "a",
            "a-b_c.d",
            "A1",
            "x".repeat(76).as_str(),
        ] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_identifiers() {
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "a/b",
            "../x",
            "a b",
            "é",
            "x".repeat(77).as_str(),
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}
