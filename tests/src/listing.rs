//! Reference listings of a root filesystem: computed from image layers in memory (applying OCI
//! whiteout rules independently of wharf's code) and read from a real directory, so a test can
//! compare what wharf unpacked with what it should have.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

use crate::images::{sha256, Entry};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { sha256: String, size: u64 },
    Symlink { target: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (0 for symlinks).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Paths sharing this node's inode (hard links), sorted, including itself; empty if none.
    pub links: Vec<String>,
}

pub type Listing = BTreeMap<String, Node>;

fn norm(p: &str) -> String {
    p.trim_start_matches("./").trim_matches('/').to_string()
}

fn remove_tree(l: &mut Listing, p: &str) {
    let prefix = format!("{p}/");
    l.retain(|k, _| k != p && !k.starts_with(&prefix));
}

/// Applies layers in order with OCI semantics: `.wh.x` removes x, `.wh..wh..opq` empties its
/// directory of what lower layers put there; hard links share a group.
pub fn expected(layers: &[Vec<Entry>]) -> Listing {
    let mut l = Listing::new();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new(); // target -> links
    for layer in layers {
        let mut this_layer: Vec<String> = Vec::new();
        for e in layer {
            let path = match e {
                Entry::Dir { path, .. }
                | Entry::File { path, .. }
                | Entry::Symlink { path, .. }
                | Entry::Hardlink { path, .. } => norm(path),
                _ => continue,
            };
            let (parent, name) = match path.rsplit_once('/') {
                Some((p, n)) => (p.to_string(), n.to_string()),
                None => (String::new(), path.clone()),
            };
            if name == ".wh..wh..opq" {
                let prefix = if parent.is_empty() {
                    String::new()
                } else {
                    format!("{parent}/")
                };
                let keep: Vec<String> = this_layer.clone();
                l.retain(|k, _| !k.starts_with(&prefix) || k == &parent || keep.contains(k));
                continue;
            }
            if let Some(victim) = name.strip_prefix(".wh.") {
                let v = if parent.is_empty() {
                    victim.to_string()
                } else {
                    format!("{parent}/{victim}")
                };
                remove_tree(&mut l, &v);
                continue;
            }
            this_layer.push(path.clone());
            let node = match e {
                Entry::Dir { mode, uid, gid, .. } => Node {
                    kind: Kind::Dir,
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                    links: vec![],
                },
                Entry::File {
                    mode,
                    uid,
                    gid,
                    data,
                    ..
                } => {
                    remove_tree(&mut l, &path);
                    Node {
                        kind: Kind::File {
                            sha256: sha256(data),
                            size: data.len() as u64,
                        },
                        mode: *mode,
                        uid: *uid,
                        gid: *gid,
                        links: vec![],
                    }
                }
                Entry::Symlink { target, .. } => {
                    remove_tree(&mut l, &path);
                    Node {
                        kind: Kind::Symlink {
                            target: target.clone(),
                        },
                        mode: 0,
                        uid: 0,
                        gid: 0,
                        links: vec![],
                    }
                }
                Entry::Hardlink { target, .. } => {
                    let t = norm(target);
                    let Some(n) = l.get(&t).cloned() else {
                        continue;
                    };
                    groups.entry(t.clone()).or_default().push(path.clone());
                    n
                }
                _ => continue,
            };
            l.insert(path, node);
        }
    }
    for (target, links) in groups {
        let mut all: Vec<String> = links
            .into_iter()
            .chain([target])
            .filter(|p| l.contains_key(p))
            .collect();
        all.sort();
        if all.len() > 1 {
            for p in &all {
                if let Some(n) = l.get_mut(p) {
                    n.links = all.clone();
                }
            }
        }
    }
    l
}

/// The listing of a directory on disk.
pub fn read_dir_tree(root: &Path) -> Result<Listing> {
    let mut l = Listing::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let e = e?;
            let p = e.path();
            let rel = p.strip_prefix(root)?.to_string_lossy().to_string();
            let md = std::fs::symlink_metadata(&p)?;
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                Kind::Dir
            } else if ft.is_symlink() {
                Kind::Symlink {
                    target: std::fs::read_link(&p)?.to_string_lossy().to_string(),
                }
            } else {
                let data = std::fs::read(&p)?;
                if md.nlink() > 1 {
                    inodes
                        .entry((md.dev(), md.ino()))
                        .or_default()
                        .push(rel.clone());
                }
                Kind::File {
                    sha256: sha256(&data),
                    size: data.len() as u64,
                }
            };
            let mode = if ft.is_symlink() {
                0
            } else {
                md.permissions().mode() & 0o7777
            };
            l.insert(
                rel,
                Node {
                    kind,
                    mode,
                    uid: md.uid() as u64,
                    gid: md.gid() as u64,
                    links: vec![],
                },
            );
        }
    }
    for (_, mut paths) in inodes {
        paths.sort();
        if paths.len() > 1 {
            for p in &paths {
                if let Some(n) = l.get_mut(p) {
                    n.links = paths.clone();
                }
            }
        }
    }
    Ok(l)
}

/// Differences between two listings, one line each (empty when equal).
pub fn diff(want: &Listing, got: &Listing) -> Vec<String> {
    let mut out = Vec::new();
    for (k, w) in want {
        match got.get(k) {
            None => out.push(format!("missing: {k} {w:?}")),
            Some(g) if g != w => out.push(format!("differs: {k}\n   want {w:?}\n   got  {g:?}")),
            _ => {}
        }
    }
    for k in got.keys() {
        if !want.contains_key(k) {
            out.push(format!("unexpected: {k} {:?}", got[k]));
        }
    }
    out
}
