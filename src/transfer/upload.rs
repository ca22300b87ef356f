//! `lakemount upload`: a local file or tree into the lake, files and blocks in parallel,
//! each object committed whole (Put Block List) with its Content-MD5, so a failed or
//! interrupted upload leaves the old object (or none), never a part.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::sync::Semaphore;

use super::progress::Progress;
use super::tree::{self, LocalFile};
use super::Report;
use crate::cli::TransferArgs;
use crate::store::{DynStore, PutOptions, StoreError};

/// Azure allows 50,000 blocks per blob: bigger files get bigger blocks.
const MAX_BLOCKS: u64 = 50_000;

/// Uploads `files` to `store` (keys = their relative paths). Without `overwrite`, any target
/// that exists and differs refuses the whole upload with [`tree::Conflicts`] before a byte
/// is sent.
pub async fn upload(
    store: DynStore,
    files: Vec<LocalFile>,
    threads: usize,
    block_size: u64,
    overwrite: bool,
) -> Result<Report> {
    let existing: HashMap<String, crate::store::ObjectInfo> = tree::lake_files(&store, threads)
        .await?
        .into_iter()
        .map(|o| (o.key.clone(), o))
        .collect();
    let mut todo = Vec::new();
    let mut conflicts = Vec::new();
    let mut skipped = 0;
    for f in files {
        match existing.get(&f.rel) {
            None => todo.push(f),
            Some(o) if o.size == f.size && o.content_md5.is_some() => {
                let local = tree::md5_file(&f.path)
                    .with_context(|| format!("cannot read {}", f.path.display()))?;
                if o.content_md5.as_deref() == Some(local.as_str()) {
                    skipped += 1;
                } else if overwrite {
                    todo.push(f);
                } else {
                    conflicts.push(f.rel);
                }
            }
            Some(_) if overwrite => todo.push(f),
            Some(_) => conflicts.push(f.rel),
        }
    }
    super::refuse(conflicts)?;
    let total: u64 = todo.iter().map(|f| f.size).sum();
    let progress = Progress::new("upload", todo.len() as u64, total);
    let slots = Arc::new(Semaphore::new(threads.max(1)));
    Ok(super::run_all(
        todo,
        threads,
        &progress,
        skipped,
        |f| f.rel.clone(),
        |f| f.size,
        |f| {
            let (store, slots, progress) = (store.clone(), slots.clone(), progress.clone());
            async move { upload_file(&store, &f, block_size, &slots, &progress).await }
        },
    )
    .await)
}

/// The block size for a file of `size` bytes.
fn block_size_for(size: u64, block_size: u64) -> u64 {
    block_size.max(size.div_ceil(MAX_BLOCKS).next_multiple_of(1 << 20))
}

fn read_at(file: &std::fs::File, len: u64, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

async fn upload_file(
    store: &DynStore,
    f: &LocalFile,
    block_size: u64,
    slots: &Arc<Semaphore>,
    progress: &Arc<Progress>,
) -> Result<()> {
    let file = Arc::new(
        std::fs::File::open(&f.path)
            .with_context(|| format!("cannot open {}", f.path.display()))?,
    );
    let local = file.metadata()?;
    let size = local.len();
    let mut metadata = crate::store::Metadata::new();
    crate::store::posix::PosixAttrs::of_file(&local).store_into(&mut metadata);
    if size != f.size {
        bail!("{} changed while the upload was prepared", f.path.display());
    }
    let bs = block_size_for(size, block_size);
    let mut md5 = Md5::new();
    if size <= bs {
        // One request: the service checks the body against its MD5 and stores it.
        let _slot = slots.acquire().await?;
        let data = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || read_at(&file, size, 0)).await??
        };
        md5.update(&data);
        let opts = PutOptions {
            content_md5: Some(md5.finalize().into()),
            metadata,
        };
        store.put(&f.rel, Bytes::from(data), &opts).await?;
        progress.add_bytes(size);
        return Ok(());
    }
    // Blocks are read in order (for the MD5) and sent several at a time.
    let upload_id = format!("{:016x}", rand_id());
    let blocks = size.div_ceil(bs);
    let mut ids = Vec::with_capacity(blocks as usize);
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..blocks {
        let permit = slots.clone().acquire_owned().await?;
        let (off, len) = (i * bs, bs.min(size - i * bs));
        let data = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || read_at(&file, len, off)).await??
        };
        md5.update(&data);
        use base64::Engine;
        let id = base64::engine::general_purpose::STANDARD.encode(format!("{upload_id}-{i:08}"));
        ids.push(id.clone());
        let (store, key, progress) = (store.clone(), f.rel.clone(), progress.clone());
        sends.spawn(async move {
            let _permit = permit;
            store.put_block(&key, &id, Bytes::from(data)).await?;
            progress.add_bytes(len);
            Ok::<(), StoreError>(())
        });
        // Surface a failure early instead of reading the rest of a large file for nothing.
        while let Some(r) = sends.try_join_next() {
            r??;
        }
    }
    while let Some(r) = sends.join_next().await {
        r??;
    }
    let opts = PutOptions {
        content_md5: Some(md5.finalize().into()),
        metadata,
    };
    store.commit_blocks(&f.rel, &ids, &opts).await?;
    Ok(())
}

/// A random-enough id for one upload's block names.
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

pub fn run(args: &TransferArgs) -> Result<()> {
    let src = std::path::Path::new(&args.src);
    let filter = tree::Filter::new(&args.include, &args.exclude)?;
    let files = tree::local_files(src, &filter)?;
    let block_size = crate::config::block_size(args.block_size.as_deref())?;
    let (rt, store, shown) = super::open_lake(&args.dest, args)?;
    let started = std::time::Instant::now();
    let r = rt.block_on(upload(
        store,
        files,
        args.threads,
        block_size,
        args.overwrite,
    ))?;
    r.finish(
        "uploaded",
        &format!("to {shown}"),
        started,
        " to upload (the lake holds their previous version, if any; rerun to retry)",
    )
}
