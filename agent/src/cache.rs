//! The last-good config on disk, so a restarted agent serves before any control plane answers.
//!
//! The file holds the applied resources as a protobuf `Update` with `full = true`, framed as
//! `MAGIC | payload length (u64 LE) | SHA-256 of payload | payload`. A file that is truncated,
//! altered or not ours fails the check and is ignored; the agent then waits for the control
//! plane. Writes are atomic: temp file, fsync, rename, fsync of the directory, so a crash leaves
//! either the old file or the new one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use portico_api::pb::Update;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use portico_proxy::config::ConfigSet;

const MAGIC: &[u8; 8] = b"PORTICO\x01";
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
        let update = decode(&bytes).map_err(|reason| CacheError::Corrupt { path, reason })?;
        Ok(Some(ConfigSet::default().with_update(update)))
    }

    /// Replaces the cache with `config`, atomically.
    pub fn store(&self, config: &ConfigSet) -> Result<(), CacheError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Write { path, source }
        };
        fs::create_dir_all(&self.dir).map_err(write_err(&self.dir))?;
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut file = File::create(&tmp).map_err(write_err(&tmp))?;
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

/// The protobuf key of `Update.upserts`: field 4, length-delimited.
const UPSERTS_KEY: u8 = (4 << 3) | 2;

fn encode(config: &ConfigSet) -> Vec<u8> {
    // The resources are encoded where they are, not copied into an `Update` first: fields may
    // come in any order, so the upserts follow the rest of the message.
    let mut payload = Update {
        version: config.version,
        full: true,
        ..Default::default()
    }
    .encode_to_vec();
    for r in config.resources.iter() {
        payload.push(UPSERTS_KEY);
        // Writing to a Vec cannot run out of room, the only way encoding fails.
        let _ = r.encode_length_delimited(&mut payload);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    out
}

fn decode(bytes: &[u8]) -> Result<Update, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!("{} bytes is shorter than the header", bytes.len()));
    }
    let (magic, rest) = bytes.split_at(MAGIC.len());
    if magic != MAGIC {
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
    let update = Update::decode(payload).map_err(|e| format!("decoding: {e}"))?;
    if !update.full {
        return Err("not a full config".to_string());
    }
    Ok(update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_api::pb::{Resource, resource::Spec};

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
    fn corrupt_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache.store(&config()).unwrap();
        let good = fs::read(cache.path()).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        let mut partial_update = good[..HEADER_LEN].to_vec();
        let payload = Update {
            version: 1,
            ..Default::default()
        }
        .encode_to_vec();
        partial_update[MAGIC.len()..MAGIC.len() + 8]
            .copy_from_slice(&(payload.len() as u64).to_le_bytes());
        partial_update[MAGIC.len() + 8..HEADER_LEN].copy_from_slice(&Sha256::digest(&payload));
        partial_update.extend_from_slice(&payload);

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
