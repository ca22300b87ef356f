//! Server-side moves: Copy Blob, and the Data Lake endpoint's atomic rename with the
//! question that decides whether it can be used (is the account hierarchical?).

use std::time::Duration;

use http::Method;

use super::{AzureStore, Call, HttpResponse};
use crate::store::{Store, StoreError, StoreResult};

impl AzureStore {
    /// Copy Blob of `from` onto `to`; with `etag`, only while `from` is that version.
    pub(super) async fn copy_if(
        &self,
        from: &str,
        etag: Option<&str>,
        to: &str,
    ) -> StoreResult<()> {
        let mut call = Call::new(Method::PUT, self.blob_url(to))
            .header("x-ms-copy-source", self.blob_url(from).to_string());
        if let Some(etag) = etag {
            call = call.header("x-ms-source-if-match", etag.to_string());
        }
        call.source_header = Some("x-ms-copy-source");
        let resp = self.call(call).await?;
        let status = |r: &HttpResponse| {
            r.headers()
                .get("x-ms-copy-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("success")
                .to_string()
        };
        let mut state = status(&resp);
        // Copies within an account are usually done at once; a pending one is polled, within
        // the data deadline the whole copy has (see `deadline`).
        let deadline = std::time::Instant::now() + self.deadlines.data;
        while state == "pending" && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            state = status(&self.send(Method::HEAD, self.blob_url(to)).await?);
        }
        match state.as_str() {
            "success" => Ok(()),
            other => Err(StoreError::Other(format!(
                "copy of {from} to {to} ended {other:?}"
            ))),
        }
    }

    pub(super) async fn ask_hierarchical(&self) -> bool {
        // Get Account Information. A definite answer is kept; a failed call is not, so a
        // network blip at the first rename does not make a hierarchical account flat for good.
        let ask = || async {
            let mut url = self.container_url.clone();
            url.path_segments_mut().expect("http url").pop();
            url.query_pairs_mut()
                .append_pair("restype", "account")
                .append_pair("comp", "properties");
            match self.send(Method::HEAD, url).await {
                Ok(r) => Ok(r
                    .headers()
                    .get("x-ms-is-hns-enabled")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"))),
                // Not allowed to ask (a container SAS): an answer too, and the safe one.
                Err(StoreError::Denied(_)) => Ok(false),
                Err(e) => Err(e),
            }
        };
        match self.hns.get_or_try_init(ask).await {
            Ok(h) => *h,
            Err(e) => {
                tracing::warn!("cannot tell whether the account is hierarchical ({e}): treating it as flat for now");
                false
            }
        }
    }

    pub(super) async fn dfs_rename(&self, from: &str, to: &str) -> StoreResult<()> {
        if !self.hierarchical().await {
            return Err(StoreError::Unsupported(format!(
                "rename of {from}: the account has no hierarchical namespace"
            )));
        }
        // The Data Lake endpoint renames files and whole directories in one atomic call.
        let mut url = self.blob_url(to);
        if let Some(host) = url.host_str().map(|h| h.replacen(".blob.", ".dfs.", 1)) {
            url.set_host(Some(&host))
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
        }
        let source = self.blob_url(from).path().to_string();
        let mut call = Call::new(Method::PUT, url).header("x-ms-rename-source", source);
        call.source_header = Some("x-ms-rename-source");
        match self.call(call).await {
            // A try whose answer was lost did the rename; the retry finds no source. The
            // caller saw the source a moment ago, so a source gone and a target there is
            // that rename done.
            Err(StoreError::NotFound(e)) => {
                let moved = self.head(from).await?.is_none()
                    && (self.head(to).await?.is_some()
                        || self.dir_exists(&format!("{to}/")).await?);
                if moved {
                    Ok(())
                } else {
                    Err(StoreError::NotFound(e))
                }
            }
            r => r.map(|_| ()),
        }
    }
}
