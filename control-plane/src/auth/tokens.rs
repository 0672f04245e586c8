//! Creating, listing and revoking tokens, and the first admin token (`--bootstrap-token-file`).
//!
//! A token is `pt_` and 32 random bytes in hex. The store keeps its SHA-256 only
//! (`<root>/v1/auth/tokens/<name>`), so the token is shown once, when it is created. Join
//! tokens (role `JOIN`) carry what their agents may claim (a region, labels) and how many
//! agents may join with them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use portico_api::pb::{
    BootstrapRecord, CreateTokenRequest, CreateTokenResponse, ListTokensResponse, Role, Token,
};
use rand::RngCore;

use super::{Auth, AuthError, hash};
use crate::keys;
use crate::registry::timestamp;
use crate::store::{Compare, Op, Store, StoreError, Txn, TxnOutcome};

/// The name of the token made from `--bootstrap-token-file`.
pub const BOOTSTRAP_NAME: &str = "bootstrap";
/// The longest lifetime a token may be given (100 years).
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A new token: `pt_` and 32 random bytes in hex, from the OS-seeded generator.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("pt_{}", hex::encode(bytes))
}

/// Creates the token `req` describes; the answer holds the token, which nothing shows again.
pub async fn create(
    auth: &Auth,
    req: CreateTokenRequest,
) -> Result<CreateTokenResponse, AuthError> {
    let bad = AuthError::BadRequest;
    let role = Role::try_from(req.role).unwrap_or(Role::Unspecified);
    if role == Role::Unspecified {
        return Err(bad(
            "role: one of viewer, operator, admin, or a join token".into()
        ));
    }
    portico_api::node::check_id(&req.name).map_err(|e| bad(format!("name: {e}")))?;
    if role != Role::Join && (!req.region.is_empty() || !req.labels.is_empty() || req.max_uses > 0)
    {
        return Err(bad(
            "region, labels and uses bound join tokens only (portico token create --join)".into(),
        ));
    }
    if !req.region.is_empty() {
        portico_api::node::check_id(&req.region).map_err(|e| bad(format!("region: {e}")))?;
    }
    portico_api::node::check_labels(&req.labels).map_err(|e| bad(format!("labels: {e}")))?;
    let now = SystemTime::now();
    let expires = match req.ttl_seconds {
        0 => None,
        s if Duration::from_secs(s) > MAX_TTL => {
            return Err(bad(format!(
                "ttl: at most {} days",
                MAX_TTL.as_secs() / 86_400
            )));
        }
        s => Some(timestamp(now + Duration::from_secs(s))),
    };
    let token = generate();
    let record = Token {
        name: req.name.clone(),
        role: role as i32,
        sha256: hash(&token),
        created: Some(timestamp(now)),
        expires,
        region: req.region,
        labels: req.labels,
        max_uses: req.max_uses,
        uses: 0,
    };
    let key = auth.keys.token(&req.name);
    let txn = Txn {
        compares: vec![Compare::ModRevision {
            key: key.clone(),
            revision: 0,
        }],
        ops: vec![Op::Put {
            key,
            value: keys::encode(&record),
            lease: None,
        }],
    };
    match auth.store.txn(txn).await? {
        TxnOutcome::Committed(revision) => auth.state.shown(revision).await,
        TxnOutcome::Conflict(_) => return Err(AuthError::Exists(req.name)),
    }
    tracing::info!(name = %record.name, role = role.name(), "token created");
    Ok(CreateTokenResponse {
        token,
        info: Some(without_hash(record)),
    })
}

/// Every token, by name, without hashes.
pub fn list(auth: &Auth) -> ListTokensResponse {
    ListTokensResponse {
        tokens: auth
            .table()
            .tokens()
            .map(|e| without_hash(e.value.clone()))
            .collect(),
    }
}

/// Deletes the token `name`.
pub async fn revoke(auth: &Auth, name: &str) -> Result<(), AuthError> {
    let key = auth.keys.token(name);
    let txn = Txn {
        compares: vec![Compare::Exists { key: key.clone() }],
        ops: vec![Op::Delete { key }],
    };
    match auth.store.txn(txn).await? {
        TxnOutcome::Committed(revision) => {
            auth.state.shown(revision).await;
            tracing::info!(name, "token revoked");
            Ok(())
        }
        TxnOutcome::Conflict(_) => Err(AuthError::NoSuchToken(name.to_string())),
    }
}

fn without_hash(mut token: Token) -> Token {
    token.sha256.clear();
    token
}

/// Why the bootstrap token could not be read, made or stored.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The file exists but cannot be read.
    #[error("reading --bootstrap-token-file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file cannot be written.
    #[error("writing --bootstrap-token-file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file holds no usable token.
    #[error(
        "--bootstrap-token-file {0}: the file must hold one token of printable ASCII without spaces"
    )]
    Invalid(PathBuf),
    /// The store failed.
    #[error("storing the bootstrap token: {0}")]
    Store(#[from] StoreError),
}

/// Makes sure the first admin token exists: the token in `path` when the file exists, else a
/// new one written there (mode 0600). Once an installation has had its bootstrap token, no
/// file makes another (so a revoked bootstrap token stays revoked): the file is then only
/// checked, and a mismatch logged.
pub async fn bootstrap(auth: &Auth, path: &Path) -> Result<(), BootstrapError> {
    let from_file = match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim();
            let printable = !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic());
            if !printable {
                return Err(BootstrapError::Invalid(path.to_path_buf()));
            }
            Some(token.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(BootstrapError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let bootstrapped = auth.store.get(&auth.keys.bootstrap()).await?.is_some();
    let known = from_file
        .as_deref()
        .is_some_and(|t| auth.table().token_by_hash(&hash(t)).is_some());
    match (from_file, bootstrapped) {
        (Some(_), _) if known => {
            tracing::info!(path = %path.display(), "the bootstrap token file holds a known token");
            Ok(())
        }
        (Some(_), true) => {
            tracing::warn!(
                path = %path.display(),
                "the bootstrap token file holds a token this installation does not know; the \
                 first admin token was made before (and may have been revoked): the file is not used"
            );
            Ok(())
        }
        (None, true) => {
            tracing::warn!(
                path = %path.display(),
                "this installation had its first admin token already; no new one is written \
                 (create tokens with `portico token create`)"
            );
            Ok(())
        }
        (Some(token), false) => {
            if !store_bootstrap(auth, &token).await? {
                tracing::warn!("another replica made the first admin token meanwhile");
            }
            tracing::info!(path = %path.display(), "the first admin token comes from the bootstrap token file");
            Ok(())
        }
        (None, false) => {
            let token = generate();
            write_private(path, &token)?;
            if store_bootstrap(auth, &token).await? {
                tracing::info!(path = %path.display(), "wrote the first admin token");
            } else {
                // Another replica won: its token is the first; ours must not linger.
                let _ = std::fs::remove_file(path);
                tracing::warn!("another replica made the first admin token meanwhile");
            }
            Ok(())
        }
    }
}

/// Stores `token` as the admin token `bootstrap` and marks the installation bootstrapped, in
/// one transaction; false when either already exists.
async fn store_bootstrap(auth: &Auth, token: &str) -> Result<bool, StoreError> {
    let now = SystemTime::now();
    let record = Token {
        name: BOOTSTRAP_NAME.into(),
        role: Role::Admin as i32,
        sha256: hash(token),
        created: Some(timestamp(now)),
        ..Default::default()
    };
    let marker = BootstrapRecord {
        name: BOOTSTRAP_NAME.into(),
        created: Some(timestamp(now)),
    };
    let (token_key, marker_key) = (auth.keys.token(BOOTSTRAP_NAME), auth.keys.bootstrap());
    let txn = Txn {
        compares: vec![
            Compare::ModRevision {
                key: token_key.clone(),
                revision: 0,
            },
            Compare::ModRevision {
                key: marker_key.clone(),
                revision: 0,
            },
        ],
        ops: vec![
            Op::Put {
                key: token_key,
                value: keys::encode(&record),
                lease: None,
            },
            Op::Put {
                key: marker_key,
                value: keys::encode(&marker),
                lease: None,
            },
        ],
    };
    match auth.store.txn(txn).await? {
        TxnOutcome::Committed(revision) => {
            auth.state.shown(revision).await;
            Ok(true)
        }
        TxnOutcome::Conflict(_) => Ok(false),
    }
}

/// Writes `token` to a new file at `path` readable by its owner only (its directory is made,
/// mode 0700, when missing).
fn write_private(path: &Path, token: &str) -> Result<(), BootstrapError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let err = |source| BootstrapError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn tokens_are_random_and_prefixed() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with("pt_") && a.len() == 3 + 64, "{a}");
    }

    #[test]
    fn the_token_file_is_new_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("token");
        write_private(&path, "pt_x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "pt_x\n");
        // Never overwritten.
        assert!(write_private(&path, "pt_y").is_err());
    }
}
