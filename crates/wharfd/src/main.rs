//! wharfd: the wharf daemon. Serves containerd's gRPC API v1 on a unix socket (and containerd's
//! ttrpc event address for shims) over the stores of wharf-core.

mod check;
mod config;
mod config_text;
mod convert;
mod cri;
mod error;
mod events;
mod gc;
mod metrics;
mod namespace;
mod network;
mod restart;
mod server;
mod services;
mod socket;
mod streams;
mod ttrpc_events;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::{Config, DEFAULT_CONFIG};

/// wharfd: a containerd-compatible container runtime daemon.
#[derive(Parser, Debug)]
#[command(name = "wharfd", version = services::version::VERSION)]
struct Args {
    /// Root directory for persistent data.
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// State directory for runtime data.
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    /// Address (unix socket path) for the gRPC server.
    #[arg(short, long, global = true)]
    address: Option<PathBuf>,
    /// Path to the configuration file.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// Log level: trace, debug, info, warn, error.
    #[arg(short, long, global = true)]
    log_level: Option<String>,
    /// Without a command, wharfd serves.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print configurations.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the default configuration: every key, commented.
    Default,
    /// Print the effective configuration: flags, then the file, then the defaults.
    Dump,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("wharfd: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    if let Some(Command::Config(ConfigCommand::Default)) = args.command {
        print!("{}", config_text::default_text());
        return Ok(());
    }
    let explicit = args.config.is_some();
    let path = args.config.clone().unwrap_or_else(|| DEFAULT_CONFIG.into());
    let mut config = Config::load(&path, explicit)?;
    if let Some(r) = args.root {
        config.root = r;
    }
    if let Some(s) = args.state {
        config.state = s;
    }
    if let Some(a) = args.address {
        config.grpc.address = a;
    }
    if let Some(l) = args.log_level {
        config.log_level = l;
    }
    if let Some(Command::Config(ConfigCommand::Dump)) = args.command {
        print!("{}", config.dump()?);
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("invalid log level {:?}", config.log_level))?;
    use std::io::IsTerminal;
    // At trace level every gRPC call's span is logged when it closes, with its duration.
    let spans = if config.log_level.contains("trace") {
        tracing_subscriber::fmt::format::FmtSpan::CLOSE
    } else {
        tracing_subscriber::fmt::format::FmtSpan::NONE
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(spans)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    // One thread serves the API; blocking work (hashing, unpacking, fsync) goes to the blocking pool.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(64)
        .thread_keep_alive(std::time::Duration::from_secs(10))
        .build()
        .context("start runtime")?;
    rt.block_on(serve(config))
}

async fn serve(config: Config) -> Result<()> {
    let address = config.grpc.address.clone();
    let gid = config.grpc.gid;
    // Refuse early if another daemon serves here; bind the API socket last, so that a client that
    // can connect finds every service (and the ttrpc address) ready.
    socket::prepare(&address)?;
    let ttrpc_path = socket::ttrpc_path(&address);
    socket::prepare(&ttrpc_path)?;
    let daemon = server::Daemon::open(config, &ttrpc_path)?;
    metrics::start(&daemon).await?;
    let mut ttrpc = ttrpc_events::serve(&ttrpc_path, daemon.exchange.clone()).await?;
    socket::chmod(&ttrpc_path, gid)?;
    let publish_exit = |d: &server::Daemon, ns: &str, id: &str, pid: u32, status: u32| {
        let ev = wharf_api::events::TaskExit {
            container_id: id.to_string(),
            id: id.to_string(),
            pid,
            exit_status: status,
            exited_at: Some(std::time::SystemTime::now().into()),
        };
        events::publish(&d.exchange, ns, "/tasks/exit", &ev);
    };
    // A shim that crashes is cleaned up after at once and its task's exit published, as
    // containerd does; the task stays listed (STOPPED) until it is deleted.
    let mut deaths = daemon.runtime.watch_deaths();
    {
        let daemon = daemon.clone();
        tokio::spawn(async move {
            while let Some((ns, id)) = deaths.recv().await {
                if let Some(resp) = daemon.runtime.shim_died(&ns, &id).await {
                    publish_exit(&daemon, &ns, &id, resp.pid, resp.exit_status);
                }
            }
        });
    }
    // Shims that outlived a previous wharfd: reconnect, or clean up after the dead ones.
    for (ns, id, resp) in daemon.runtime.restore().await {
        publish_exit(&daemon, &ns, &id, resp.pid, resp.exit_status);
    }
    // Networks whose task is gone (wharfd died between setting one up and starting the shim,
    // or while deleting): release them.
    for (ns, id) in daemon.network.leftovers() {
        if daemon.runtime.get(&ns, &id).await.is_none() {
            daemon.network.release(&ns, &id).await;
        }
    }
    // Metadata against the disk, and what a crash left behind (logged; the usual leftovers are
    // repaired), before clients come.
    check::startup(&daemon).await;
    server::cleanup_tmp_mounts(&daemon.tmp_mounts);
    restart::spawn(daemon.clone());
    // CRI's exit handling, after its records are reconciled with the restored tasks.
    daemon.cri.run_background();
    // The CRI streaming server (exec, attach, port-forward). A bad address or a taken port
    // leaves those three RPCs answering Unavailable, not the whole daemon down.
    if let Err(e) = daemon.cri.start_streaming().await {
        tracing::error!(error = %e, "cri: streaming server not started");
    }
    let listener = socket::listen(&address, gid)?;
    tracing::info!(address = %address.display(), version = services::version::VERSION, "wharfd serving");
    // Start-up code (config, stores, restore) will not run again: give its pages back once the
    // first clients are served.
    wharf_core::memory::trim_soon(std::time::Duration::from_secs(2));

    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "install SIGTERM handler");
                    return std::future::pending().await;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
    };
    let result = server::router(daemon)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .context("grpc server");
    let _ = ttrpc.shutdown().await;
    let _ = std::fs::remove_file(&address);
    let _ = std::fs::remove_file(&ttrpc_path);
    result
}
