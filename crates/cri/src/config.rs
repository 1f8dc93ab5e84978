//! The `[cri]` section of wharfd's configuration. Unknown keys are errors, like the rest of it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// CRI settings (containerd's names where containerd has the same setting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The image of every pod's sandbox (pause) container. The default is wharf's built-in
    /// pause image, imported from wharfd itself: pods start with no registry.
    pub sandbox_image: String,
    /// Where CNI network configurations are looked for (`*.conf`, `*.conflist`, `*.json`).
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugin binaries are looked for, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Layers one PullImage fetches at once.
    pub max_concurrent_downloads: usize,
    /// Address of the streaming server (exec, attach, port-forward).
    pub stream_server_address: String,
    /// Port of the streaming server; "0" picks a free one.
    pub stream_server_port: String,
    /// Apply the SELinux labels of pod and container security contexts.
    pub enable_selinux: bool,
    /// Run containers without AppArmor profiles even where the kernel has AppArmor.
    pub disable_apparmor: bool,
    /// Leave the paths an image declares as volumes (`VOLUME`) in the container's rootfs
    /// instead of giving each one a directory of the container's own, seeded from the image.
    pub ignore_image_defined_volumes: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sandbox_image: crate::pause::builtin_name(),
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            max_concurrent_downloads: 3,
            stream_server_address: "127.0.0.1".into(),
            stream_server_port: "0".into(),
            enable_selinux: false,
            disable_apparmor: false,
            ignore_image_defined_volumes: false,
        }
    }
}
