//! The native backend: each snapshot is a full copy of its parent (for kernels or filesystems
//! without overlayfs). Copies use `cp -a`, which keeps hard links, xattrs, devices and sparse files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Backend, Kind, Mount};
use crate::error::IoContext;
use crate::{Error, Result};

#[derive(Debug, Default)]
pub struct Native;

impl Backend for Native {
    fn create(&self, dir: &Path, parents: &[PathBuf], _kind: Kind) -> Result<()> {
        fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
        let fsd = dir.join("fs");
        match parents.first() {
            None => fs::create_dir(&fsd).ctx(|| format!("create {}", fsd.display()))?,
            Some(parent) => {
                let out = Command::new("cp")
                    .arg("-a")
                    .arg("--")
                    .arg(parent)
                    .arg(&fsd)
                    .output()
                    .ctx(|| "run cp -a".to_string())?;
                if !out.status.success() {
                    return Err(Error::Internal(format!(
                        "copy {} to {}: {}",
                        parent.display(),
                        fsd.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
            }
        }
        Ok(())
    }

    fn mounts(&self, dir: &Path, _parents: &[PathBuf], kind: Kind) -> Vec<Mount> {
        let ro = if kind == Kind::View { "ro" } else { "rw" };
        vec![Mount {
            kind: "bind".into(),
            source: dir.join("fs").to_string_lossy().into_owned(),
            options: vec![ro.into(), "rbind".into()],
        }]
    }

    fn apply_mode(&self) -> crate::diff::ApplyMode {
        crate::diff::ApplyMode::Native
    }
}
