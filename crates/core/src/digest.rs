//! OCI content digests (`sha256:<64 lowercase hex>`), parsed once at the edge so that a digest can be
//! used in a path without further checks.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::{Error, Result};

/// A validated sha256 digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<hex>`; anything else is InvalidArgument.
    pub fn parse(s: &str) -> Result<Self> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(Error::InvalidArgument(format!(
                "invalid digest {s:?}: missing algorithm"
            )));
        };
        if alg != "sha256" {
            return Err(Error::InvalidArgument(format!(
                "invalid digest {s:?}: unsupported digest algorithm {alg:?}"
            )));
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(Error::InvalidArgument(format!(
                "invalid digest {s:?}: invalid checksum digest format"
            )));
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    /// The digest of a byte slice.
    pub fn of(data: &[u8]) -> Self {
        Digest {
            hex: hex::encode(Sha256::digest(data)),
        }
    }

    /// From a finished hasher.
    pub fn from_hasher(h: Sha256) -> Self {
        Digest {
            hex: hex::encode(h.finalize()),
        }
    }

    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// The hex part, safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Digest::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d = Digest::of(b"hello");
        assert_eq!(
            d.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        for bad in [
            "",
            "sha256",
            "sha256:abc",
            "md5:00",
            "sha256:../../etc/passwd",
            &d.to_string().to_uppercase(),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }
}
