//! Azure Blob Storage / ADLS Gen2 backend.
//!
//! Data (ranged GETs, deletes, later uploads) goes through object_store's `MicrosoftAzure`,
//! which also resolves every credential kind (key, SAS, managed identity, service principal,
//! workload identity, Azure CLI). Listings and HEADs are sent here as REST calls signed with
//! the same credential, because object_store drops blob metadata (`hdi_isfolder` directory
//! markers) and fails a whole listing page on names it cannot represent.

use std::fmt;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use http::{Method, Request, StatusCode};
use object_store::azure::{AzureAuthorizer, AzureConfigKey, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::client::{
    HttpClient, HttpConnector, HttpRequestBody, HttpResponse, ReqwestConnector,
};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, RetryConfig};
use url::Url;

pub use super::azure_auth::{AuthMethod, ConnectionString};
use super::deadline::Deadlines;
use super::Metadata;

mod blocklist;
mod moves;
use super::{
    azure_list, md5_base64, retry, Committed, ListPage, ObjectInfo, PutOptions, Store, StoreError,
    StoreResult,
};

/// One REST call: method, URL, extra headers and body.
#[derive(Clone)]
struct Call {
    method: Method,
    url: Url,
    headers: Vec<(std::borrow::Cow<'static, str>, String)>,
    body: Bytes,
    /// A header naming a source object (`x-ms-copy-source`, `x-ms-rename-source`): a SAS the
    /// credential adds to this request's URL must be added to the source as well.
    source_header: Option<&'static str>,
}

impl Call {
    fn new(method: Method, url: Url) -> Self {
        Call {
            method,
            url,
            headers: Vec::new(),
            body: Bytes::new(),
            source_header: None,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A user metadata header, `x-ms-meta-NAME`.
    fn meta(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((format!("x-ms-meta-{name}").into(), value.to_string()));
        self
    }

    fn body(mut self, body: Bytes) -> Self {
        self.body = body;
        self
    }
}

/// Everything needed to reach one container (and prefix) of one account.
#[derive(Clone, Debug, Default)]
pub struct AzureTarget {
    pub account: String,
    pub container: String,
    /// `""` or a prefix ending in `/`.
    pub prefix: String,
    /// Blob service endpoint (`http://127.0.0.1:10000/devstoreaccount1` for Azurite);
    /// default `https://ACCOUNT.blob.core.windows.net`.
    pub endpoint: Option<String>,
    pub auth: AuthMethod,
    /// The SAS of a SAS URL: used instead of whatever the environment holds.
    pub sas: Option<crate::lake_url::Sas>,
    /// How long calls may take; each attempt gets a third (see [`Deadlines::attempt`]).
    pub deadlines: Deadlines,
}

pub struct AzureStore {
    os: MicrosoftAzure,
    http: HttpClient,
    container_url: Url,
    account: String,
    container: String,
    prefix: String,
    hns: tokio::sync::OnceCell<bool>,
    /// The `se=` (expiry) of the SAS in use, if one is: a refusal then says whether it expired.
    sas_expiry: Option<String>,
    deadlines: Deadlines,
}

impl fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

fn config_err(e: impl fmt::Display) -> StoreError {
    StoreError::Invalid(e.to_string())
}

impl AzureStore {
    /// Builds the client from `target` plus the standard environment
    /// (`AZURE_STORAGE_CONNECTION_STRING`, `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_TOKEN`,
    /// `AZURE_CLIENT_ID`/`AZURE_TENANT_ID`/`AZURE_CLIENT_SECRET`, `AZURE_FEDERATED_TOKEN_FILE`, ...).
    pub fn new(target: AzureTarget) -> StoreResult<Self> {
        let mut b = MicrosoftAzureBuilder::from_env();
        let mut endpoint = target.endpoint.clone();
        if let Ok(cs) = std::env::var("AZURE_STORAGE_CONNECTION_STRING") {
            let cs = ConnectionString::parse(&cs).map_err(config_err)?;
            let same_account = cs
                .account_name
                .as_deref()
                .is_none_or(|a| a == target.account);
            if same_account {
                if let Some(k) = cs.account_key {
                    b = b.with_access_key(k);
                }
                if let Some(s) = cs.sas {
                    b = b.with_config(AzureConfigKey::SasKey, s);
                }
                if endpoint.is_none() {
                    endpoint = cs.blob_endpoint;
                }
            }
        }
        let endpoint = endpoint
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("https://{}.blob.core.windows.net", target.account));
        let endpoint_url =
            Url::parse(&endpoint).map_err(|e| config_err(format!("endpoint {endpoint:?}: {e}")))?;
        if !matches!(endpoint_url.scheme(), "http" | "https") {
            return Err(config_err(format!(
                "endpoint {endpoint:?} must be an http:// or https:// URL"
            )));
        }
        let allow_http = endpoint_url.scheme() == "http";
        b = b
            .with_account(&target.account)
            .with_container_name(&target.container)
            .with_endpoint(endpoint.clone())
            .with_allow_http(allow_http);
        if let Some(sas) = &target.sas {
            if !matches!(target.auth, AuthMethod::Auto | AuthMethod::Sas) {
                return Err(config_err(
                    "the lake URL carries a SAS, and --auth names another credential: \
                     drop one of them",
                ));
            }
            b = b
                .with_config(AzureConfigKey::SasKey, sas.token())
                .with_credential_type("sas_token");
        } else if let Some(t) = target.auth.credential_type() {
            b = b.with_credential_type(t);
        }
        let sas_expiry = b
            .get_config_value(&AzureConfigKey::SasKey)
            .and_then(|sas| sas_expiry(&sas));
        // Attempts that fit the deadlines (the deadline wrapper cuts off whatever is left).
        let attempt = Deadlines::attempt(target.deadlines.data);
        let options = ClientOptions::new()
            .with_allow_http(allow_http)
            .with_connect_timeout(Duration::from_secs(10).min(attempt))
            .with_timeout(attempt);
        let os = b
            .with_client_options(options.clone())
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: retry::ATTEMPTS as usize - 1,
                retry_timeout: target.deadlines.data,
            })
            .build()
            .map_err(|e| config_err(e.to_string()))?;
        let http = ReqwestConnector::default()
            .connect(&options)
            .map_err(|e| config_err(e.to_string()))?;
        let mut container_url = endpoint_url;
        container_url
            .path_segments_mut()
            .map_err(|_| config_err(format!("endpoint {endpoint:?} cannot be a base URL")))?
            .pop_if_empty()
            .push(&target.container);
        Ok(AzureStore {
            os,
            http,
            container_url,
            account: target.account,
            container: target.container,
            prefix: target.prefix,
            hns: tokio::sync::OnceCell::new(),
            sas_expiry,
            deadlines: target.deadlines,
        })
    }

    fn blob_url(&self, key: &str) -> Url {
        let mut url = self.container_url.clone();
        let full = format!("{}{key}", self.prefix);
        url.path_segments_mut()
            .expect("http url")
            .extend(full.split('/'));
        url
    }

    fn list_url(&self, prefix: &str, marker: Option<&str>, max: u32) -> Url {
        let mut url = self.container_url.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("restype", "container")
                .append_pair("comp", "list")
                .append_pair("delimiter", "/")
                .append_pair("include", "metadata")
                .append_pair("maxresults", &max.to_string())
                .append_pair("prefix", &format!("{}{prefix}", self.prefix));
            if let Some(m) = marker {
                q.append_pair("marker", m);
            }
        }
        url
    }

    /// Where a request went, for messages: never the query string (a SAS lives there).
    fn where_(&self, url: &Url) -> String {
        let mut shown = url.clone();
        shown.set_query(None);
        shown.to_string()
    }

    /// Sends one signed request, retrying transient failures (see [`retry`]); other
    /// non-success statuses become [`StoreError`]s at once.
    async fn send(&self, method: Method, url: Url) -> StoreResult<HttpResponse> {
        self.call(Call::new(method, url)).await
    }

    async fn call(&self, call: Call) -> StoreResult<HttpResponse> {
        let mut attempt = 0;
        // Uploads carry a body and get a data attempt; everything else is metadata.
        let total = if call.body.is_empty() {
            self.deadlines.metadata
        } else {
            self.deadlines.data
        };
        let limit = Deadlines::attempt(total);
        loop {
            let once = tokio::time::timeout(limit, self.send_once(&call))
                .await
                .unwrap_or_else(|_| {
                    let what = self.where_(&call.url);
                    let err = StoreError::Unreachable(format!(
                        "{what}: no answer within {}",
                        super::deadline::shown(limit)
                    ));
                    Err((err, Some(None)))
                });
            match once {
                Ok(resp) => return Ok(resp),
                Err((err, Some(after))) if attempt + 1 < retry::ATTEMPTS => {
                    let wait = retry::delay(attempt, after, retry::jitter());
                    tracing::debug!("retrying in {wait:?}: {err}");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err((err, _)) => return Err(err),
            }
        }
    }

    /// One attempt. On failure, `Some(retry_after)` marks it worth retrying.
    async fn send_once(
        &self,
        call: &Call,
    ) -> Result<HttpResponse, (StoreError, Option<Option<Duration>>)> {
        let url = &call.url;
        let cred = self.os.credentials().get_credential().await.map_err(|e| {
            (
                StoreError::Denied(format!("could not obtain a credential: {e}")),
                None,
            )
        })?;
        let bad = |e: String| (StoreError::Invalid(e), None);
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(url.as_str())
            .body(HttpRequestBody::from(call.body.clone()))
            .map_err(|e| bad(e.to_string()))?;
        let headers = req.headers_mut();
        if call.method == Method::PUT {
            // The Shared Key signature covers Content-Length, so it must be set before signing.
            headers.insert(CONTENT_LENGTH, HeaderValue::from(call.body.len()));
        }
        for (name, value) in &call.headers {
            let value = HeaderValue::from_str(value).map_err(|e| bad(format!("{name}: {e}")))?;
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| bad(format!("header {name}: {e}")))?;
            headers.insert(name, value);
        }
        AzureAuthorizer::new(&cred, &self.account)
            .try_authorize(&mut req)
            .map_err(|e| {
                (
                    StoreError::Denied(format!("could not sign the request: {e}")),
                    None,
                )
            })?;
        if let (Some(name), Some(sas)) = (call.source_header, req.uri().query()) {
            // A SAS credential was added to this request's URL (our own calls with a source
            // carry no query): the source needs it too. Shared Key requests have no query.
            let sas = sas.to_string();
            if let Some(v) = req.headers_mut().get_mut(name) {
                let with_sas = format!("{}?{sas}", v.to_str().unwrap_or_default());
                *v = HeaderValue::from_str(&with_sas).map_err(|e| bad(e.to_string()))?;
            }
        }
        let resp = self.http.execute(req).await.map_err(|e| {
            let err = StoreError::Unreachable(format!("{}: {e}", self.where_(url)));
            (err, Some(None))
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
        let code = header("x-ms-error-code").unwrap_or("").to_string();
        let retry = retry::retryable_status(resp.status().as_u16())
            .then(|| retry::parse_retry_after(header("retry-after")));
        Err((
            self.status_error(resp.status(), &code, &self.where_(url)),
            retry,
        ))
    }

    fn status_error(&self, status: StatusCode, code: &str, what: &str) -> StoreError {
        let detail = if code.is_empty() {
            format!("HTTP {status} from {what}")
        } else {
            format!("{code} (HTTP {}) from {what}", status.as_u16())
        };
        match status {
            StatusCode::NOT_FOUND if code == "ContainerNotFound" => {
                StoreError::NoContainer(format!(
                    "container {:?} does not exist in account {:?}",
                    self.container, self.account
                ))
            }
            StatusCode::NOT_FOUND => StoreError::NotFound(detail),
            StatusCode::PRECONDITION_FAILED => StoreError::Changed(detail),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => self.denied(detail),
            StatusCode::BAD_REQUEST if code == "InvalidBlockList" => {
                StoreError::BlocksMissing(detail)
            }
            StatusCode::BAD_REQUEST => StoreError::Invalid(detail),
            s if retry::retryable_status(s.as_u16()) => StoreError::Busy(detail, None),
            _ => StoreError::Other(detail),
        }
    }

    async fn list(&self, prefix: &str, marker: Option<String>, max: u32) -> StoreResult<ListPage> {
        let url = self.list_url(prefix, marker.as_deref(), max);
        let mut attempt = 0;
        // A body cut short is tried again like a failed request (the deadline wrapper
        // bounds the whole).
        let body = loop {
            let resp = self.send(Method::GET, url.clone()).await?;
            match resp.into_body().bytes().await {
                Ok(body) => break body,
                Err(e) if attempt + 1 < retry::ATTEMPTS => {
                    tracing::debug!("retrying a listing whose body was cut short: {e}");
                    tokio::time::sleep(retry::delay(attempt, None, retry::jitter())).await;
                    attempt += 1;
                }
                Err(e) => return Err(StoreError::Unreachable(format!("reading a listing: {e}"))),
            }
        };
        let text = String::from_utf8_lossy(&body);
        azure_list::parse(&text, &self.prefix).map_err(StoreError::Other)
    }

    fn object_path(&self, key: &str) -> StoreResult<ObjectPath> {
        let full = format!("{}{key}", self.prefix);
        ObjectPath::parse(&full).map_err(|e| StoreError::Invalid(format!("{full:?}: {e}")))
    }
}

/// The new version a successful write reports.
fn committed(resp: HttpResponse) -> StoreResult<Committed> {
    let h = resp.headers();
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    Ok(Committed {
        etag: azure_list::quoted_etag(get("etag").unwrap_or_default()),
        mtime: get("last-modified")
            .and_then(azure_list::parse_http_date)
            .unwrap_or_else(SystemTime::now),
    })
}

impl AzureStore {
    fn map_os_error(&self, key: &str, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound(key.to_string()),
            object_store::Error::Precondition { .. } => StoreError::Changed(key.to_string()),
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => self.denied(format!("{key}: {e}")),
            other => StoreError::Other(format!("{key}: {other}")),
        }
    }

    /// A refusal, saying so when the SAS in use has expired (the service only says 403).
    fn denied(&self, detail: String) -> StoreError {
        let Some(se) = &self.sas_expiry else {
            return StoreError::Denied(detail);
        };
        let expired = chrono::DateTime::parse_from_rfc3339(se)
            .map(|t| t.with_timezone(&chrono::Utc))
            .or_else(|_| {
                chrono::NaiveDate::parse_from_str(se, "%Y-%m-%d")
                    .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
            })
            .is_ok_and(|t| t <= chrono::Utc::now());
        StoreError::Denied(if expired {
            format!("{detail}; the SAS expired at {se}: make a new one (AZURE_STORAGE_SAS_TOKEN)")
        } else {
            format!("{detail}; with a SAS valid until {se}: check its permissions (sp=) and scope")
        })
    }
}

/// The expiry (`se=`) of a SAS token, percent-decoded; the rest of the token stays unread.
fn sas_expiry(sas: &str) -> Option<String> {
    sas.trim_start_matches('?')
        .split('&')
        .find_map(|kv| kv.strip_prefix("se="))
        .and_then(|v| percent_encoding::percent_decode_str(v).decode_utf8().ok())
        .map(|v| v.into_owned())
}

#[async_trait]
impl Store for AzureStore {
    fn describe(&self) -> String {
        format!("az://{}/{}/{}", self.account, self.container, self.prefix)
            .trim_end_matches('/')
            .to_string()
    }

    async fn list_page(&self, prefix: &str, marker: Option<String>) -> StoreResult<ListPage> {
        self.list(prefix, marker, 5000).await
    }

    async fn head(&self, key: &str) -> StoreResult<Option<ObjectInfo>> {
        let resp = match self.send(Method::HEAD, self.blob_url(key)).await {
            Ok(r) => r,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let h = resp.headers();
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        let is_dir_marker = get("x-ms-meta-hdi_isfolder")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || get("x-ms-resource-type") == Some("directory");
        Ok(Some(ObjectInfo {
            key: key.to_string(),
            size: get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            mtime: get("last-modified")
                .and_then(azure_list::parse_http_date)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            etag: azure_list::quoted_etag(get("etag").unwrap_or_default()),
            is_dir_marker,
            content_md5: get("content-md5").map(str::to_string),
            metadata: crate::store::user_metadata(h.iter().filter_map(|(k, v)| {
                Some((k.as_str().strip_prefix("x-ms-meta-")?, v.to_str().ok()?))
            })),
        }))
    }

    async fn get_range(&self, key: &str, range: Range<u64>, etag: &str) -> StoreResult<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let opts = GetOptions::new()
            .with_range(Some(GetRange::Bounded(range)))
            .with_if_match(Some(etag));
        let res = self
            .os
            .get_opts(&self.object_path(key)?, opts)
            .await
            .map_err(|e| self.map_os_error(key, e))?;
        // Not trusting the service to honour If-Match (a proxy or cache may drop it): bytes of
        // another version are never handed out.
        let got = res.meta.e_tag.as_deref().map(bare_etag);
        if got.is_some_and(|g| g != bare_etag(etag)) {
            return Err(StoreError::Changed(format!(
                "{key}: the lake answered another version than the one open"
            )));
        }
        res.bytes().await.map_err(|e| self.map_os_error(key, e))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        // Delete Blob itself: object_store sends a Blob Batch, which some endpoints (Azurite
        // under a SAS) refuse with 500.
        self.call(Call::new(Method::DELETE, self.blob_url(key)))
            .await
            .map(|_| ())
    }

    async fn put_block(&self, key: &str, block_id: &str, data: Bytes) -> StoreResult<()> {
        let mut url = self.blob_url(key);
        url.query_pairs_mut()
            .append_pair("comp", "block")
            .append_pair("blockid", block_id);
        self.call(Call::new(Method::PUT, url).body(data)).await?;
        Ok(())
    }

    async fn commit_blocks(
        &self,
        key: &str,
        blocks: &[String],
        opts: &PutOptions,
    ) -> StoreResult<Committed> {
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
        for id in blocks {
            // Block ids are base64: no character needs XML escaping.
            xml.push_str(&format!("<Latest>{id}</Latest>"));
        }
        xml.push_str("</BlockList>");
        let mut url = self.blob_url(key);
        url.query_pairs_mut().append_pair("comp", "blocklist");
        let mut call = Call::new(Method::PUT, url)
            .header("content-type", "application/xml")
            .body(Bytes::from(xml));
        if let Some(md5) = &opts.content_md5 {
            call = call.header("x-ms-blob-content-md5", md5_base64(md5));
        }
        for (k, v) in &opts.metadata {
            call = call.meta(k, v);
        }
        committed(self.call(call).await?)
    }

    fn keeps_committed_blocks(&self) -> bool {
        // Put Block List names blocks as `<Latest>`: staged, else committed.
        true
    }

    async fn committed_blocks(&self, key: &str) -> StoreResult<Option<super::BlockList>> {
        self.block_list(key).await
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> StoreResult<Committed> {
        let mut call = Call::new(Method::PUT, self.blob_url(key))
            .header("x-ms-blob-type", "BlockBlob")
            .body(data);
        if let Some(md5) = &opts.content_md5 {
            // Checked against the body by the service, and stored as the blob's Content-MD5.
            call = call.header("content-md5", md5_base64(md5));
        }
        for (k, v) in &opts.metadata {
            call = call.meta(k, v);
        }
        committed(self.call(call).await?)
    }

    async fn set_metadata(&self, key: &str, meta: &Metadata) -> StoreResult<Committed> {
        let mut url = self.blob_url(key);
        url.query_pairs_mut().append_pair("comp", "metadata");
        let mut call = Call::new(Method::PUT, url);
        for (k, v) in meta {
            call = call.meta(k, v);
        }
        committed(self.call(call).await?)
    }

    async fn make_dir(&self, key: &str, meta: &Metadata) -> StoreResult<()> {
        let mut call = Call::new(Method::PUT, self.blob_url(key))
            .header("x-ms-blob-type", "BlockBlob")
            .header("x-ms-meta-hdi_isfolder", "true");
        for (k, v) in meta {
            call = call.meta(k, v);
        }
        self.call(call).await.map(|_| ())
    }

    async fn remove_dir(&self, key: &str) -> StoreResult<()> {
        // Only a marker is removed: a file of the same name is not this directory.
        match self.head(key).await? {
            Some(h) if h.is_dir_marker => match self.delete(key).await {
                Err(StoreError::NotFound(_)) => Ok(()),
                r => r,
            },
            _ => Ok(()),
        }
    }

    async fn copy(&self, from: &str, to: &str) -> StoreResult<()> {
        self.copy_if(from, None, to).await
    }

    async fn copy_version(&self, from: &str, etag: &str, to: &str) -> StoreResult<ObjectInfo> {
        match self.copy_if(from, Some(etag), to).await {
            // 412: the source is no longer that version.
            Err(StoreError::Changed(_)) => return Err(StoreError::Changed(from.to_string())),
            r => r?,
        }
        self.head(to)
            .await?
            .ok_or_else(|| StoreError::NotFound(to.to_string()))
    }

    async fn hierarchical(&self) -> bool {
        self.ask_hierarchical().await
    }

    async fn rename(&self, from: &str, to: &str) -> StoreResult<()> {
        self.dfs_rename(from, to).await
    }

    async fn dir_exists(&self, prefix: &str) -> StoreResult<bool> {
        let page = self.list(prefix, None, PROBE_PAGE).await?;
        Ok(!page.objects.is_empty() || !page.prefixes.is_empty())
    }

    async fn probe(&self) -> StoreResult<()> {
        self.list("", None, PROBE_PAGE).await.map(|_| ())
    }
}

/// Page size of listings that only ask whether anything is there. Not 1: Azurite fills a page
/// listed with a delimiter by reading that many blobs at a time, so one entry a time below a
/// prefix of 10,000 blobs takes it longer than a metadata deadline; 100 costs the service
/// nothing more and keeps the answer small.
const PROBE_PAGE: u32 = 100;

/// An ETag without the quotes and weak marker headers carry (listings give it bare).
fn bare_etag(e: &str) -> &str {
    e.trim().trim_start_matches("W/").trim_matches('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_urls_keep_empty_segments_and_escape_the_rest() {
        let s = AzureStore::new(AzureTarget {
            deadlines: Deadlines::default(),
            account: "acct".into(),
            container: "data".into(),
            prefix: "p/".into(),
            endpoint: Some("http://127.0.0.1:1/acct".into()),
            auth: AuthMethod::ManagedIdentity,
            sas: None,
        })
        .unwrap();
        assert_eq!(
            s.blob_url("a//b c").as_str(),
            "http://127.0.0.1:1/acct/data/p/a//b%20c"
        );
        assert_eq!(s.describe(), "az://acct/data/p");
    }
}
