//! Image commands: pull (with live progress), push, save, load, images, rmi, tag; and resolving an image to
//! its config and layers for `run`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use containerd_client::services::v1 as pb;
use containerd_client::types::transfer as tt;
use futures::StreamExt;
use prost::Message;
use wharf_core::images::{self, ImageConfig, Platform};
use wharf_core::Digest;

use crate::client::{Client, Explain};
use crate::table::{human_size, Table};

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

pub fn platform(s: &str) -> Result<containerd_client::types::Platform> {
    let p = Platform::parse(s).map_err(|_| {
        anyhow::anyhow!("invalid platform {s:?}: want os/arch[/variant], e.g. linux/amd64")
    })?;
    Ok(containerd_client::types::Platform {
        os: p.os,
        architecture: p.architecture,
        variant: p.variant.unwrap_or_default(),
        ..Default::default()
    })
}

/// A TransferRequest's options naming a progress stream.
fn with_progress(stream: &crate::stream::ClientStream) -> Option<pb::TransferOptions> {
    Some(pb::TransferOptions {
        progress_stream: stream.id.clone(),
    })
}

fn host_platform() -> containerd_client::types::Platform {
    let p = Platform::host();
    containerd_client::types::Platform {
        os: p.os,
        architecture: p.architecture,
        variant: p.variant.unwrap_or_default(),
        ..Default::default()
    }
}

/// Pulls through wharfd's Transfer service; progress comes as events on a progress stream.
pub async fn pull(
    c: &Client,
    reference: &str,
    platform_arg: Option<&str>,
    snapshotter: &str,
    hosts_dir: Option<String>,
    quiet: bool,
) -> Result<()> {
    let platform = platform_arg.map(platform).transpose()?;
    let store = tt::ImageStore {
        name: reference.to_string(),
        platforms: platform.iter().cloned().collect(),
        unpacks: vec![tt::UnpackConfiguration {
            platform,
            snapshotter: snapshotter.to_string(),
        }],
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut events = crate::stream::open(c, "progress").await?;
    let mut transfer = c.transfer();
    let call = transfer.transfer(c.req(pb::TransferRequest {
        source: Some(registry(reference, hosts_dir)),
        destination: Some(any("containerd.types.transfer.ImageStore", &store)),
        options: with_progress(&events),
    }));
    tokio::pin!(call);
    let mut progress = crate::progress::Pull::new(reference, quiet);
    let mut open = true;
    let result = loop {
        tokio::select! {
            r = &mut call => break r,
            p = events.next_progress(), if open => match p {
                Some(p) => progress.event(&p),
                None => open = false,
            },
        }
    };
    // wharfd closes the progress stream when the transfer ends: take what is still on the way.
    while open {
        match tokio::time::timeout(Duration::from_secs(5), events.next_progress()).await {
            Ok(Some(p)) => progress.event(&p),
            Ok(None) | Err(_) => open = false,
        }
    }
    match result {
        Ok(_) => {
            progress.finish(true);
            if !quiet {
                println!(
                    "{reference}: pulled and unpacked in {:.2}s",
                    t0.elapsed().as_secs_f64()
                );
            }
            Ok(())
        }
        Err(e) => {
            progress.finish(false);
            Err(c.explain(e, "check the reference and the registry"))
        }
    }
}

/// `wharf save`: wharfd exports the images as one tarball (OCI layout with docker's
/// manifest.json) on a stream, written to `output` (a temporary file renamed into place, so a
/// failed save leaves nothing) or to stdout.
pub async fn save(c: &Client, names: &[String], output: Option<&std::path::Path>) -> Result<()> {
    if output.is_none() && std::io::stdout().is_terminal() {
        bail!("refusing to write a tarball to a terminal: use -o FILE or redirect stdout");
    }
    let mut refs = Vec::new();
    for n in names {
        let name = canonical(c, n).await?;
        c.images()
            .get(c.req(pb::GetImageRequest { name: name.clone() }))
            .await
            .explain(c, "`wharf images` lists the local images")?;
        refs.push(tt::ImageReference {
            name,
            ..Default::default()
        });
    }
    let data = crate::stream::open(c, "export").await?;
    let request = pb::TransferRequest {
        source: Some(any(
            "containerd.types.transfer.ImageStore",
            &tt::ImageStore {
                extra_references: refs,
                ..Default::default()
            },
        )),
        destination: Some(any(
            "containerd.types.transfer.ImageExportStream",
            &tt::ImageExportStream {
                stream: data.id.clone(),
                media_type: "application/vnd.oci.image.layout.v1.tar".into(),
                platforms: vec![host_platform()],
                ..Default::default()
            },
        )),
        options: None,
    };
    let (tmp, out): (_, Box<dyn tokio::io::AsyncWrite + Send + Unpin>) = match output {
        Some(path) => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tmp = tempfile::Builder::new()
                .prefix(".wharf-save-")
                .tempfile_in(dir)
                .with_context(|| format!("create a file in {}", dir.display()))?;
            let f = tokio::fs::File::from_std(tmp.as_file().try_clone()?);
            (Some(tmp), Box::new(f))
        }
        None => (None, Box::new(tokio::io::stdout())),
    };
    let receiver = tokio::spawn(data.receive_all(out));
    if let Err(e) = c.transfer().transfer(c.req(request)).await {
        receiver.abort();
        return Err(c.explain(e, "`wharf images` lists the local images"));
    }
    let received = receiver
        .await
        .context("receive task")?
        .context("receive the archive")?;
    if let (Some(tmp), Some(path)) = (tmp, output) {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().sync_all().context("sync the archive")?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .context("chmod the archive")?;
        tmp.persist(path)
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("saved {} ({})", path.display(), human_size(received));
    }
    Ok(())
}

/// `wharf load`: the tarball (OCI layout or docker save, maybe gzip/zstd compressed) goes to
/// wharfd on a stream; wharfd imports and unpacks it and names the images it stored on a
/// progress stream.
pub async fn load(c: &Client, input: Option<&std::path::Path>, quiet: bool) -> Result<()> {
    let reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = match input {
        Some(p) => Box::new(
            tokio::fs::File::open(p)
                .await
                .with_context(|| format!("open {}", p.display()))?,
        ),
        None => {
            if std::io::stdin().is_terminal() {
                bail!("refusing to read a tarball from a terminal: use -i FILE or redirect stdin");
            }
            Box::new(tokio::io::stdin())
        }
    };
    let data = crate::stream::open(c, "import").await?;
    let mut events = crate::stream::open(c, "progress").await?;
    let request = pb::TransferRequest {
        source: Some(any(
            "containerd.types.transfer.ImageImportStream",
            &tt::ImageImportStream {
                stream: data.id.clone(),
                media_type: "application/vnd.oci.image.layout.v1.tar".into(),
                force_compress: false,
            },
        )),
        destination: Some(any(
            "containerd.types.transfer.ImageStore",
            &tt::ImageStore {
                unpacks: vec![tt::UnpackConfiguration {
                    platform: None,
                    snapshotter: "overlayfs".into(),
                }],
                ..Default::default()
            },
        )),
        options: with_progress(&events),
    };
    let sender = tokio::spawn(data.send_all(reader));
    let mut transfer = c.transfer();
    let call = transfer.transfer(c.req(request));
    tokio::pin!(call);
    let mut loaded = Vec::new();
    let mut open = true;
    let mut on_event = |p: tt::Progress| {
        if p.event == "saved" && !p.name.is_empty() {
            loaded.push(p.name);
        }
    };
    let result = loop {
        tokio::select! {
            r = &mut call => break r,
            p = events.next_progress(), if open => match p {
                Some(p) => on_event(p),
                None => open = false,
            },
        }
    };
    while open {
        match tokio::time::timeout(Duration::from_secs(5), events.next_progress()).await {
            Ok(Some(p)) => on_event(p),
            Ok(None) | Err(_) => open = false,
        }
    }
    if let Err(e) = result {
        // A local read error explains more than what wharfd made of the cut-off stream.
        if sender.is_finished() {
            if let Ok(Err(local)) = sender.await {
                if local.root_cause().is::<std::io::Error>() {
                    return Err(local);
                }
            }
        } else {
            sender.abort();
        }
        return Err(c.explain(e, ""));
    }
    // wharfd has what it needed; the rest (tar padding) is not waited for.
    if !sender.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(5), sender).await;
    }
    for name in &loaded {
        if !quiet {
            println!("Loaded image: {name}");
        }
    }
    Ok(())
}

pub async fn push(
    c: &Client,
    image: &str,
    dest: Option<String>,
    hosts_dir: Option<String>,
) -> Result<()> {
    let dest = dest.unwrap_or_else(|| image.to_string());
    let t0 = Instant::now();
    c.transfer()
        .transfer(c.req(pb::TransferRequest {
            source: Some(any(
                "containerd.types.transfer.ImageStore",
                &tt::ImageStore {
                    name: image.to_string(),
                    ..Default::default()
                },
            )),
            destination: Some(registry(&dest, hosts_dir)),
            options: None,
        }))
        .await
        .explain(c, "`wharf images` lists the local images")?;
    println!(
        "{image} -> {dest}: pushed in {:.2}s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

pub async fn list(c: &Client, quiet: bool, format: Option<&str>) -> Result<()> {
    let images = c
        .images()
        .list(c.req(pb::ListImagesRequest { filters: vec![] }))
        .await
        .explain(c, "")?
        .images;
    if quiet {
        for i in images {
            println!("{}", i.name);
        }
        return Ok(());
    }
    let mut rows = Vec::new();
    for i in &images {
        let target = i.target.clone().unwrap_or_default();
        let size = resolve(c, &i.name)
            .await
            .map(|r| r.layers_size + r.config_size)
            .unwrap_or(target.size);
        let (repo, tag) = split_name(&i.name);
        let created = i
            .created_at
            .as_ref()
            .map(|t| crate::table::ago(t.seconds))
            .unwrap_or_default();
        rows.push(BTreeMap::from([
            ("Repository".to_string(), serde_json::json!(repo)),
            ("Tag".to_string(), serde_json::json!(tag)),
            ("Name".to_string(), serde_json::json!(i.name)),
            ("Digest".to_string(), serde_json::json!(target.digest)),
            ("Size".to_string(), serde_json::json!(size)),
            ("Created".to_string(), serde_json::json!(created)),
        ]));
    }
    let mut t = Table::new(&["REPOSITORY", "TAG", "DIGEST", "SIZE", "CREATED"]);
    for r in &rows {
        let digest = r["Digest"].as_str().unwrap_or_default();
        let short = digest.strip_prefix("sha256:").unwrap_or(digest);
        t.row(vec![
            r["Repository"].as_str().unwrap_or_default().to_string(),
            r["Tag"].as_str().unwrap_or_default().to_string(),
            format!("sha256:{}", &short[..short.len().min(12)]),
            human_size(r["Size"].as_i64().unwrap_or(0).max(0) as u64),
            r["Created"].as_str().unwrap_or_default().to_string(),
        ]);
    }
    crate::table::output(format, &rows, t)
}

/// `repo:tag` → (repo, tag); digests and names without a tag give `<none>`.
fn split_name(name: &str) -> (String, String) {
    let (base, _) = name.split_once('@').unwrap_or((name, ""));
    match base.rfind(':') {
        Some(i) if !base[i + 1..].contains('/') => {
            (base[..i].to_string(), base[i + 1..].to_string())
        }
        _ => (base.to_string(), "<none>".to_string()),
    }
}

/// Normalises a short name the way the daemon stores pulled images (`busybox` →
/// `docker.io/library/busybox:latest`); local names that exist as given are kept.
pub async fn canonical(c: &Client, name: &str) -> Result<String> {
    if c.images()
        .get(c.req(pb::GetImageRequest {
            name: name.to_string(),
        }))
        .await
        .is_ok()
    {
        return Ok(name.to_string());
    }
    match wharf_distribution::Reference::parse(name) {
        Ok(r) => Ok(r.to_string()),
        Err(_) => Ok(name.to_string()),
    }
}

pub async fn remove(c: &Client, names: &[String], force: bool) -> Result<()> {
    let mut failed = None;
    for n in names {
        let name = canonical(c, n).await?;
        if !force {
            let users = c
                .containers()
                .list(c.req(pb::ListContainersRequest {
                    filters: vec![format!("image=={name}")],
                }))
                .await
                .explain(c, "")?
                .containers;
            if let Some(u) = users.first() {
                eprintln!(
                    "wharf: image {n} is used by container {} (remove it first, or use -f)",
                    u.id
                );
                failed = Some(());
                continue;
            }
        }
        match c
            .images()
            .delete(c.req(pb::DeleteImageRequest {
                name: name.clone(),
                sync: false,
                target: None,
            }))
            .await
        {
            Ok(_) => println!("Untagged: {name}"),
            Err(e) => {
                eprintln!(
                    "wharf: {}",
                    c.explain(e, "`wharf images` lists the local images")
                );
                failed = Some(());
            }
        }
    }
    if failed.is_some() {
        bail!("some images were not removed");
    }
    Ok(())
}

pub async fn tag(c: &Client, source: &str, target: &str) -> Result<()> {
    let src = canonical(c, source).await?;
    let dst = match wharf_distribution::Reference::parse(target) {
        Ok(r) => r.to_string(),
        Err(e) => bail!("invalid target name {target:?}: {e}"),
    };
    let img = c
        .images()
        .get(c.req(pb::GetImageRequest { name: src.clone() }))
        .await
        .explain(c, "`wharf images` lists the local images")?
        .image
        .context("daemon returned no image")?;
    let new = pb::Image {
        name: dst.clone(),
        labels: img.labels,
        target: img.target,
        ..Default::default()
    };
    let r = c
        .images()
        .create(c.req(pb::CreateImageRequest {
            image: Some(new.clone()),
            source_date_epoch: None,
        }))
        .await;
    match r {
        Ok(_) => {}
        Err(e) if e.code() == tonic::Code::AlreadyExists => {
            c.images()
                .update(c.req(pb::UpdateImageRequest {
                    image: Some(new),
                    update_mask: None,
                    source_date_epoch: None,
                }))
                .await
                .explain(c, "")?;
        }
        Err(e) => return Err(c.explain(e, "")),
    }
    println!("{dst}");
    Ok(())
}

/// An image as `run` needs it.
pub struct Resolved {
    pub config: ImageConfig,
    /// The chain ID of the top layer: the parent snapshot of a container.
    pub chain_id: String,
    pub layers_size: i64,
    pub config_size: i64,
}

pub async fn read_blob(c: &Client, digest: &str) -> Result<Vec<u8>> {
    let mut stream = c
        .content()
        .read(c.req(pb::ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        }))
        .await
        .explain(c, "the image's content is missing: pull it again")?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| c.explain(e, ""))?;
        out.extend_from_slice(&chunk.data);
        if out.len() as u64 > 64 << 20 {
            bail!("blob {digest} is too large to be a manifest or config");
        }
    }
    Ok(out)
}

/// Resolves an image name to this host's manifest, config and chain ID.
pub async fn resolve(c: &Client, name: &str) -> Result<Resolved> {
    let img = c
        .images()
        .get(c.req(pb::GetImageRequest {
            name: name.to_string(),
        }))
        .await
        .explain(c, "")?
        .image
        .context("daemon returned no image")?;
    let target = img.target.context("image has no target")?;
    let host = Platform::host();
    let mut digest = target.digest.clone();
    let mut media = target.media_type.clone();
    for _ in 0..4 {
        if !images::is_index(&media) {
            break;
        }
        let index = images::parse_index(&read_blob(c, &digest).await?)?;
        let m = index
            .manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| host.matches(p)))
            .with_context(|| format!("image {name} has no manifest for {host}"))?;
        digest = m.digest.clone();
        media = m.media_type.clone();
    }
    let manifest = images::parse_manifest(&read_blob(c, &digest).await?)?;
    let config = images::parse_config(&read_blob(c, &manifest.config.digest).await?)?;
    let diff_ids = config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let chain_id = images::chain_ids(&diff_ids)
        .last()
        .map(|d| d.to_string())
        .context("image has no layers")?;
    Ok(Resolved {
        config,
        chain_id,
        layers_size: manifest.layers.iter().map(|l| l.size).sum(),
        config_size: manifest.config.size,
    })
}

/// Makes sure `name` is present, pulling it per `policy` (missing|always|never).
pub async fn ensure(
    c: &Client,
    name: &str,
    policy: &str,
    platform: Option<&str>,
) -> Result<String> {
    let local = canonical(c, name).await?;
    let present = c
        .images()
        .get(c.req(pb::GetImageRequest {
            name: local.clone(),
        }))
        .await
        .is_ok();
    match policy {
        "never" if !present => bail!("image {name} is not present locally and --pull=never"),
        "never" | "missing" if present => return Ok(local),
        "missing" | "always" => {}
        other => bail!("--pull {other:?}: want missing, always or never"),
    }
    let quiet = !std::io::stderr().is_terminal();
    pull(c, &local, platform, "overlayfs", None, quiet).await?;
    Ok(local)
}
