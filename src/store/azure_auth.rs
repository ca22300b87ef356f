//! Which Azure credential to use, and what a connection string holds.

/// How to authenticate; `Auto` tries, in order: bearer token, account key, workload identity,
/// service principal, SAS, then managed identity (object_store's resolution order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    #[default]
    Auto,
    Key,
    Sas,
    ManagedIdentity,
    ServicePrincipal,
    WorkloadIdentity,
    AzureCli,
}

impl AuthMethod {
    /// The names users write (flags, config files), in declaration order.
    pub const NAMES: [&'static str; 7] = [
        "auto",
        "key",
        "sas",
        "managed-identity",
        "service-principal",
        "workload-identity",
        "azure-cli",
    ];
    const ALL: [AuthMethod; 7] = [
        AuthMethod::Auto,
        AuthMethod::Key,
        AuthMethod::Sas,
        AuthMethod::ManagedIdentity,
        AuthMethod::ServicePrincipal,
        AuthMethod::WorkloadIdentity,
        AuthMethod::AzureCli,
    ];

    pub(super) fn credential_type(self) -> Option<&'static str> {
        match self {
            AuthMethod::Auto => None,
            AuthMethod::Key => Some("access_key"),
            AuthMethod::Sas => Some("sas_token"),
            AuthMethod::ManagedIdentity => Some("managed_identity"),
            AuthMethod::ServicePrincipal => Some("client_secret"),
            AuthMethod::WorkloadIdentity => Some("workload_identity"),
            AuthMethod::AzureCli => Some("azure_cli"),
        }
    }
}

impl std::str::FromStr for AuthMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| {
                format!(
                    "unknown auth method {s:?}: one of {}",
                    Self::NAMES.join(", ")
                )
            })
    }
}

/// The parts of an `AZURE_STORAGE_CONNECTION_STRING` lakemount uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConnectionString {
    pub account_name: Option<String>,
    pub account_key: Option<String>,
    pub sas: Option<String>,
    pub blob_endpoint: Option<String>,
}

impl ConnectionString {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut cs = ConnectionString::default();
        let mut protocol = "https".to_string();
        let mut suffix = "core.windows.net".to_string();
        let mut dev = false;
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                "connection string: expected Key=Value pairs separated by ';'".to_string()
            })?;
            match k.to_ascii_lowercase().as_str() {
                "accountname" => cs.account_name = Some(v.to_string()),
                "accountkey" => cs.account_key = Some(v.to_string()),
                "sharedaccesssignature" => cs.sas = Some(v.to_string()),
                "blobendpoint" => cs.blob_endpoint = Some(v.trim_end_matches('/').to_string()),
                "defaultendpointsprotocol" => protocol = v.to_string(),
                "endpointsuffix" => suffix = v.to_string(),
                "usedevelopmentstorage" => dev = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        if dev {
            cs.account_name
                .get_or_insert_with(|| "devstoreaccount1".into());
            cs.blob_endpoint
                .get_or_insert_with(|| "http://127.0.0.1:10000/devstoreaccount1".into());
        }
        if cs.blob_endpoint.is_none() {
            if let Some(a) = &cs.account_name {
                cs.blob_endpoint = Some(format!("{protocol}://{a}.blob.{suffix}"));
            }
        }
        Ok(cs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_names_match_the_config_file_spelling() {
        for name in AuthMethod::NAMES {
            let parsed: AuthMethod = name.parse().unwrap();
            let from_toml: AuthMethod =
                serde::Deserialize::deserialize(serde::de::value::StrDeserializer::<
                    serde::de::value::Error,
                >::new(name))
                .unwrap();
            assert_eq!(parsed, from_toml);
        }
        assert!("msi".parse::<AuthMethod>().is_err());
    }

    #[test]
    fn connection_strings_give_key_and_endpoint() {
        let cs = ConnectionString::parse(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/;",
        )
        .unwrap();
        assert_eq!(cs.account_name.as_deref(), Some("devstoreaccount1"));
        assert_eq!(
            cs.account_key.as_deref(),
            Some("a2V5=="),
            "'=' inside a value is kept"
        );
        assert_eq!(
            cs.blob_endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
        let cs =
            ConnectionString::parse("AccountName=acct;SharedAccessSignature=sv=1&sig=x").unwrap();
        assert_eq!(
            cs.blob_endpoint.as_deref(),
            Some("https://acct.blob.core.windows.net")
        );
        assert_eq!(cs.sas.as_deref(), Some("sv=1&sig=x"));
        assert!(ConnectionString::parse("garbage").is_err());
    }
}
