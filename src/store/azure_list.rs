//! Parsing of Azure's List Blobs response (`restype=container&comp=list`).
//! object_store's own listing rejects a whole page when one blob name is not a valid
//! object_store path (`a//b`) and drops blob metadata, so lakemount parses the XML itself.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Deserialize;

use super::{ListPage, ObjectInfo};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnumerationResults {
    #[serde(default)]
    blobs: Blobs,
    #[serde(default)]
    next_marker: Option<String>,
}

#[derive(Default, Deserialize)]
struct Blobs {
    #[serde(rename = "$value", default)]
    items: Vec<Item>,
}

#[derive(Deserialize)]
enum Item {
    Blob(Blob),
    BlobPrefix(Prefix),
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Prefix {
    name: Name,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Blob {
    name: Name,
    properties: Properties,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
}

/// Names with characters XML cannot carry come percent-encoded, flagged `Encoded="true"`.
#[derive(Deserialize)]
struct Name {
    #[serde(rename = "@Encoded", default)]
    encoded: Option<String>,
    #[serde(rename = "$text", default)]
    text: String,
}

impl Name {
    fn decode(self) -> String {
        if self
            .encoded
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("true"))
        {
            percent_encoding::percent_decode_str(&self.text)
                .decode_utf8_lossy()
                .into_owned()
        } else {
            self.text
        }
    }
}

#[derive(Deserialize)]
struct Properties {
    #[serde(rename = "Last-Modified")]
    last_modified: String,
    #[serde(rename = "Etag")]
    etag: String,
    #[serde(rename = "Content-Length")]
    content_length: u64,
    #[serde(rename = "ResourceType", default)]
    resource_type: Option<String>,
    #[serde(rename = "Content-MD5", default)]
    content_md5: Option<String>,
}

/// The XML deserializer drops text that is only whitespace, which would turn a blob named
/// " " into "": such names are rewritten into the percent-encoded form Azure itself uses for
/// names XML cannot carry, which `Name::decode` undoes.
fn protect_blank_names(xml: &str) -> std::borrow::Cow<'_, str> {
    const OPEN: &str = "<Name>";
    const CLOSE: &str = "</Name>";
    let blank = |t: &str| !t.is_empty() && t.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
    let mut out = String::new();
    let mut rest = xml;
    let mut changed = false;
    while let Some(start) = rest.find(OPEN) {
        let body = &rest[start + OPEN.len()..];
        let Some(end) = body.find(CLOSE) else { break };
        let text = &body[..end];
        out.push_str(&rest[..start]);
        if blank(text) {
            changed = true;
            let enc: String = text.bytes().map(|b| format!("%{b:02X}")).collect();
            out.push_str(&format!("<Name Encoded=\"true\">{enc}"));
        } else {
            out.push_str(OPEN);
            out.push_str(text);
        }
        out.push_str(CLOSE);
        rest = &body[end + CLOSE.len()..];
    }
    if !changed {
        return std::borrow::Cow::Borrowed(xml);
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Listings carry ETags bare (`0x8DC…`), HEAD responses quoted (`"0x8DC…"`): one form for
/// both, so a block cached under one is found under the other.
pub fn quoted_etag(e: &str) -> String {
    format!("\"{}\"", e.trim().trim_matches('"'))
}

/// Parses an RFC 1123 date as Azure sends it (`Wed, 25 Nov 2026 03:39:11 GMT`).
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc2822(s)
        .ok()
        .map(SystemTime::from)
}

/// Converts one List Blobs response into a page of keys relative to `root` (the lake
/// URL's prefix, `""` or ending in `/`). Entries outside `root` are dropped.
pub fn parse(xml: &str, root: &str) -> Result<ListPage, String> {
    let xml = protect_blank_names(xml);
    let res: EnumerationResults =
        quick_xml::de::from_str(&xml).map_err(|e| format!("unexpected listing response: {e}"))?;
    let mut page = ListPage {
        next: res.next_marker.filter(|m| !m.is_empty()),
        ..ListPage::default()
    };
    for item in res.blobs.items {
        match item {
            Item::Blob(b) => {
                let name = b.name.decode();
                let Some(key) = name.strip_prefix(root) else {
                    continue;
                };
                let is_folder = b.metadata.as_ref().is_some_and(|m| {
                    m.iter().any(|(k, v)| {
                        k.eq_ignore_ascii_case("hdi_isfolder") && v.eq_ignore_ascii_case("true")
                    })
                }) || b.properties.resource_type.as_deref() == Some("directory");
                page.objects.push(ObjectInfo {
                    key: key.to_string(),
                    size: b.properties.content_length,
                    mtime: parse_http_date(&b.properties.last_modified)
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    etag: quoted_etag(&b.properties.etag),
                    is_dir_marker: is_folder,
                    content_md5: b.properties.content_md5.filter(|m| !m.is_empty()),
                    metadata: crate::store::user_metadata(
                        b.metadata
                            .iter()
                            .flatten()
                            .map(|(k, v)| (k.as_str(), v.as_str())),
                    ),
                });
            }
            Item::BlobPrefix(p) => {
                let name = p.name.decode();
                if let Some(key) = name.strip_prefix(root) {
                    page.prefixes.push(key.to_string());
                }
            }
            Item::Other => {}
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="c">
  <Prefix>data/</Prefix><Delimiter>/</Delimiter>
  <Blobs>
    <Blob><Name>data/a&amp;b.txt</Name><Properties><Last-Modified>Wed, 25 Nov 2026 03:39:11 GMT</Last-Modified><Etag>0x8DC1</Etag><Content-Length>42</Content-Length><BlobType>BlockBlob</BlobType></Properties><Metadata /></Blob>
    <BlobPrefix><Name>data/sub/</Name></BlobPrefix>
    <Blob><Name>data/empty</Name><Properties><Last-Modified>Wed, 25 Nov 2026 03:39:11 GMT</Last-Modified><Etag>"0x8DC2"</Etag><Content-Length>0</Content-Length></Properties><Metadata><hdi_isfolder>true</hdi_isfolder></Metadata></Blob>
    <Blob><Name Encoded="true">data/odd%EF%BF%BE</Name><Properties><Last-Modified>Wed, 25 Nov 2026 03:39:11 GMT</Last-Modified><Etag>e3</Etag><Content-Length>1</Content-Length></Properties></Blob>
    <BlobPrefix><Name>data//</Name></BlobPrefix>
  </Blobs>
  <NextMarker>2!abc</NextMarker>
</EnumerationResults>"#;

    #[test]
    fn parses_interleaved_blobs_prefixes_markers_and_encoded_names() {
        let page = parse(SAMPLE, "data/").unwrap();
        let keys: Vec<_> = page
            .objects
            .iter()
            .map(|o| (o.key.as_str(), o.size, o.is_dir_marker))
            .collect();
        assert_eq!(
            keys,
            [
                ("a&b.txt", 42, false),
                ("empty", 0, true),
                ("odd\u{FFFE}", 1, false)
            ]
        );
        assert_eq!(page.prefixes, ["sub/", "/"]);
        assert_eq!(page.next.as_deref(), Some("2!abc"));
        assert_eq!(page.objects[0].etag, "\"0x8DC1\"");
        assert_eq!(
            page.objects[1].etag, "\"0x8DC2\"",
            "already quoted stays as is"
        );
        let t = page.objects[0]
            .mtime
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(t.as_secs(), 1_795_577_951);
    }

    #[test]
    fn empty_listing_has_no_next_page() {
        let xml = r#"<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>"#;
        let page = parse(xml, "").unwrap();
        assert!(page.objects.is_empty() && page.prefixes.is_empty() && page.next.is_none());
    }

    #[test]
    fn names_keep_leading_and_trailing_spaces() {
        let xml = "<EnumerationResults><Blobs><Blob><Name>  two spaces </Name><Properties><Last-Modified>Wed, 25 Nov 2026 03:39:11 GMT</Last-Modified><Etag>0x1</Etag><Content-Length>7</Content-Length></Properties></Blob></Blobs></EnumerationResults>";
        let page = super::parse(xml, "").unwrap();
        assert_eq!(page.objects[0].key, "  two spaces ");
    }

    #[test]
    fn names_of_only_spaces_survive() {
        let blob = |n: &str| {
            format!("<Blob><Name>{n}</Name><Properties><Last-Modified>Wed, 25 Nov 2026 03:39:11 GMT</Last-Modified><Etag>0x1</Etag><Content-Length>1</Content-Length></Properties></Blob>")
        };
        let xml = format!(
            "<EnumerationResults><Blobs>{}{}<BlobPrefix><Name>d/  /</Name></BlobPrefix></Blobs></EnumerationResults>",
            blob(" "),
            blob("d/ ")
        );
        let page = parse(&xml, "").unwrap();
        let keys: Vec<_> = page.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, [" ", "d/ "]);
        assert_eq!(page.prefixes, ["d/  /"]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse("<nope", "").is_err());
        assert!(parse("", "").is_err());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn escape(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    }

    proptest! {
        #[test]
        fn any_response_parses_or_fails_cleanly(s in ".{0,400}") {
            let _ = parse(&s, "");
        }

        #[test]
        fn listed_names_come_back_exactly(
            names in proptest::collection::vec("[^\u{0}-\u{1f}\u{fffe}\u{ffff}]{1,40}", 0..20),
            prefixes in proptest::collection::vec("[a-z/ &<>]{1,20}/", 0..5),
        ) {
            let mut xml = String::from("<EnumerationResults><Blobs>");
            for n in &names {
                xml += &format!(
                    "<Blob><Name>{}</Name><Properties><Last-Modified>Wed, 25 Nov 2026 03:39:11 GMT</Last-Modified><Etag>0x1</Etag><Content-Length>7</Content-Length></Properties></Blob>",
                    escape(n)
                );
            }
            for p in &prefixes {
                xml += &format!("<BlobPrefix><Name>{}</Name></BlobPrefix>", escape(p));
            }
            xml += "</Blobs><NextMarker/></EnumerationResults>";
            let page = parse(&xml, "").unwrap();
            let got: Vec<_> = page.objects.iter().map(|o| o.key.clone()).collect();
            prop_assert_eq!(got, names);
            prop_assert_eq!(page.prefixes, prefixes);
        }
    }
}
