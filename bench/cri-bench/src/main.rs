//! cri-bench: times what kubelet asks of a CRI runtime, against any endpoint (wharfd or
//! containerd), for bench/cri.py. Prints one JSON object:
//! `{"pod_create_start_ms": [...], "list_containers_ms": [...], "containers": N}`.
//!
//! 1. `--runs` times: RunPodSandbox + CreateContainer + StartContainer of `sleep 3600`, each
//!    in a pod of its own (the endpoint's default CNI network), timed end to end.
//! 2. More containers started in the last pod until `--containers` run, then ListContainers
//!    timed `--lists` times and ListContainerStats `--stats` times.
//! 3. Every pod stopped and removed (not timed).
//!
//! ```text
//! cri-bench --endpoint /run/wharf/wharfd.sock --image docker.io/library/busybox:latest
//! ```

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tonic::transport::Channel;
use wharf_api::cri as pb;
use wharf_api::cri::runtime_service_client::RuntimeServiceClient;

type Runtime = RuntimeServiceClient<Channel>;

#[derive(Parser)]
struct Args {
    /// The CRI unix socket.
    #[arg(long)]
    endpoint: String,
    /// An image the runtime already has.
    #[arg(long)]
    image: String,
    /// Timed pod + create + start samples.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Containers running while ListContainers is timed.
    #[arg(long, default_value_t = 100)]
    containers: usize,
    /// Timed ListContainers calls.
    #[arg(long, default_value_t = 50)]
    lists: usize,
    /// Timed ListContainerStats calls (kubelet's every few seconds), with every container
    /// running.
    #[arg(long, default_value_t = 10)]
    stats: usize,
    /// Where the pods' logs go.
    #[arg(long, default_value = "/var/tmp/cri-bench-logs")]
    log_dir: String,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn pod_config(i: usize, log_dir: &str) -> pb::PodSandboxConfig {
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: format!("bench-{i}"),
            uid: format!("cri-bench-uid-{i}"),
            namespace: "cri-bench".into(),
            attempt: 0,
        }),
        hostname: format!("bench-{i}"),
        log_directory: format!("{log_dir}/{i}"),
        linux: Some(pb::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

fn container_config(name: &str, image: &str) -> pb::ContainerConfig {
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(pb::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: format!("{name}/0.log"),
        linux: Some(pb::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

async fn run_pod(r: &mut Runtime, config: &pb::PodSandboxConfig) -> Result<String> {
    Ok(r.run_pod_sandbox(pb::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    })
    .await
    .context("RunPodSandbox")?
    .into_inner()
    .pod_sandbox_id)
}

/// Creates and starts a container in `pod`; returns its id and the milliseconds each call took.
async fn create_start(
    r: &mut Runtime,
    pod: &str,
    pod_config: &pb::PodSandboxConfig,
    c: pb::ContainerConfig,
) -> Result<(String, f64, f64)> {
    let t = Instant::now();
    let id = r
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(c),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .context("CreateContainer")?
        .into_inner()
        .container_id;
    let created = ms(t);
    let t = Instant::now();
    r.start_container(pb::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .context("StartContainer")?;
    Ok((id, created, ms(t)))
}

async fn bench(r: &mut Runtime, a: &Args, pods: &mut Vec<String>) -> Result<serde_json::Value> {
    let mut start = Vec::new();
    let (mut run_ms, mut create_ms, mut start_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for i in 0..a.runs.max(1) {
        let cfg = pod_config(i, &a.log_dir);
        let t = Instant::now();
        let pod = run_pod(r, &cfg).await?;
        run_ms.push(ms(t));
        pods.push(pod.clone());
        let (_, created, started) =
            create_start(r, &pod, &cfg, container_config("c", &a.image)).await?;
        start.push(ms(t));
        create_ms.push(created);
        start_ms.push(started);
        last = Some((pod, cfg));
    }
    let Some((pod, cfg)) = last else {
        bail!("no pod ran");
    };
    // The rest of the containers, into the last pod; the StartContainer times of the last ten
    // show how starting scales with the containers (and rootfs mounts) already there.
    let mut late_start_ms = Vec::new();
    for n in a.runs.max(1)..a.containers {
        let (_, _, started) =
            create_start(r, &pod, &cfg, container_config(&format!("x{n}"), &a.image)).await?;
        if n + 10 >= a.containers {
            late_start_ms.push(started);
        }
    }
    let lists = time_lists(r, a.lists, a.containers, List::Containers).await?;
    let stats = time_lists(r, a.stats, a.containers, List::Stats).await?;
    Ok(serde_json::json!({
        "pod_create_start_ms": start,
        "run_pod_sandbox_ms": run_ms,
        "create_container_ms": create_ms,
        "start_container_ms": start_ms,
        "late_start_container_ms": late_start_ms,
        "list_containers_ms": lists,
        "list_container_stats_ms": stats,
        "containers": a.containers,
    }))
}

#[derive(Clone, Copy)]
enum List {
    Containers,
    Stats,
}

/// Times `n` calls of a list RPC, each of which must list at least `want` containers.
async fn time_lists(r: &mut Runtime, n: usize, want: usize, what: List) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let (got, name) = match what {
            List::Containers => (
                r.list_containers(pb::ListContainersRequest { filter: None })
                    .await
                    .context("ListContainers")?
                    .into_inner()
                    .containers
                    .len(),
                "ListContainers",
            ),
            List::Stats => (
                r.list_container_stats(pb::ListContainerStatsRequest { filter: None })
                    .await
                    .context("ListContainerStats")?
                    .into_inner()
                    .stats
                    .len(),
                "ListContainerStats",
            ),
        };
        out.push(ms(t));
        if got < want {
            bail!("{name} returned {got} containers, {want} expected");
        }
    }
    Ok(out)
}

async fn cleanup(r: &mut Runtime, pods: &[String]) {
    for p in pods {
        let id = p.clone();
        if let Err(e) = r
            .stop_pod_sandbox(pb::StopPodSandboxRequest { pod_sandbox_id: id })
            .await
        {
            eprintln!("StopPodSandbox {p}: {e}");
        }
        let id = p.clone();
        if let Err(e) = r
            .remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
        {
            eprintln!("RemovePodSandbox {p}: {e}");
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let a = Args::parse();
    let ch = containerd_client::connect(&a.endpoint)
        .await
        .with_context(|| format!("connect to {}", a.endpoint))?;
    let mut r = RuntimeServiceClient::new(ch);
    let mut pods = Vec::new();
    let out = bench(&mut r, &a, &mut pods).await;
    cleanup(&mut r, &pods).await;
    println!("{}", out?);
    Ok(())
}
