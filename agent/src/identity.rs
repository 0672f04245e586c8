//! The agent's client certificate, which authenticates its Discovery stream (mutual TLS).
//!
//! With `--join-token`, an agent without a valid certificate asks the control plane for one
//! (`Identity.Join`, over TLS verified with `--ca-file` or `--ca-fingerprint`), for a key it
//! makes itself and never sends. The certificate and key are kept in the cache directory
//! (`identity.pem`, mode 0600, in a 0700 directory), so a restarted agent keeps its identity,
//! and renewed (`Identity.Renew`, authenticated by the current certificate) after two thirds
//! of their lifetime. Without a cache directory they live in memory only, and a restarted
//! agent must join again, which the control plane refuses while the old certificate is valid.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use portico_api::error::Chain;
use portico_api::pb::identity_client::IdentityClient;
use portico_api::pb::{CertificateResponse, JoinRequest, Node, RenewRequest};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Channel, Endpoint, Identity};

use crate::trust::Trust;

/// The file in the cache directory holding the certificate and its key.
const FILE_NAME: &str = "identity.pem";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the agent has no certificate.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The control plane could not be reached.
    #[error("connecting to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The control plane refused the join or the renewal.
    #[error("{call} refused by {url}: {message}")]
    Refused {
        call: &'static str,
        url: String,
        message: String,
    },
    /// The control plane did not answer in time.
    #[error("{call}: no answer from {url} within {CALL_TIMEOUT:?}")]
    Timeout { call: &'static str, url: String },
    /// The answer holds no usable certificate.
    #[error("the control plane's certificate for this agent is unusable: {0}")]
    Unusable(String),
    /// Making a key failed.
    #[error("making a key: {0}")]
    Key(#[from] rcgen::Error),
    /// The certificate could not be kept.
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A certificate and its key.
#[derive(Clone)]
pub struct Certified {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Its key, PEM.
    pub key_pem: String,
    /// When it expires.
    pub not_after: SystemTime,
    /// When to renew it: two thirds into its lifetime as the agent received it.
    pub renew_at: SystemTime,
}

impl std::fmt::Debug for Certified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certified")
            .field("not_after", &self.not_after)
            .field("renew_at", &self.renew_at)
            .finish_non_exhaustive()
    }
}

impl Certified {
    fn new(
        certificate_pem: String,
        key_pem: String,
        not_after: SystemTime,
        received: SystemTime,
    ) -> Certified {
        let lifetime = not_after.duration_since(received).unwrap_or_default();
        Certified {
            certificate_pem,
            key_pem,
            not_after,
            renew_at: received + lifetime * 2 / 3,
        }
    }

    /// Whether it is still valid at `now`.
    pub fn valid_at(&self, now: SystemTime) -> bool {
        now < self.not_after
    }
}

/// How the agent authenticates to control planes over TLS.
pub struct Credentials {
    trust: Trust,
    join_token: Option<String>,
    node: Node,
    file: Option<PathBuf>,
    current: Mutex<Option<Certified>>,
}

impl Credentials {
    /// Credentials verifying control planes with `trust`, joining as `node` with `join_token`,
    /// keeping the certificate in `cache_dir` (loaded from there now when valid).
    pub fn new(
        trust: Trust,
        join_token: Option<String>,
        node: Node,
        cache_dir: Option<&Path>,
    ) -> Credentials {
        let file = cache_dir.map(|d| d.join(FILE_NAME));
        let current = file.as_deref().and_then(|f| match load(f) {
            Ok(found) => found.filter(|c| c.valid_at(SystemTime::now())),
            Err(e) => {
                tracing::warn!(path = %f.display(), error = %e, "ignoring the cached certificate");
                None
            }
        });
        if let Some(c) = &current {
            tracing::info!(not_after = ?c.not_after, "using the cached agent certificate");
        }
        Credentials {
            trust,
            join_token,
            node,
            file,
            current: Mutex::new(current),
        }
    }

    /// The current certificate, if any.
    pub fn current(&self) -> Option<Certified> {
        self.lock().clone()
    }

    /// An endpoint for `url` verifying the control plane, presenting the current certificate
    /// when there is one.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, tonic::transport::Error> {
        let identity = self
            .current()
            .map(|c| Identity::from_pem(c.certificate_pem, c.key_pem));
        self.trust
            .apply(Endpoint::from_shared(url.to_string())?, identity)
    }

    /// Makes sure the agent holds a valid certificate: with none (or an expired one) and a
    /// join token, joins through `url`. Without a join token the agent connects without a
    /// certificate, which a control plane with authentication off accepts.
    pub async fn ensure(&self, url: &str) -> Result<(), IdentityError> {
        let now = SystemTime::now();
        if self.current().is_some_and(|c| c.valid_at(now)) {
            return Ok(());
        }
        let Some(token) = &self.join_token else {
            *self.lock() = None;
            return Ok(());
        };
        let (key, csr) = request(&self.node.id)?;
        let mut client = self.client(url, false).await?;
        let call = client.join(JoinRequest {
            token: token.clone(),
            node: Some(self.node.clone()),
            csr,
        });
        let answer = answer("join", url, call).await?;
        self.keep(answer, key)?;
        tracing::info!(
            url,
            "joined: the control plane issued this agent's certificate"
        );
        Ok(())
    }

    /// Renews the certificate through `url` (authenticated by the current one).
    pub async fn renew(&self, url: &str) -> Result<(), IdentityError> {
        let (key, csr) = request(&self.node.id)?;
        let mut client = self.client(url, true).await?;
        let answer = answer("renew", url, client.renew(RenewRequest { csr })).await?;
        self.keep(answer, key)?;
        tracing::info!(url, "renewed the agent certificate");
        Ok(())
    }

    async fn client(
        &self,
        url: &str,
        with_certificate: bool,
    ) -> Result<IdentityClient<Channel>, IdentityError> {
        let connect_err = |e: tonic::transport::Error| IdentityError::Connect {
            url: url.to_string(),
            reason: Chain(&e).to_string(),
        };
        let endpoint = if with_certificate {
            self.endpoint(url)
        } else {
            Endpoint::from_shared(url.to_string()).and_then(|e| self.trust.apply(e, None))
        }
        .map_err(connect_err)?;
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(connect_err)?;
        Ok(IdentityClient::new(channel))
    }

    /// Checks an answer, keeps it (in the cache directory too) and makes it current.
    fn keep(&self, answer: CertificateResponse, key: rcgen::KeyPair) -> Result<(), IdentityError> {
        let received = SystemTime::now();
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(answer.not_after_unix_ms).unwrap_or(0));
        let usable = CertificateDer::pem_slice_iter(answer.certificate_pem.as_bytes())
            .filter_map(Result::ok)
            .count()
            > 0;
        if !usable || not_after <= received {
            return Err(IdentityError::Unusable(
                "no certificate, or one already expired".into(),
            ));
        }
        let certified = Certified::new(
            answer.certificate_pem,
            key.serialize_pem(),
            not_after,
            received,
        );
        if let Some(file) = &self.file {
            store(file, &certified)?;
        }
        *self.lock() = Some(certified);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Option<Certified>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A new key and a certificate signing request for it (DER).
fn request(node_id: &str) -> Result<(rcgen::KeyPair, Vec<u8>), IdentityError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, node_id);
    params.distinguished_name = name;
    let csr = params.serialize_request(&key)?;
    Ok((key, csr.der().to_vec()))
}

async fn answer(
    call: &'static str,
    url: &str,
    pending: impl Future<Output = Result<tonic::Response<CertificateResponse>, tonic::Status>>,
) -> Result<CertificateResponse, IdentityError> {
    match tokio::time::timeout(CALL_TIMEOUT, pending).await {
        Err(_) => Err(IdentityError::Timeout {
            call,
            url: url.to_string(),
        }),
        Ok(Err(status)) => Err(IdentityError::Refused {
            call,
            url: url.to_string(),
            message: status.message().to_string(),
        }),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

/// The certificate kept in `file`: its expiry is read from the certificate, its receipt time is
/// the file's modification time.
fn load(file: &Path) -> Result<Option<Certified>, String> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let received = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .map_err(|e| e.to_string())?;
    let cert = CertificateDer::pem_slice_iter(text.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or("no certificate in it")?;
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|_| "no key in it")?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&cert).map_err(|_| "the certificate does not parse")?;
    let seconds = u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0);
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
    let key_start = text
        .find("-----BEGIN PRIVATE KEY-----")
        .ok_or("no PKCS#8 key in it")?;
    Ok(Some(Certified::new(
        text[..key_start].to_string(),
        text[key_start..].to_string(),
        not_after,
        received,
    )))
}

/// Writes the certificate and key to `file` atomically, readable by the agent's user only.
fn store(file: &Path, certified: &Certified) -> Result<(), IdentityError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let err = |source| IdentityError::Write {
        path: file.to_path_buf(),
        source,
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let tmp = file.with_extension("pem.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(certified.certificate_pem.as_bytes())
        .and_then(|()| f.write_all(certified.key_pem.as_bytes()))
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, file).map_err(err)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn renewal_is_due_two_thirds_into_the_lifetime() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let c = Certified::new(
            String::new(),
            String::new(),
            t0 + Duration::from_secs(30),
            t0,
        );
        assert_eq!(c.renew_at, t0 + Duration::from_secs(20));
        assert!(c.valid_at(t0 + Duration::from_secs(29)));
        assert!(!c.valid_at(t0 + Duration::from_secs(30)));
    }

    #[test]
    fn a_kept_certificate_loads_back_and_its_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("id").join(FILE_NAME);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["edge-1".to_string()]).unwrap();
        let not_after = SystemTime::now() + Duration::from_secs(3600);
        params.not_after = not_after.into();
        let cert = params.self_signed(&key).unwrap();
        let received = SystemTime::now();
        let kept = Certified::new(cert.pem(), key.serialize_pem(), not_after, received);
        store(&file, &kept).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(file.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let loaded = load(&file).unwrap().unwrap();
        assert_eq!(loaded.certificate_pem, kept.certificate_pem);
        assert_eq!(loaded.key_pem, kept.key_pem);
        // X.509 keeps whole seconds.
        let diff = kept
            .not_after
            .duration_since(loaded.not_after)
            .unwrap_or_default();
        assert!(diff < Duration::from_secs(1));
        assert_eq!(load(&dir.path().join("none")).unwrap().map(|_| ()), None);
    }
}
