//! Bulk data movement between the lake and local disks, with progress reporting.

pub mod download;
pub mod progress;
pub mod tree;
pub mod upload;
pub mod warm;

use anyhow::{anyhow, Result};

use crate::cli::TransferArgs;
use crate::store::{self, DynStore};

/// The runtime and store of a transfer's lake side, checked to answer (clear errors for a
/// wrong endpoint, missing container or refused credentials before any work starts).
pub fn open_lake(
    url: &str,
    args: &TransferArgs,
) -> Result<(tokio::runtime::Runtime, DynStore, String)> {
    let lake = crate::lake_url::LakeUrl::parse(url).map_err(|e| anyhow!(e))?;
    let shown = lake.to_string();
    let rt = crate::mount::runtime()?;
    let store = {
        let _g = rt.enter();
        store::open(&lake, args.endpoint.clone(), args.auth.unwrap_or_default())
            .map_err(|e| crate::mount::explain_for("reach", &shown, e))?
    };
    rt.block_on(store.probe())
        .map_err(|e| crate::mount::explain_for("reach", &shown, e))?;
    Ok((rt, store, shown))
}
