//! The last-good config on disk, so a restarted agent serves before any control plane answers.
//!
//! The file is framed as `MAGIC | payload length (u64 LE) | SHA-256 of payload | payload`. The
//! payload holds the applied resources as a length-delimited protobuf `Update` with
//! `full = true`, then the endpoints of each announced service the agent had, each a
//! length-delimited `ServiceEndpoints`: a restarted agent serves its clusters that name a
//! service with the nodes last known, until the control plane sends the current ones (first
//! thing on the new stream). Files of the first format (`PORTICO\x01`: the `Update` alone)
//! still load. A file that is truncated, altered or not ours fails the check and is ignored;
//! the agent then waits for the control plane. Writes are atomic: temp file, fsync, rename,
//! fsync of the directory, so a crash leaves either the old file or the new one. The directory
//! is made 0700 and the file 0600: the cache holds private keys.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use portico_api::pb::{ServiceEndpoints, Update};
use prost::Message;
use prost::encoding;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use portico_proxy::config::ConfigSet;

const MAGIC: &[u8; 8] = b"PORTICO\x02";
/// The first format: the payload is the `Update` alone.
const MAGIC_V1: &[u8; 8] = b"PORTICO\x01";
const HEADER_LEN: usize = MAGIC.len() + 8 + 32;
const FILE_NAME: &str = "config.pb";

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing the file (or its directory) failed.
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a complete cache written by this agent.
    #[error("{path} is not a valid config cache: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// The cache file in one directory.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache in `dir` (created on the first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Cache { dir: dir.into() }
    }

    /// The cache file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The cached config, or `None` when there is no cache file.
    pub fn load(&self) -> Result<Option<ConfigSet>, CacheError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Read { path, source }),
        };
        let (update, services) =
            decode(&bytes).map_err(|reason| CacheError::Corrupt { path, reason })?;
        let mut config = ConfigSet::default().with_update(update);
        for s in services {
            config = config.with_service(&s.service, s.endpoints);
        }
        Ok(Some(config))
    }

    /// Replaces the cache with `config`, atomically.
    pub fn store(&self, config: &ConfigSet) -> Result<(), CacheError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Write { path, source }
        };
        private_dir(&self.dir).map_err(write_err(&self.dir))?;
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut file = private_file(&tmp).map_err(write_err(&tmp))?;
        file.write_all(&encode(config)).map_err(write_err(&tmp))?;
        file.sync_all().map_err(write_err(&tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(write_err(&path))?;
        // The rename is durable only once the directory entry is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err(&self.dir))
    }

    /// Writes every config published on `applied` until `shutdown`, and what is published
    /// before it. A burst of updates writes only the newest, because a slow disk must not hold
    /// back applying.
    pub async fn run_writer(
        self,
        mut applied: watch::Receiver<Option<Arc<ConfigSet>>>,
        shutdown: CancellationToken,
    ) {
        // What is published now was loaded from here.
        applied.borrow_and_update();
        loop {
            tokio::select! {
                biased;
                changed = applied.changed() => if changed.is_err() { return },
                _ = shutdown.cancelled() => if !applied.has_changed().unwrap_or(false) { return },
            }
            let Some(config) = applied.borrow_and_update().clone() else {
                continue;
            };
            let cache = self.clone();
            let version = config.version;
            match tokio::task::spawn_blocking(move || cache.store(&config)).await {
                Ok(Ok(())) => tracing::debug!(version, "config cached"),
                Ok(Err(e)) => tracing::warn!(error = %e, "caching the applied config failed"),
                Err(e) => tracing::warn!(error = %e, "caching task failed"),
            }
        }
    }
}

/// Creates `dir` (and its parents) if needed and makes it readable by its owner alone: the
/// cache holds the private keys of the agent's listeners.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // A directory made earlier, or by someone else, is tightened too.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// A new file at `path` (replacing one left by a crash), readable and writable by its owner
/// alone. The rename keeps the mode, so the cache file is 0600 too.
fn private_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = File::options()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    // A temp file a crash left behind keeps its old mode on open.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// The field number of `Update.upserts`.
const UPSERTS_FIELD: u32 = 4;

fn encode(config: &ConfigSet) -> Vec<u8> {
    // The resources are encoded where they are, not copied into an `Update` first: fields may
    // come in any order, so the upserts follow the rest of the message.
    let head = Update {
        version: config.version,
        full: true,
        ..Default::default()
    }
    .encode_to_vec();
    let update_len = head.len()
        + config
            .resources
            .iter()
            .map(|r| encoding::message::encoded_len(UPSERTS_FIELD, r))
            .sum::<usize>();
    let mut payload = Vec::with_capacity(update_len + 10);
    encoding::encode_varint(update_len as u64, &mut payload);
    payload.extend_from_slice(&head);
    for r in config.resources.iter() {
        encoding::message::encode(UPSERTS_FIELD, r, &mut payload);
    }
    for (service, endpoints) in &config.services {
        let message = ServiceEndpoints {
            service: service.clone(),
            endpoints: endpoints.to_vec(),
        };
        // Writing to a Vec cannot run out of room, the only way encoding fails.
        let _ = message.encode_length_delimited(&mut payload);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    out
}

/// The config and the services' endpoints in a cache file.
fn decode(bytes: &[u8]) -> Result<(Update, Vec<ServiceEndpoints>), String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!("{} bytes is shorter than the header", bytes.len()));
    }
    let (magic, rest) = bytes.split_at(MAGIC.len());
    let v1 = magic == MAGIC_V1;
    if magic != MAGIC && !v1 {
        return Err("unknown file signature".to_string());
    }
    let (len, rest) = rest.split_at(8);
    let (sum, payload) = rest.split_at(32);
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(len);
    let len = u64::from_le_bytes(len_bytes);
    if len != payload.len() as u64 {
        return Err(format!(
            "payload is {} bytes, header says {len}",
            payload.len()
        ));
    }
    if Sha256::digest(payload).as_slice() != sum {
        return Err("checksum mismatch".to_string());
    }
    let mut buf = payload;
    let update = if v1 {
        Update::decode(payload)
    } else {
        Update::decode_length_delimited(&mut buf)
    }
    .map_err(|e| format!("decoding the config: {e}"))?;
    if !update.full {
        return Err("not a full config".to_string());
    }
    let mut services = Vec::new();
    while !v1 && !buf.is_empty() {
        let s = ServiceEndpoints::decode_length_delimited(&mut buf)
            .map_err(|e| format!("decoding service endpoints: {e}"))?;
        services.push(s);
    }
    Ok((update, services))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_api::pb::{Endpoint, Resource, resource::Spec};

    fn config() -> ConfigSet {
        let resources = ["api", "web"]
            .into_iter()
            .map(|name| Resource {
                name: name.into(),
                spec: Some(Spec::Cluster(Default::default())),
                ..Default::default()
            })
            .collect();
        ConfigSet {
            version: 42,
            resources,
            ..Default::default()
        }
    }

    #[test]
    fn the_cache_is_readable_by_its_owner_alone() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        // A new directory, and one made before with the usual umask holding a temp file a
        // crash left behind.
        let new = Cache::new(dir.path().join("a/b"));
        let old_dir = dir.path().join("old");
        fs::create_dir(&old_dir).unwrap();
        fs::set_permissions(&old_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let stale = old_dir.join(format!("{FILE_NAME}.tmp"));
        fs::write(&stale, b"stale").unwrap();
        fs::set_permissions(&stale, fs::Permissions::from_mode(0o644)).unwrap();
        for cache in [new, Cache::new(&old_dir)] {
            cache.store(&config()).unwrap();
            assert_eq!(mode(&cache.dir), 0o700);
            assert_eq!(mode(&cache.path()), 0o600);
            assert_eq!(cache.load().unwrap(), Some(config()));
        }
    }

    #[test]
    fn round_trip_keeps_version_and_resources() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("nested"));
        assert_eq!(cache.load().unwrap(), None);
        cache.store(&config()).unwrap();
        assert_eq!(cache.load().unwrap(), Some(config()));

        let mut newer = config();
        newer.version = 43;
        newer.resources.remove(portico_api::Kind::Cluster, "web");
        cache.store(&newer).unwrap();
        assert_eq!(cache.load().unwrap(), Some(newer));
        assert!(!dir.path().join("nested/config.pb.tmp").exists());
    }

    #[test]
    fn service_endpoints_are_kept_with_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let endpoint = |port| Endpoint {
            address: "10.0.0.1".into(),
            port,
            zone: "eu-1".into(),
            ..Default::default()
        };
        let config = config()
            .with_service("api", vec![endpoint(80), endpoint(81)])
            .with_service("db", vec![endpoint(5432)]);
        cache.store(&config).unwrap();
        let loaded = cache.load().unwrap().unwrap();
        assert_eq!(loaded, config);
        assert_eq!(loaded.services["api"].len(), 2);
    }

    #[test]
    fn files_of_the_first_format_load() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let mut update = Update {
            version: 42,
            full: true,
            ..Default::default()
        };
        update.upserts = config().resources.iter().cloned().collect();
        let payload = update.encode_to_vec();
        let mut file = MAGIC_V1.to_vec();
        file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        file.extend_from_slice(&Sha256::digest(&payload));
        file.extend_from_slice(&payload);
        fs::write(cache.path(), file).unwrap();
        assert_eq!(cache.load().unwrap(), Some(config()));
    }

    #[test]
    fn corrupt_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.store(&config()).unwrap();
        let good = fs::read(cache.path()).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        let framed = |payload: &[u8]| {
            let mut file = good[..HEADER_LEN].to_vec();
            file[MAGIC.len()..MAGIC.len() + 8]
                .copy_from_slice(&(payload.len() as u64).to_le_bytes());
            file[MAGIC.len() + 8..HEADER_LEN].copy_from_slice(&Sha256::digest(payload));
            file.extend_from_slice(payload);
            file
        };
        let partial_update = framed(
            &Update {
                version: 1,
                ..Default::default()
            }
            .encode_length_delimited_to_vec(),
        );
        let mut bad_service = Update {
            version: 1,
            full: true,
            ..Default::default()
        }
        .encode_length_delimited_to_vec();
        bad_service.extend_from_slice(&[0x05, 0x0a]);
        let bad_service = framed(&bad_service);

        for (what, bytes, reason) in [
            ("empty", Vec::new(), "shorter than the header"),
            ("truncated", good[..good.len() - 3].to_vec(), "header says"),
            ("header only", good[..HEADER_LEN - 1].to_vec(), "header"),
            (
                "garbage",
                b"not a cache at all, just text....................".repeat(2),
                "signature",
            ),
            ("bit flip", flipped, "checksum"),
            ("not full", partial_update, "not a full config"),
            ("cut service", bad_service, "decoding service endpoints"),
        ] {
            fs::write(cache.path(), &bytes).unwrap();
            match cache.load() {
                Err(CacheError::Corrupt { reason: r, .. }) => {
                    assert!(r.contains(reason), "{what}: {r}")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn unreadable_directory_is_a_write_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let err = Cache::new(&file).store(&config()).unwrap_err();
        assert!(matches!(err, CacheError::Write { .. }), "{err}");
    }
}
