//! wharf: the friendly command line of the wharf runtime. It talks to wharfd over containerd's
//! API only, like any containerd client; it builds OCI specs itself with wharf-core's spec module
//! (as nerdctl does) and leaves networking, logs and restarts to wharfd and the shim.

mod attach;
mod check;
mod client;
mod containers;
mod cp;
mod events;
mod exec;
mod images;
mod logs;
mod progress;
mod run;
mod stats;
mod stream;
mod system;
mod table;
mod volumes;

use std::path::PathBuf;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

use client::Client;

#[derive(Parser)]
#[command(name = "wharf", version, about = "A friendly front end to wharfd")]
struct Cli {
    /// wharfd's socket.
    #[arg(
        long,
        global = true,
        env = "WHARF_ADDRESS",
        default_value = "/run/wharf/wharfd.sock"
    )]
    address: String,
    /// Namespace to work in.
    #[arg(
        short,
        long,
        global = true,
        env = "WHARF_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    /// Where the CLI keeps container logs.
    #[arg(
        long,
        global = true,
        env = "WHARF_DATA_ROOT",
        default_value = "/var/lib/wharf-cli"
    )]
    data_root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pull an image from a registry (wharfd fetches and unpacks it).
    Pull {
        reference: String,
        /// Platform to unpack, e.g. linux/arm64 (default: this host's).
        #[arg(long)]
        platform: Option<String>,
        #[arg(long, default_value = "overlayfs")]
        snapshotter: String,
        /// Directory of `<host>/hosts.toml` files (default: wharfd's [registry] config_path).
        #[arg(long)]
        hosts_dir: Option<String>,
        /// No progress output.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Push an image to a registry (under its own name, or DESTINATION).
    Push {
        image: String,
        destination: Option<String>,
        #[arg(long)]
        hosts_dir: Option<String>,
    },
    /// Write images to a tarball (OCI layout with docker's manifest.json), made by wharfd.
    Save {
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Load images from a tarball (OCI layout or docker save, plain, gzip or zstd).
    Load {
        /// Read from this file instead of stdin.
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Do not list the loaded images.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List images.
    Images {
        /// Names only.
        #[arg(short, long)]
        quiet: bool,
        /// table, json, or a template like '{{.Name}}'.
        #[arg(long)]
        format: Option<String>,
    },
    /// Remove images.
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
        /// Remove even if a container uses it.
        #[arg(short, long)]
        force: bool,
    },
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Create a container and start it.
    Run(run::RunArgs),
    /// Create a container without starting it.
    Create(run::RunArgs),
    /// Start stopped or created containers.
    Start {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop containers: SIGTERM, then SIGKILL after the timeout.
    Stop {
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop and start containers.
    Restart {
        #[arg(short, long, default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers.
    Kill {
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill running containers first.
        #[arg(short, long)]
        force: bool,
        /// Remove the containers' anonymous volumes too.
        #[arg(short, long)]
        volumes: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers.
    Ps {
        /// Also stopped and created ones.
        #[arg(short, long)]
        all: bool,
        /// Names only.
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        format: Option<String>,
    },
    /// Show a container's output.
    Logs {
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, alias = "n")]
        tail: Option<String>,
        /// Only lines since a time (RFC 3339, unix time, or a duration like 10m).
        #[arg(long)]
        since: Option<String>,
        #[arg(short, long)]
        timestamps: bool,
        container: String,
    },
    /// Run a command in a running container.
    Exec(exec::ExecArgs),
    /// Containers as JSON.
    Inspect {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Processes of a container.
    Top { container: String },
    /// Copy files between a running container and the host (CONTAINER:PATH on one side).
    Cp { src: String, dest: String },
    /// Live CPU, memory and pids of running containers.
    Stats {
        /// One sample, then exit.
        #[arg(long)]
        no_stream: bool,
        containers: Vec<String>,
    },
    /// Events from wharfd.
    Events {
        /// containerd filters, e.g. 'topic~="/tasks/"'.
        #[arg(long)]
        filter: Vec<String>,
        #[arg(long)]
        format: Option<String>,
    },
    /// Volumes.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Namespaces.
    #[command(subcommand, alias = "ns")]
    Namespace(NamespaceCmd),
    /// About wharfd and this host.
    #[command(subcommand)]
    System(SystemCmd),
    /// Client and daemon versions.
    Version,
    /// Print shell completions (bash, zsh, fish).
    Completion { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum NamespaceCmd {
    #[command(alias = "list")]
    Ls,
    Create {
        name: String,
    },
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum VolumeCmd {
    /// Make a volume (a random name without NAME); an existing one is fine.
    Create {
        name: Option<String>,
        /// KEY=VALUE
        #[arg(long)]
        label: Vec<String>,
    },
    #[command(alias = "list")]
    Ls {
        /// Names only.
        #[arg(short, long)]
        quiet: bool,
        /// table, json or a template like '{{.Name}}'.
        #[arg(long)]
        format: Option<String>,
    },
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes that no container uses.
    #[command(alias = "remove")]
    Rm {
        /// A missing volume is no error.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unused anonymous volumes (with -a, every unused volume).
    Prune {
        #[arg(short, long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum SystemCmd {
    Info,
    Df,
    /// Remove stopped containers (and with -a unused images).
    Prune {
        #[arg(short, long)]
        all: bool,
    },
    /// Check wharfd's stores against the disk: one line per finding, then a summary; exits 1
    /// while findings remain.
    Check {
        /// Re-hash every blob (else presence and size only).
        #[arg(long)]
        deep: bool,
        /// Fix what is safe: orphan snapshot dirs, stale mounts, bundles, cgroups and ingests,
        /// records of missing blobs. Corrupt blobs are only reported.
        #[arg(long)]
        repair: bool,
    },
}

async fn dispatch(cli: Cli) -> Result<u8> {
    if let Command::Completion { shell } = &cli.command {
        clap_complete::generate(*shell, &mut Cli::command(), "wharf", &mut std::io::stdout());
        return Ok(0);
    }
    // Flags are checked before the daemon is reached, so bad input fails the same either way.
    if let Command::Run(a) | Command::Create(a) = &cli.command {
        run::validate(a)?;
    }
    let c = Client::connect(&cli.address, &cli.namespace).await?;
    let root = cli.data_root.as_path();
    match cli.command {
        Command::Pull {
            reference,
            platform,
            snapshotter,
            hosts_dir,
            quiet,
        } => {
            images::pull(
                &c,
                &reference,
                platform.as_deref(),
                &snapshotter,
                hosts_dir,
                quiet,
            )
            .await?
        }
        Command::Push {
            image,
            destination,
            hosts_dir,
        } => images::push(&c, &image, destination, hosts_dir).await?,
        Command::Save {
            output,
            images: names,
        } => images::save(&c, &names, output.as_deref()).await?,
        Command::Load { input, quiet } => images::load(&c, input.as_deref(), quiet).await?,
        Command::Images { quiet, format } => images::list(&c, quiet, format.as_deref()).await?,
        Command::Rmi {
            images: names,
            force,
        } => images::remove(&c, &names, force).await?,
        Command::Tag { source, target } => images::tag(&c, &source, &target).await?,
        Command::Run(a) => return run::run(&c, &a, root).await,
        Command::Create(a) => println!("{}", run::create(&c, &a, root).await?),
        Command::Start { containers: ids } => {
            for id in ids {
                containers::start(&c, &id).await?;
                println!("{id}");
            }
        }
        Command::Stop {
            time,
            containers: ids,
        } => {
            for id in ids {
                containers::stop(&c, &id, time).await?;
                println!("{id}");
            }
        }
        Command::Restart {
            time,
            containers: ids,
        } => {
            for id in ids {
                containers::stop(&c, &id, time).await?;
                containers::start(&c, &id).await?;
                println!("{id}");
            }
        }
        Command::Kill {
            signal,
            containers: ids,
        } => {
            for id in ids {
                containers::kill(&c, &id, &signal).await?;
                println!("{id}");
            }
        }
        Command::Rm {
            force,
            volumes,
            containers: ids,
        } => {
            let mut failed = false;
            for id in ids {
                match containers::remove(&c, &id, force, volumes, root).await {
                    Ok(()) => println!("{id}"),
                    Err(e) => {
                        eprintln!("wharf: {e:#}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(1);
            }
        }
        Command::Ps { all, quiet, format } => {
            containers::ps(&c, all, quiet, format.as_deref()).await?
        }
        Command::Logs {
            follow,
            tail,
            since,
            timestamps,
            container,
        } => {
            let tail = match tail.as_deref() {
                None | Some("all") => None,
                Some(n) => Some(
                    n.parse()
                        .map_err(|_| anyhow::anyhow!("--tail {n:?}: want a number or all"))?,
                ),
            };
            let since = since.as_deref().map(logs::parse_since).transpose()?;
            logs::logs(
                &c,
                &container,
                logs::Options {
                    follow,
                    tail,
                    since,
                    timestamps,
                },
            )
            .await?
        }
        Command::Exec(a) => return exec::exec(&c, &a).await,
        Command::Inspect { containers: ids } => containers::inspect(&c, &ids).await?,
        Command::Top { container } => containers::top(&c, &container).await?,
        Command::Cp { src, dest } => cp::cp(&c, &src, &dest).await?,
        Command::Stats {
            no_stream,
            containers: ids,
        } => stats::stats(&c, ids, no_stream).await?,
        Command::Events { filter, format } => system::events(&c, filter, format.as_deref()).await?,
        Command::Volume(VolumeCmd::Create { name, label }) => {
            volumes::create(&c, root, name.as_deref(), &label).await?
        }
        Command::Volume(VolumeCmd::Ls { quiet, format }) => {
            volumes::ls(&c, root, quiet, format.as_deref()).await?
        }
        Command::Volume(VolumeCmd::Inspect { names }) => volumes::inspect(&c, root, &names).await?,
        Command::Volume(VolumeCmd::Rm { force, names }) => {
            volumes::rm(&c, root, &names, force).await?
        }
        Command::Volume(VolumeCmd::Prune { all }) => volumes::prune(&c, root, all).await?,
        Command::Namespace(NamespaceCmd::Ls) => system::namespaces_ls(&c).await?,
        Command::Namespace(NamespaceCmd::Create { name }) => {
            system::namespaces_create(&c, &name).await?
        }
        Command::Namespace(NamespaceCmd::Rm { names }) => system::namespaces_rm(&c, &names).await?,
        Command::System(SystemCmd::Info) => system::info(&c).await?,
        Command::System(SystemCmd::Df) => system::df(&c, root).await?,
        Command::System(SystemCmd::Prune { all }) => system::prune(&c, all, root).await?,
        Command::System(SystemCmd::Check { deep, repair }) => {
            return check::check(&c, deep, repair).await
        }
        Command::Version => system::version(&c).await?,
        Command::Completion { .. } => {}
    }
    Ok(0)
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors are one line plus a hint, 125.
            if !e.use_stderr() {
                let _ = e.print();
                return std::process::ExitCode::SUCCESS;
            }
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid usage");
            eprintln!("wharf: {}", first.trim_start_matches("error: "));
            eprintln!("See 'wharf --help'.");
            return std::process::ExitCode::from(125);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wharf: {e}");
            return std::process::ExitCode::from(125);
        }
    };
    let result = rt.block_on(dispatch(cli));
    // A stdin copier may sit in a blocking read of our terminal: do not wait for it.
    rt.shutdown_background();
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("wharf: {e:#}");
            // docker's convention: 125 when the daemon or the request failed; 126/127 when the
            // container's command cannot be run or is not found.
            let code = e
                .downcast_ref::<run::ExitCode>()
                .map(|c| c.0)
                .unwrap_or(125);
            std::process::ExitCode::from(code)
        }
    }
}
