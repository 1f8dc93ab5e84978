//! Image records: a name pointing at a target descriptor, with labels.

use std::time::SystemTime;

use redb::ReadableTable;

use super::*;
use crate::filters::Filter;
use crate::Digest;

fn not_found(name: &str) -> Error {
    Error::NotFound(format!("image {name:?}"))
}

fn validate(image: &Image) -> Result<()> {
    if image.name.is_empty() {
        return Err(Error::InvalidArgument(
            "image name must not be empty".into(),
        ));
    }
    validate_labels(&image.labels)?;
    validate_target(&image.target)
}

fn validate_target(t: &Descriptor) -> Result<()> {
    Digest::parse(&t.digest)?;
    if t.media_type.is_empty() {
        return Err(Error::InvalidArgument(
            "Target.MediaType must be set".into(),
        ));
    }
    Ok(())
}

impl Db {
    pub fn image_get(&self, ns: &str, name: &str) -> Result<Image> {
        let tx = self.read()?;
        let t = tx.open_table(IMAGES)?;
        let v = t.get((ns, name))?.ok_or_else(|| not_found(name))?;
        decode(v.value())
    }

    pub fn image_list(&self, ns: &str, filter: &Filter) -> Result<Vec<Image>> {
        let tx = self.read()?;
        let t = tx.open_table(IMAGES)?;
        let mut out = Vec::new();
        for (_, v) in scan_ns(&t, ns)? {
            let img: Image = decode(&v)?;
            if filter.matches(&img) {
                out.push(img);
            }
        }
        Ok(out)
    }

    /// Creates an image record; its created/updated times are set here.
    pub fn image_create(&self, ns: &str, mut image: Image) -> Result<Image> {
        validate(&image)?;
        let tx = self.write()?;
        namespaces::ensure(&tx, ns)?;
        {
            let mut t = tx.open_table(IMAGES)?;
            if t.get((ns, image.name.as_str()))?.is_some() {
                return Err(Error::AlreadyExists(format!("image {:?}", image.name)));
            }
            let now = SystemTime::now();
            image.created_at = now;
            image.updated_at = now;
            t.insert((ns, image.name.as_str()), encode(&image)?.as_slice())?;
        }
        tx.commit()?;
        Ok(image)
    }

    /// Updates the fields named by `fieldpaths` (`labels`, `labels.<k>`, `target`, `annotations`);
    /// with none, labels and target are replaced.
    pub fn image_update(&self, ns: &str, image: &Image, fieldpaths: &[String]) -> Result<Image> {
        if image.name.is_empty() {
            return Err(Error::InvalidArgument(
                "image name must not be empty".into(),
            ));
        }
        let tx = self.write()?;
        let updated = {
            let mut t = tx.open_table(IMAGES)?;
            let mut cur: Image = match t.get((ns, image.name.as_str()))? {
                Some(v) => decode(v.value())?,
                None => return Err(not_found(&image.name)),
            };
            if fieldpaths.is_empty() {
                validate(image)?;
                cur.labels = image.labels.clone();
                cur.target = image.target.clone();
            } else {
                for p in fieldpaths {
                    match p.as_str() {
                        "target" => {
                            validate_target(&image.target)?;
                            cur.target = image.target.clone();
                        }
                        "annotations" => cur.target.annotations = image.target.annotations.clone(),
                        p if p == "labels" || p.starts_with("labels.") => {}
                        other => {
                            return Err(Error::InvalidArgument(format!(
                                "cannot update {other:?} field on image {:?}",
                                image.name
                            )))
                        }
                    }
                }
                update_labels(&mut cur.labels, &image.labels, fieldpaths)?;
            }
            cur.updated_at = SystemTime::now();
            t.insert((ns, image.name.as_str()), encode(&cur)?.as_slice())?;
            cur
        };
        tx.commit()?;
        Ok(updated)
    }

    /// Deletes an image record; what it referenced is left to GC.
    pub fn image_delete(&self, ns: &str, name: &str) -> Result<()> {
        let tx = self.write()?;
        {
            let mut t = tx.open_table(IMAGES)?;
            if t.remove((ns, name))?.is_none() {
                return Err(not_found(name));
            }
        }
        tx.commit()?;
        Ok(())
    }
}
