//! The overlayfs backend: each snapshot is an upper dir (`fs`) plus a `work` dir; parents are
//! lower dirs. Layers are unpacked straight into a new snapshot's `fs` (see `diff`), so unpacking
//! never mounts the parent chain.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Backend, Kind, Mount};
use crate::error::IoContext;
use crate::Result;

#[derive(Debug, Default)]
pub struct Overlay;

impl Overlay {
    /// True when the kernel knows overlayfs.
    pub fn supported() -> bool {
        fs::read_to_string("/proc/filesystems")
            .map(|s| s.lines().any(|l| l.ends_with("\toverlay")))
            .unwrap_or(false)
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Backend for Overlay {
    fn create(&self, dir: &Path, _parents: &[PathBuf], kind: Kind) -> Result<()> {
        let fsd = dir.join("fs");
        fs::create_dir_all(&fsd).ctx(|| format!("create {}", fsd.display()))?;
        if kind == Kind::Active {
            let work = dir.join("work");
            fs::create_dir_all(&work).ctx(|| format!("create {}", work.display()))?;
        }
        Ok(())
    }

    fn mounts(&self, dir: &Path, parents: &[PathBuf], kind: Kind) -> Vec<Mount> {
        let ro = if kind == Kind::View { "ro" } else { "rw" };
        if parents.is_empty() {
            return vec![Mount {
                kind: "bind".into(),
                source: s(&dir.join("fs")),
                options: vec![ro.into(), "rbind".into()],
            }];
        }
        if kind == Kind::View && parents.len() == 1 {
            return vec![Mount {
                kind: "bind".into(),
                source: s(&parents[0]),
                options: vec!["ro".into(), "rbind".into()],
            }];
        }
        let lower = parents.iter().map(|p| s(p)).collect::<Vec<_>>().join(":");
        let mut options = vec!["index=off".to_string()];
        if kind == Kind::Active {
            options.push(format!("workdir={}", s(&dir.join("work"))));
            options.push(format!("upperdir={}", s(&dir.join("fs"))));
        }
        options.push(format!("lowerdir={lower}"));
        vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options,
        }]
    }

    fn apply_mode(&self) -> crate::diff::ApplyMode {
        crate::diff::ApplyMode::Overlay
    }
}
