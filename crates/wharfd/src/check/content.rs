//! Content records against the blobs on disk (presence and size; `deep`: the digest too), and
//! ingests nobody writes to any more.

use std::collections::BTreeMap;

use anyhow::Context;
use wharf_core::filters::Filter;
use wharf_core::Digest;

use super::{Ctx, Facts, Kind, INGEST_EXPIRY};
use crate::server::Daemon;

pub fn check(d: &Daemon, facts: &Facts, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = d.db.content_store();
    let all = Filter::parse::<&str>(&[]).context("empty filter")?;
    // digest -> (recorded size, namespaces recording it)
    let mut records: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
    for ns in &facts.namespaces {
        for info in
            d.db.content_list(ns, &all)
                .with_context(|| format!("list content of {ns}"))?
        {
            records
                .entry(info.digest.clone())
                .or_insert((info.size, Vec::new()))
                .1
                .push(ns.clone());
        }
    }
    ctx.count("blobs", records.len() as u64);
    for (digest, (size, namespaces)) in records {
        let Ok(dg) = Digest::parse(&digest) else {
            continue;
        };
        match store.info(&dg) {
            // A collection removes records before blobs: a blob is only missing if a record of
            // it is still there once the blob was found gone.
            Err(e) if e.is_not_found() && !recorded(d, &namespaces, &dg) => {}
            Err(e) if e.is_not_found() => {
                let db = d.db.clone();
                let (dg2, nss) = (dg.clone(), namespaces.clone());
                ctx.found(
                    Kind::MissingBlob,
                    digest,
                    format!(
                        "recorded in {} but not on disk (repair drops the record: pull again)",
                        namespaces.join(",")
                    ),
                    move || {
                        for ns in &nss {
                            match db.content_delete(ns, &dg2) {
                                Ok(()) => {}
                                Err(e) if e.is_not_found() => {}
                                Err(e) => return Err(e).context(format!("drop record in {ns}")),
                            }
                        }
                        Ok(())
                    },
                );
            }
            Err(e) => return Err(e).with_context(|| format!("stat blob {digest}")),
            Ok(info) if info.size != size => ctx.found(
                Kind::BlobSize,
                digest,
                format!(
                    "{} bytes on disk, {size} recorded: corrupt (remove the image and pull again)",
                    info.size
                ),
                || anyhow::bail!("not repairable: the blob is referenced"),
            ),
            Ok(_) if ctx.opts.deep => {
                if let Err(e) = store.verify(&dg) {
                    ctx.found(
                        Kind::CorruptBlob,
                        digest,
                        format!("{e} (remove the image and pull again)"),
                        || anyhow::bail!("not repairable: the blob is referenced"),
                    );
                }
            }
            Ok(_) => {}
        }
    }

    let ingests = store.ingest_dirs().context("list ingests")?;
    ctx.count("ingests", ingests.len() as u64);
    for ing in ingests {
        if ing
            .status
            .as_ref()
            .is_some_and(|s| store.is_locked(&s.reference))
        {
            continue;
        }
        let age = ctx.now.duration_since(ing.updated_at).unwrap_or_default();
        let why = match &ing.status {
            Some(s) if age > INGEST_EXPIRY => format!(
                "ingest {} ({} of {} bytes) untouched for {}h",
                s.reference,
                s.offset,
                s.total,
                age.as_secs() / 3600
            ),
            None if !ctx.young(ing.updated_at) => "half-created ingest directory".to_string(),
            _ => continue,
        };
        let store2 = store.clone();
        let ing2 = ing.clone();
        ctx.found(
            Kind::StaleIngest,
            ing.path.display().to_string(),
            why,
            move || Ok(store2.remove_ingest_dir(&ing2)?),
        );
    }
    Ok(())
}

/// Does some namespace still record `d`?
fn recorded(d: &Daemon, namespaces: &[String], dg: &Digest) -> bool {
    namespaces
        .iter()
        .any(|ns| d.db.content_info(ns, dg).is_ok())
}
