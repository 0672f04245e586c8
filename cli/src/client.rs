//! Where the control plane is and how to authenticate to it: the global `--server`,
//! `--token`, `--ca-file` and `--ca-fingerprint` options, and the Admin client built from them.

use std::path::PathBuf;
use std::time::Duration;

use portico_agent::trust::{Fingerprint, Trust};
use portico_api::error::Chain;
use portico_api::limits::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use portico_api::pb::admin_client::AdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::error::{CliError, CliResult};

/// The control plane's address when none is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7000";

/// How long to wait for the control plane to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The global connection options.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientConfig {
    /// The control plane's Admin API URL.
    #[arg(long, global = true, env = "PORTICO_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Bearer token sent with every call.
    #[arg(long, global = true, env = "PORTICO_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) that an `https://` server's certificate must chain to.
    #[arg(long, global = true, env = "PORTICO_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the CA an `https://` server's chain must hold (what `portico-cp`
    /// prints at start and `portico ca show` prints).
    #[arg(long, global = true, env = "PORTICO_CA_FINGERPRINT")]
    pub ca_fingerprint: Option<Fingerprint>,
}

/// The Admin client with the token attached to every call.
pub type Admin = AdminClient<InterceptedService<Channel, BearerToken>>;

/// Adds `authorization: Bearer <token>` to every request when a token is set.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    /// The interceptor for `token`; a usage error if it cannot be sent as a header.
    pub fn new(token: Option<&str>) -> CliResult<BearerToken> {
        let value = match token.filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                CliError::Usage(
                    "the token must be printable ASCII (from --token or PORTICO_TOKEN)".into(),
                )
            })?),
        };
        Ok(BearerToken(value))
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

impl ClientConfig {
    /// Plaintext to `server`, without a token (`portico dev`'s own calls).
    pub fn local(server: &str) -> ClientConfig {
        ClientConfig {
            server: server.to_string(),
            token: None,
            ca_file: None,
            ca_fingerprint: None,
        }
    }

    /// Connects to the control plane; an unreachable server is a one-line error naming it.
    pub async fn connect(&self) -> CliResult<Admin> {
        let token = BearerToken::new(self.token.as_deref())?;
        let endpoint = Endpoint::from_shared(self.server.clone())
            .map_err(|e| CliError::Usage(format!("bad --server URL {:?}: {e}", self.server)))?
            .connect_timeout(CONNECT_TIMEOUT);
        let endpoint = if self.server.starts_with("https://") {
            let trust = Trust::from_options(self.ca_file.as_deref(), self.ca_fingerprint)
                .map_err(|e| CliError::Usage(e.to_string()))?
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "{} is served over TLS: say which CA to trust with --ca-file or \
                         --ca-fingerprint (PORTICO_CA_FILE, PORTICO_CA_FINGERPRINT)",
                        self.server
                    ))
                })?;
            trust
                .apply(endpoint, None)
                .map_err(|e| self.unreachable(e))?
        } else {
            endpoint
        };
        let channel = endpoint.connect().await.map_err(|e| self.unreachable(e))?;
        // As large as anything the control plane sends (listings come in pages well below).
        Ok(AdminClient::with_interceptor(channel, token)
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_REQUEST_BYTES))
    }

    /// Classifies a failed call.
    pub fn status(&self, status: tonic::Status) -> CliError {
        CliError::from_status(status, &self.server)
    }

    /// Classifies a failed call that changes the config (`what`: "apply", "delete",
    /// "rollback", "promotion", "abort"): one cut off on the way may or may not have committed.
    pub fn write_status(&self, status: tonic::Status, what: &'static str) -> CliError {
        CliError::from_write_status(status, &self.server, what)
    }

    fn unreachable(&self, e: impl std::error::Error) -> CliError {
        CliError::Unreachable {
            server: self.server.clone(),
            reason: Chain(&e).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intercepted(token: Option<&str>) -> Option<String> {
        let mut interceptor = BearerToken::new(token).unwrap();
        let req = interceptor.call(tonic::Request::new(())).unwrap();
        req.metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn the_token_is_sent_as_a_bearer_authorization_header() {
        assert_eq!(
            intercepted(Some("s3cret")).as_deref(),
            Some("Bearer s3cret")
        );
        assert_eq!(intercepted(None), None);
        assert_eq!(intercepted(Some("")), None);
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_a_usage_error() {
        let err = BearerToken::new(Some("bad\ntoken")).err().unwrap();
        assert_eq!(err.exit_code(), crate::error::EXIT_USAGE);
    }

    #[tokio::test]
    async fn https_without_a_ca_is_a_usage_error_naming_both_options() {
        let config = ClientConfig::local("https://127.0.0.1:1");
        let err = config.connect().await.err().unwrap();
        assert_eq!(err.exit_code(), crate::error::EXIT_USAGE, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("--ca-file") && text.contains("--ca-fingerprint"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_malformed_server_url_is_a_usage_error() {
        let config = ClientConfig {
            server: "not a url".into(),
            ..ClientConfig::local("")
        };
        let err = config.connect().await.err().unwrap();
        assert_eq!(err.exit_code(), crate::error::EXIT_USAGE, "{err}");
    }
}
