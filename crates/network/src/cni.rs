//! The CNI runtime side: ADD, DEL and CHECK through a plugin chain for one attachment, with
//! the cache that lets DEL replay what ADD used.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::attachment::Attachment;
use crate::cache::{self, Entry};
use crate::config::{self, plugin_type, NetworkConfig};
use crate::error::{Error, Result};
use crate::invoke::{self, Command, Env};
use crate::netns::{is_netns, Netns};
use crate::result::NetResult;

/// Where plugins, configurations and the attachment cache live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cni {
    /// Searched in order for plugin executables; also passed as CNI_PATH.
    pub bin_dirs: Vec<PathBuf>,
    /// Where [`Cni::load_conf_dir`] looks (`/etc/cni/net.d` for the CRI).
    pub conf_dir: PathBuf,
    /// The attachment cache. Keep it as persistent as the IPAM data (under wharf's root), so
    /// that a teardown after a reboot still releases addresses.
    pub cache_dir: PathBuf,
    /// How long one plugin may run before it is killed.
    pub timeout: Duration,
}

/// Plugin directories searched by default: the upstream location, then Debian's.
pub const DEFAULT_BIN_DIRS: [&str; 2] = ["/opt/cni/bin", "/usr/lib/cni"];

impl Cni {
    /// A runtime with the default plugin directories and a 60 s timeout per plugin.
    pub fn new(conf_dir: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> Cni {
        Cni {
            bin_dirs: DEFAULT_BIN_DIRS.iter().map(PathBuf::from).collect(),
            conf_dir: conf_dir.into(),
            cache_dir: cache_dir.into(),
            timeout: Duration::from_secs(60),
        }
    }

    /// The first configuration in `conf_dir` (`*.conf`, `*.conflist`, `*.json`, lexical order),
    /// as containerd's CRI picks it; `None` if there is none.
    pub fn load_conf_dir(&self) -> Result<Option<NetworkConfig>> {
        config::first_in_dir(&self.conf_dir)
    }

    /// Connects the attachment: brings `lo` up in the namespace, runs ADD through the chain
    /// (each plugin gets the previous one's result) and caches what was used. On failure the
    /// chain is rolled back with DEL and the error of the failing plugin is returned. An
    /// attachment that is already cached (set up, or interrupted by a crash) is AlreadyExists:
    /// tear it down first.
    ///
    /// ```no_run
    /// # async fn f() -> wharf_network::Result<()> {
    /// use wharf_network::{default_bridge, Attachment, Cni, Netns};
    /// let cni = Cni::new("/etc/cni/net.d", "/var/lib/wharf/cni/cache");
    /// let net = default_bridge("wharf", "wharf0", "10.88.0.0/16");
    /// let ns = Netns::create("/run/wharf/netns".as_ref(), "c1")?;
    /// let att = Attachment::new("c1", &ns.path);
    /// let result = cni.setup(&net, &att).await?;
    /// println!("{:?}", result.primary_ip("eth0"));
    /// cni.teardown(&net, &att).await?;
    /// ns.remove()?;
    /// # Ok(()) }
    /// ```
    pub async fn setup(&self, net: &NetworkConfig, att: &Attachment) -> Result<NetResult> {
        att.validate()?;
        net.validate()?;
        let started = Instant::now();
        let key = cache::path(&self.cache_dir, &net.name, &att.container_id, &att.ifname);
        let ns = Netns::open(&att.netns)?;
        let mut entry = Entry::new(
            net,
            &att.container_id,
            &att.ifname,
            &att.netns,
            &att.ports,
            &att.args,
        );
        let (k, e) = (key.clone(), entry.clone());
        if !blocking(move || cache::reserve(&k, &e)).await? {
            return Err(Error::AlreadyExists(format!(
                "network {} for {} ({})",
                net.name, att.container_id, att.ifname
            )));
        }

        // The entry is in place, so a teardown after a crash from here on finds it. Flushing it
        // to disk and bringing `lo` up (which no plugin touches) overlap with the chain: each
        // costs a pod start milliseconds when done in turn.
        let k = key.clone();
        let (synced, lo, chain) = tokio::join!(
            blocking(move || cache::sync(&k)),
            blocking(move || ns.loopback_up()),
            self.add_chain(net, att)
        );
        // The plugin's error first: it is the one that explains a failed ADD.
        let added = chain.and_then(|raw| lo.and(synced).map(|()| raw));
        let result = added.and_then(|raw| {
            NetResult::parse(raw).map_err(|reason| Error::InvalidResult {
                plugin: net
                    .plugin_types()
                    .last()
                    .copied()
                    .unwrap_or_default()
                    .to_string(),
                command: "ADD",
                reason,
            })
        });
        match result {
            Ok(result) => {
                entry.result = Some(result.raw.clone());
                blocking(move || cache::record_result(&key, &entry)).await?;
                tracing::debug!(
                    network = %net.name,
                    id = %att.container_id,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "CNI setup"
                );
                Ok(result)
            }
            Err(e) => {
                tracing::warn!(network = %net.name, id = %att.container_id, error = %e, "CNI ADD failed, rolling back");
                let netns = att.netns.display().to_string();
                let env = self.env(att, &netns, &att.args);
                if let Err(del) = self.del_chain(&env, net, None, att).await {
                    tracing::warn!(network = %net.name, id = %att.container_id, error = %del, "CNI rollback");
                }
                blocking(move || cache::remove(&key)).await?;
                Err(e)
            }
        }
    }

    async fn add_chain(&self, net: &NetworkConfig, att: &Attachment) -> Result<Value> {
        let netns = att.netns.display().to_string();
        let env = self.env(att, &netns, &att.args);
        let mut prev: Option<Value> = None;
        for plugin in &net.plugins {
            let conf = invoke::plugin_config(net, plugin, prev.as_ref(), &att.ports);
            let out = invoke::exec(&env, Command::Add, &conf).await?;
            prev = out;
        }
        prev.ok_or_else(|| Error::Internal("ADD chain gave no result".into()))
    }

    /// DEL through the chain in reverse order. Every plugin runs even if one fails; the first
    /// error is returned.
    async fn del_chain(
        &self,
        env: &Env<'_>,
        net: &NetworkConfig,
        prev: Option<&Value>,
        att: &Attachment,
    ) -> Result<()> {
        let mut first = None;
        for plugin in net.plugins.iter().rev() {
            let conf = invoke::plugin_config(net, plugin, prev, &att.ports);
            if let Err(e) = invoke::exec(env, Command::Del, &conf).await {
                tracing::warn!(plugin = plugin_type(plugin), id = %att.container_id, error = %e, "CNI DEL");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Disconnects the attachment: DEL in reverse order with the configuration, port mappings
    /// and result cached by [`Cni::setup`] (falling back to `net` and `att` when nothing is
    /// cached), then removes the cache entry. Idempotent, and fine when the namespace is
    /// already gone (CNI_NETNS is then left empty, as the spec allows for DEL). Call it before
    /// removing the namespace when possible: plugins clean up more with the namespace present.
    pub async fn teardown(&self, net: &NetworkConfig, att: &Attachment) -> Result<()> {
        att.validate()?;
        net.validate()?;
        let started = Instant::now();
        let key = cache::path(&self.cache_dir, &net.name, &att.container_id, &att.ifname);
        let cached = blocking({
            let key = key.clone();
            move || cache::read(&key)
        })
        .await
        .unwrap_or_else(|e| {
            // Only a power loss or a damaged disk leaves one; a teardown that failed on it
            // would never let the attachment go.
            tracing::warn!(id = %att.container_id, error = %e, "CNI cache entry unreadable, tearing down with the given configuration");
            None
        });
        let (net, att, prev) = match cached {
            Some(e) => {
                let netns = if att.netns.as_os_str().is_empty() {
                    PathBuf::from(&e.netns)
                } else {
                    att.netns.clone()
                };
                let att = Attachment {
                    container_id: att.container_id.clone(),
                    netns,
                    ifname: att.ifname.clone(),
                    ports: e.ports,
                    args: e.args,
                };
                (e.network, att, e.result)
            }
            None => (net.clone(), att.clone(), None),
        };
        let live = !att.netns.as_os_str().is_empty() && is_netns(&att.netns);
        let netns = if live {
            att.netns.display().to_string()
        } else {
            String::new()
        };
        let env = self.env(&att, &netns, &att.args);
        self.del_chain(&env, &net, prev.as_ref(), &att).await?;
        if !live {
            if let Some(result) = prev.and_then(|p| NetResult::parse(p).ok()) {
                crate::bridge::cleanup_stale_masq(&net, &att.container_id, &result).await;
            }
        }
        blocking(move || cache::remove(&key)).await?;
        tracing::debug!(
            network = %net.name,
            id = %att.container_id,
            netns_present = live,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "CNI teardown"
        );
        Ok(())
    }

    /// CHECK through the chain with the cached result: asks each plugin whether the
    /// attachment is still as it set it up. Needs CNI 0.4.0 or later; a network with
    /// `disableCheck` passes without running anything.
    pub async fn check(&self, net: &NetworkConfig, att: &Attachment) -> Result<()> {
        att.validate()?;
        net.validate()?;
        if !version_at_least(&net.cni_version, (0, 4, 0)) {
            return Err(Error::InvalidConfig(format!(
                "network {}: CHECK needs cniVersion 0.4.0 or later, not {}",
                net.name, net.cni_version
            )));
        }
        let key = cache::path(&self.cache_dir, &net.name, &att.container_id, &att.ifname);
        let prev = blocking(move || cache::read(&key))
            .await?
            .and_then(|e| e.result)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "network {} for {} ({})",
                    net.name, att.container_id, att.ifname
                ))
            })?;
        if net.disable_check {
            return Ok(());
        }
        Netns::open(&att.netns)?;
        let netns = att.netns.display().to_string();
        let env = self.env(att, &netns, &att.args);
        for plugin in &net.plugins {
            let conf = invoke::plugin_config(net, plugin, Some(&prev), &att.ports);
            invoke::exec(&env, Command::Check, &conf).await?;
        }
        Ok(())
    }

    /// The result cached for an attachment by [`Cni::setup`] (for status after a restart).
    pub fn cached_result(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<NetResult>> {
        crate::attachment::validate_id(container_id)?;
        if !config::valid_network_name(network) {
            return Err(Error::InvalidArgument(format!("network name {network:?}")));
        }
        let key = cache::path(&self.cache_dir, network, container_id, ifname);
        match cache::read(&key)?.and_then(|e| e.result) {
            Some(raw) => NetResult::parse(raw)
                .map(Some)
                .map_err(|e| Error::Internal(format!("CNI cache {}: {e}", key.display()))),
            None => Ok(None),
        }
    }

    fn env<'a>(
        &'a self,
        att: &'a Attachment,
        netns: &'a str,
        args: &'a [(String, String)],
    ) -> Env<'a> {
        Env {
            container_id: &att.container_id,
            netns,
            ifname: &att.ifname,
            args,
            bin_dirs: &self.bin_dirs,
            timeout: self.timeout,
        }
    }
}

/// Runs small blocking filesystem work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("blocking task: {e}")))?
}

/// Compares a `major.minor.patch` version with `min`; unparsable versions are too old.
fn version_at_least(v: &str, min: (u32, u32, u32)) -> bool {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    let mut next = || parts.next().flatten().unwrap_or(0);
    (next(), next(), next()) >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(version_at_least("1.0.0", (0, 4, 0)));
        assert!(version_at_least("0.4.0", (0, 4, 0)));
        assert!(!version_at_least("0.3.1", (0, 4, 0)));
        assert!(!version_at_least("x", (0, 4, 0)));
    }
}
