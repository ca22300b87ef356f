//! Get Block List: the committed blocks of a block blob, so a commit that changes part of
//! an object (a live file committed again, an append) names the blocks it keeps instead of
//! sending their bytes again.

use http::Method;
use serde::Deserialize;

use super::{azure_list, AzureStore, Call};
use crate::store::{BlockList, StoreError, StoreResult};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Response {
    #[serde(default)]
    committed_blocks: Blocks,
}

#[derive(Default, Deserialize)]
struct Blocks {
    #[serde(rename = "Block", default)]
    blocks: Vec<Block>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Block {
    name: String,
    size: u64,
}

/// The committed blocks of one Get Block List answer; `None` when there are none.
pub(super) fn parse(etag: &str, xml: &str) -> StoreResult<Option<BlockList>> {
    let r: Response = quick_xml::de::from_str(xml)
        .map_err(|e| StoreError::Protocol(format!("unexpected block list: {e}")))?;
    let blocks: Vec<(String, u64)> = r
        .committed_blocks
        .blocks
        .into_iter()
        .map(|b| (b.name, b.size))
        .collect();
    Ok((!blocks.is_empty()).then(|| BlockList {
        etag: azure_list::quoted_etag(etag),
        blocks,
    }))
}

impl AzureStore {
    pub(super) async fn block_list(&self, key: &str) -> StoreResult<Option<BlockList>> {
        let mut url = self.blob_url(key);
        url.query_pairs_mut()
            .append_pair("comp", "blocklist")
            .append_pair("blocklisttype", "committed");
        let resp = match self.call(Call::new(Method::GET, url)).await {
            Err(StoreError::NotFound(_)) => return Ok(None),
            r => r?,
        };
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp
            .into_body()
            .bytes()
            .await
            .map_err(|e| StoreError::Unreachable(format!("reading a block list: {e}")))?;
        parse(&etag, &String::from_utf8_lossy(&body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_blocks_come_in_order_with_their_sizes() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><BlockList><CommittedBlocks><Block><Name>QUFB</Name><Size>8388608</Size></Block><Block><Name>QkJC</Name><Size>12</Size></Block></CommittedBlocks><UncommittedBlocks><Block><Name>Q0ND</Name><Size>1</Size></Block></UncommittedBlocks></BlockList>"#;
        let l = parse("\"0x8D\"", xml).unwrap().unwrap();
        assert_eq!(l.etag, "\"0x8D\"");
        assert_eq!(
            l.blocks,
            [("QUFB".to_string(), 8388608), ("QkJC".to_string(), 12)]
        );
        let empty =
            r#"<?xml version="1.0" encoding="utf-8"?><BlockList><CommittedBlocks /></BlockList>"#;
        assert_eq!(parse("\"x\"", empty).unwrap(), None);
        assert!(parse("\"x\"", "<nope").is_err());
    }
}
