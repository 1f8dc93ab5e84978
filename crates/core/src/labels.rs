//! Labels on container records that the `wharf` CLI writes and wharfd acts on (networking,
//! logs, restarts). Keeping them here lets both sides agree on one spelling.

/// Network mode: `bridge` (wharf's default CNI network), `host` or `none`.
pub const NETWORK: &str = "io.wharf.network";
/// Port mappings, JSON: `[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":""}]`.
pub const PORTS: &str = "io.wharf.ports";
/// The container's hostname (for the /etc/hosts wharfd writes).
pub const HOSTNAME: &str = "io.wharf.hostname";
/// Extra /etc/hosts entries, JSON: `[["name","ip"], …]`.
pub const EXTRA_HOSTS: &str = "io.wharf.extra-hosts";
/// DNS servers for resolv.conf, JSON list of strings.
pub const DNS: &str = "io.wharf.dns";
/// The IP address wharfd's network gave the running task (written by wharfd).
pub const IP: &str = "io.wharf.ip";
/// The stdio URI of the container's log, used for every task of the container.
pub const LOG_URI: &str = "io.wharf.log-uri";
/// The command line shown by `wharf ps`.
pub const COMMAND: &str = "io.wharf.command";
/// Exit code and time (RFC 3339) of the last task, kept when the task is deleted.
pub const EXIT_CODE: &str = "io.wharf.exit-code";
pub const EXITED_AT: &str = "io.wharf.exited-at";

/// containerd's restart-manager labels: the desired state (`running`|`stopped`), the policy
/// (`always`, `on-failure[:N]`, `unless-stopped`), and the log URI to recreate tasks with.
pub const RESTART_STATUS: &str = "containerd.io/restart.status";
pub const RESTART_POLICY: &str = "containerd.io/restart.policy";
pub const RESTART_LOGURI: &str = "containerd.io/restart.loguri";
/// How many times wharfd restarted the container (for `on-failure:N`).
pub const RESTART_COUNT: &str = "io.wharf.restart-count";

/// `true`: wharfd deletes the container (task, record, snapshot) when its task exits, for
/// `wharf run -d --rm`.
pub const AUTO_REMOVE: &str = "io.wharf.auto-remove";

/// The `wharf` CLI's volumes a container mounts, JSON list of names (named and anonymous):
/// a volume in use cannot be removed.
pub const VOLUMES: &str = "io.wharf.volumes";
/// Those of them made for this container alone (`-v /path`, an image's `VOLUME`), removed with
/// it by `wharf rm -v` and `wharf run --rm`.
pub const ANONYMOUS_VOLUMES: &str = "io.wharf.anonymous-volumes";
