//! wharf: the command line of the wharf runtime. It talks to wharfd over containerd's API only,
//! like any containerd client. This first cut covers images (pull, push, ls) through the Transfer
//! service; the run/ps/logs side comes with the CLI issue.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use containerd_client::services::v1 as pb;
use containerd_client::types::transfer as tt;
use prost::Message;
use tonic::Request;

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
    },
    /// Push an image to a registry (under its own name, or DESTINATION).
    Push {
        image: String,
        destination: Option<String>,
        #[arg(long)]
        hosts_dir: Option<String>,
    },
    /// List images.
    #[command(alias = "ls")]
    Images {
        /// Names only.
        #[arg(short, long)]
        quiet: bool,
    },
}

fn with_ns<T>(ns: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = ns.parse() {
        r.metadata_mut().insert("containerd-namespace", v);
    }
    r
}

fn any<M: Message>(name: &str, m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("types.containerd.io/{name}"),
        value: m.encode_to_vec(),
    }
}

fn registry(reference: &str, hosts_dir: Option<String>) -> prost_types::Any {
    any(
        "containerd.types.transfer.OCIRegistry",
        &tt::OciRegistry {
            reference: reference.to_string(),
            resolver: hosts_dir.map(|d| tt::RegistryResolver {
                host_dir: d,
                ..Default::default()
            }),
        },
    )
}

fn platform(s: &str) -> Result<containerd_client::types::Platform> {
    let mut parts = s.split('/');
    let os = parts.next().filter(|p| !p.is_empty());
    let arch = parts.next().filter(|p| !p.is_empty());
    match (os, arch) {
        (Some(os), Some(arch)) => Ok(containerd_client::types::Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: parts.next().unwrap_or("").into(),
            ..Default::default()
        }),
        _ => anyhow::bail!("invalid platform {s:?}: want os/arch[/variant], e.g. linux/amd64"),
    }
}

/// One readable line for a failed call, with a hint where there is one.
fn explain(e: tonic::Status, address: &str, not_found: &str) -> anyhow::Error {
    let hint = match e.code() {
        tonic::Code::Unavailable => format!(" (is wharfd running on {address}?)"),
        tonic::Code::NotFound => format!(" ({not_found})"),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            " (credentials come from ~/.docker/config.json)".into()
        }
        _ => String::new(),
    };
    anyhow::anyhow!("{}{hint}", e.message())
}

async fn run(cli: Cli) -> Result<()> {
    let channel = containerd_client::connect(&cli.address)
        .await
        .with_context(|| format!("cannot reach wharfd at {} (is it running?)", cli.address))?;
    let ns = cli.namespace.as_str();
    match cli.command {
        Command::Pull {
            reference,
            platform: p,
            snapshotter,
            hosts_dir,
        } => {
            let platform = p.as_deref().map(platform).transpose()?;
            let store = tt::ImageStore {
                name: reference.clone(),
                platforms: platform.iter().cloned().collect(),
                unpacks: vec![tt::UnpackConfiguration {
                    platform,
                    snapshotter,
                }],
                ..Default::default()
            };
            let t0 = Instant::now();
            eprintln!("pulling {reference} ...");
            pb::transfer_client::TransferClient::new(channel)
                .transfer(with_ns(
                    ns,
                    pb::TransferRequest {
                        source: Some(registry(&reference, hosts_dir.clone())),
                        destination: Some(any("containerd.types.transfer.ImageStore", &store)),
                        options: None,
                    },
                ))
                .await
                .map_err(|e| explain(e, &cli.address, "check the reference and the registry"))?;
            println!(
                "{reference}: pulled and unpacked in {:.2}s",
                t0.elapsed().as_secs_f64()
            );
        }
        Command::Push {
            image,
            destination,
            hosts_dir,
        } => {
            let dest = destination.unwrap_or_else(|| image.clone());
            let t0 = Instant::now();
            pb::transfer_client::TransferClient::new(channel)
                .transfer(with_ns(
                    ns,
                    pb::TransferRequest {
                        source: Some(any(
                            "containerd.types.transfer.ImageStore",
                            &tt::ImageStore {
                                name: image.clone(),
                                ..Default::default()
                            },
                        )),
                        destination: Some(registry(&dest, hosts_dir)),
                        options: None,
                    },
                ))
                .await
                .map_err(|e| explain(e, &cli.address, "`wharf images` lists the local images"))?;
            println!(
                "{image} -> {dest}: pushed in {:.2}s",
                t0.elapsed().as_secs_f64()
            );
        }
        Command::Images { quiet } => {
            let images = pb::images_client::ImagesClient::new(channel)
                .list(with_ns(ns, pb::ListImagesRequest { filters: vec![] }))
                .await
                .map_err(|e| explain(e, &cli.address, "no such namespace?"))?
                .into_inner()
                .images;
            if quiet {
                for i in images {
                    println!("{}", i.name);
                }
                return Ok(());
            }
            let w = images
                .iter()
                .map(|i| i.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            println!("{:<w$}  DIGEST", "NAME");
            for i in images {
                let digest = i.target.map(|t| t.digest).unwrap_or_default();
                let short = digest.strip_prefix("sha256:").unwrap_or(&digest);
                println!("{:<w$}  sha256:{}", i.name, &short[..short.len().min(12)]);
            }
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf: {e:#}");
            // docker's convention: 125 when the daemon or the request failed.
            std::process::ExitCode::from(125)
        }
    }
}
