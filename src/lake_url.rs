//! Lake URLs: where a lake lives.
//!
//! - `az://ACCOUNT/CONTAINER[/PREFIX]`
//! - `abfss://CONTAINER@ACCOUNT.dfs.core.windows.net[/PREFIX]` (also `abfs://`)
//! - `https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]` (also `.dfs.`), optionally
//!   with a SAS as its query (`?sv=...&sig=...`: the SAS URL the portal and azcopy hand out)
//! - `file:///PATH` — a local directory (the embedded default)

use std::fmt;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LakeUrl {
    Azure {
        account: String,
        container: String,
        /// `""` or ending in `/`.
        prefix: String,
        /// The SAS of a SAS URL: the lake's credential. Never displayed.
        sas: Option<Sas>,
    },
    Local {
        path: PathBuf,
    },
}

/// A shared access signature taken from a lake URL. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Sas(String);

impl Sas {
    /// The token itself, for the credential; nothing else may print it.
    pub fn token(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sas(not shown)")
    }
}

const FORMS: &str = "expected az://ACCOUNT/CONTAINER[/PREFIX], \
abfss://CONTAINER@ACCOUNT.dfs.core.windows.net[/PREFIX], \
https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX] or file:///PATH";

fn check_account(a: &str) -> Result<(), String> {
    let ok = (3..=24).contains(&a.len())
        && a.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid storage account name {a:?}: 3-24 lowercase letters and digits"
        ))
    }
}

fn check_container(c: &str) -> Result<(), String> {
    let ok = c == "$root"
        || ((3..=63).contains(&c.len())
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !c.starts_with('-')
            && !c.ends_with('-')
            && !c.contains("--"));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid container name {c:?}: 3-63 lowercase letters, digits and single hyphens"
        ))
    }
}

fn decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("{s:?} is not valid UTF-8 once percent-decoded"))
}

/// `a/b` -> `a/b/`; `` or `/` -> ``.
fn normalize_prefix(p: &str) -> Result<String, String> {
    let p = decode(p.trim_matches('/'))?;
    Ok(if p.is_empty() { p } else { format!("{p}/") })
}

impl LakeUrl {
    pub fn parse(s: &str) -> Result<LakeUrl, String> {
        let s = s.trim();
        if let Some((base, query)) = s.split_once('?') {
            // A SAS URL (https://ACCOUNT.blob.core.windows.net/CONTAINER?sv=...&sig=...) carries
            // the lake's credential; in any other form a query is most often a SAS pasted by
            // mistake. Either way it is never echoed back.
            let https = base
                .get(..8)
                .is_some_and(|p| p.eq_ignore_ascii_case("https://"));
            let signed = query.split('&').any(|kv| kv.starts_with("sig="));
            if https && signed {
                let mut url = LakeUrl::parse(base)?;
                if let LakeUrl::Azure { sas, .. } = &mut url {
                    *sas = Some(Sas(query.to_string()));
                }
                return Ok(url);
            }
            return Err(format!(
                "invalid lake URL {base:?} followed by a query string (not shown): only a SAS \
                 URL (https://ACCOUNT.blob.core.windows.net/CONTAINER?sv=...&sig=...) takes one; \
                 give a SAS in AZURE_STORAGE_SAS_TOKEN or a connection string otherwise \
                 (README: \"Credentials\")"
            ));
        }
        let bad = |why: &str| Err(format!("invalid lake URL {s:?}: {why}"));
        let Some((scheme, rest)) = s.split_once("://") else {
            return bad(FORMS);
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                if !rest.starts_with('/') {
                    return bad("file URLs need an absolute path: file:///PATH");
                }
                Ok(LakeUrl::Local {
                    path: PathBuf::from(decode(rest)?),
                })
            }
            "az" => {
                let mut parts = rest.splitn(3, '/');
                let account = parts.next().unwrap_or_default();
                let container = parts.next().unwrap_or_default();
                if account.is_empty() || container.is_empty() {
                    return bad("az URLs are az://ACCOUNT/CONTAINER[/PREFIX]");
                }
                Self::azure(account, container, parts.next().unwrap_or(""))
            }
            "abfs" | "abfss" => {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                let Some((container, host)) = authority.split_once('@') else {
                    return bad(
                        "abfss URLs are abfss://CONTAINER@ACCOUNT.dfs.core.windows.net[/PREFIX]",
                    );
                };
                let Some((account, _)) = host.split_once(".dfs.") else {
                    return bad("the host of an abfss URL is ACCOUNT.dfs.core.windows.net");
                };
                Self::azure(account, container, path)
            }
            "https" => {
                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                let account = host
                    .split_once(".blob.")
                    .or_else(|| host.split_once(".dfs."))
                    .map(|(a, _)| a);
                let Some(account) = account else {
                    return bad("https URLs are https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX]; for other endpoints (Azurite) use az://ACCOUNT/CONTAINER with --endpoint");
                };
                let (container, prefix) = path.split_once('/').unwrap_or((path, ""));
                if container.is_empty() {
                    return bad("the URL names no container");
                }
                Self::azure(account, container, prefix)
            }
            _ => bad(FORMS),
        }
    }

    /// The URL of the directory holding this one, and this one's last name; `None` at a
    /// container root or `/`.
    pub fn split_last(&self) -> Option<(LakeUrl, String)> {
        match self {
            LakeUrl::Azure {
                account,
                container,
                prefix,
                sas,
            } => {
                let trimmed = prefix.strip_suffix('/')?;
                let (parent, name) = match trimmed.rsplit_once('/') {
                    Some((p, n)) => (format!("{p}/"), n),
                    None => (String::new(), trimmed),
                };
                let parent = LakeUrl::Azure {
                    account: account.clone(),
                    container: container.clone(),
                    prefix: parent,
                    sas: sas.clone(),
                };
                Some((parent, name.to_string()))
            }
            LakeUrl::Local { path } => {
                let name = path.file_name()?.to_str()?.to_string();
                let parent = LakeUrl::Local {
                    path: path.parent()?.to_path_buf(),
                };
                Some((parent, name))
            }
        }
    }

    /// Gives an Azure lake without a SAS the one handed over apart from its URL (the mount
    /// daemon's, see `mount.rs`).
    pub fn adopt_sas(&mut self, token: String) {
        if let LakeUrl::Azure {
            sas: sas @ None, ..
        } = self
        {
            *sas = Some(Sas(token));
        }
    }

    fn azure(account: &str, container: &str, prefix: &str) -> Result<LakeUrl, String> {
        check_account(account)?;
        check_container(container)?;
        Ok(LakeUrl::Azure {
            account: account.to_string(),
            container: container.to_string(),
            prefix: normalize_prefix(prefix)?,
            sas: None,
        })
    }
}

impl fmt::Display for LakeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LakeUrl::Azure {
                account,
                container,
                prefix,
                ..
            } if prefix.is_empty() => write!(f, "az://{account}/{container}"),
            LakeUrl::Azure {
                account,
                container,
                prefix,
                ..
            } => write!(
                f,
                "az://{account}/{container}/{}",
                prefix.trim_end_matches('/')
            ),
            LakeUrl::Local { path } => write!(f, "file://{}", path.display()),
        }
    }
}

/// `text` with every URL query string (what follows a `?` up to the next space or quote, when
/// it holds a `=`) replaced by `(query not shown)`: error messages quote what the user gave,
/// and a SAS pasted anywhere (a flag of the wrong kind, a config value of the wrong type) must
/// not be printed back.
/// `text` on one line: line breaks (and other control characters) in values quoted back, such
/// as a path with a newline from a config file, shown escaped.
pub fn one_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

pub fn hide_queries(text: &str) -> String {
    let ends = |c: char| c.is_whitespace() || "'\"`),>]".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('?') {
        let (head, tail) = rest.split_at(at + 1);
        out.push_str(head);
        let len = tail.find(ends).unwrap_or(tail.len());
        if tail[..len].contains('=') {
            out.push_str("(query not shown)");
        } else {
            out.push_str(&tail[..len]);
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn one_line_escapes_line_breaks_and_keeps_the_rest() {
        assert_eq!(
            super::one_line("cannot read the manifest two\nlines: ü"),
            "cannot read the manifest two\\nlines: ü"
        );
        assert_eq!(super::one_line("a\rb\tc"), "a\\rb\\tc");
    }

    use super::*;

    #[test]
    fn queries_are_hidden_wherever_they_appear_and_plain_question_marks_stay() {
        for (text, want) in [
            (
                "invalid value 'az://a/b?sv=1&sig=S3CRET' for '--auth <AUTH>'",
                "invalid value 'az://a/b?(query not shown)' for '--auth <AUTH>'",
            ),
            (
                "line 1: invalid type: string \"https://a.blob.core.windows.net/c?sig=S3CRET\", expected",
                "line 1: invalid type: string \"https://a.blob.core.windows.net/c?(query not shown)\", expected",
            ),
            ("two: x?a=S3CRET y?b=S3CRET", "two: x?(query not shown) y?(query not shown)"),
            ("at the end ?sig=S3CRET", "at the end ?(query not shown)"),
            ("is this a question? yes", "is this a question? yes"),
            ("no query?", "no query?"),
        ] {
            assert_eq!(hide_queries(text), want);
            assert!(!hide_queries(text).contains("S3CRET"));
        }
    }

    fn az(a: &str, c: &str, p: &str) -> LakeUrl {
        LakeUrl::Azure {
            account: a.into(),
            container: c.into(),
            prefix: p.into(),
            sas: None,
        }
    }

    #[test]
    fn a_sas_url_gives_the_lake_and_its_sas_which_nothing_prints() {
        let url = "https://acct.blob.core.windows.net/data/train?sv=2024-01-01&sp=rl&se=2030-01-01&sig=S3CRET%3D";
        let lake = LakeUrl::parse(url).unwrap();
        let LakeUrl::Azure { sas: Some(sas), .. } = &lake else {
            panic!("{lake:?}");
        };
        assert_eq!(
            sas.token(),
            "sv=2024-01-01&sp=rl&se=2030-01-01&sig=S3CRET%3D"
        );
        assert_eq!(lake.to_string(), "az://acct/data/train");
        assert!(!format!("{lake:?} {lake}").contains("S3CRET"));
        let (parent, name) = lake.split_last().unwrap();
        assert_eq!(
            (parent.to_string(), name.as_str()),
            ("az://acct/data".into(), "train")
        );
        assert!(
            matches!(parent, LakeUrl::Azure { sas: Some(_), .. }),
            "the parent keeps it"
        );
        // Any other form, or a query that is not a SAS, is still refused without the query.
        for bad in [
            "az://acct/data?sv=1&sig=S3CRET",
            "abfss://data@acct.dfs.core.windows.net/p?sig=S3CRET",
            "https://acct.blob.core.windows.net/data?x=S3CRET",
            "file:///srv/lake?sig=S3CRET",
        ] {
            let err = LakeUrl::parse(bad).unwrap_err();
            assert!(err.contains("query string (not shown)"), "{bad}: {err}");
            assert!(!err.contains("S3CRET"), "{err}");
        }
    }

    #[test]
    fn accepts_every_documented_form() {
        assert_eq!(
            LakeUrl::parse("az://acct/data").unwrap(),
            az("acct", "data", "")
        );
        assert_eq!(
            LakeUrl::parse("az://acct/data/train/img/").unwrap(),
            az("acct", "data", "train/img/")
        );
        assert_eq!(
            LakeUrl::parse("abfss://data@acct.dfs.core.windows.net/train").unwrap(),
            az("acct", "data", "train/")
        );
        assert_eq!(
            LakeUrl::parse("https://acct.blob.core.windows.net/data/a%20b").unwrap(),
            az("acct", "data", "a b/")
        );
        assert_eq!(
            LakeUrl::parse("file:///srv/lake").unwrap(),
            LakeUrl::Local {
                path: PathBuf::from("/srv/lake")
            }
        );
    }

    #[test]
    fn rejects_malformed_urls_with_a_reason() {
        for bad in [
            "",
            "acct/data",
            "s3://bucket/x",
            "az://acct",
            "az://Acct/data",
            "az://acct/Data",
            "az://acct/a--b",
            "abfss://acct.dfs.core.windows.net/x",
            "https://example.com/data",
            "file://relative/path",
        ] {
            let err = LakeUrl::parse(bad).unwrap_err();
            assert!(err.contains("invalid"), "{bad:?}: {err}");
        }
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_input_parses_or_fails_cleanly(s in ".{0,200}") {
            let _ = LakeUrl::parse(&s);
        }

        #[test]
        fn azure_urls_survive_display_and_parse(
            account in "[a-z0-9]{3,24}",
            container in "[a-z0-9]([a-z0-9]|-[a-z0-9]){2,30}",
            prefix in "([a-zA-Z0-9_.]{1,8}/){0,3}",
        ) {
            let url = LakeUrl::parse(&format!("az://{account}/{container}/{prefix}")).unwrap();
            prop_assert_eq!(LakeUrl::parse(&url.to_string()).unwrap(), url);
        }
    }
}
