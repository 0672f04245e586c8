//! Applying bench configs through the control plane's Admin API.

use std::time::Duration;

use anyhow::{Context, bail};
use portico_api::Resource;
use portico_api::pb::ApplyRequest;
use portico_api::pb::admin_client::AdminClient;
use tonic::transport::Channel;

/// An Admin API client for `url` (e.g. `http://127.0.0.1:7000`), retrying the connect for up to
/// `wait` while the control plane starts.
pub async fn connect(url: &str, wait: Duration) -> anyhow::Result<AdminClient<Channel>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match AdminClient::connect(url.to_string()).await {
            Ok(client) => return Ok(client),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("connecting to the admin API at {url}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Applies `resources` in one revision and returns that revision.
pub async fn apply(
    client: &mut AdminClient<Channel>,
    token: Option<&str>,
    resources: Vec<Resource>,
    message: &str,
) -> anyhow::Result<i64> {
    let mut request = tonic::Request::new(ApplyRequest {
        resources,
        message: message.into(),
        ..Default::default()
    });
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .context("the token is not a valid header value")?;
        request.metadata_mut().insert("authorization", value);
    }
    let response = client.apply(request).await.context("apply")?.into_inner();
    if let Some(first) = response.errors.first() {
        bail!(
            "apply rejected with {} errors, first: {:?} {}: {}",
            response.errors.len(),
            first.key,
            first.field,
            first.message
        );
    }
    Ok(response.revision)
}
