//! The consumer directory: every Consumer by name, by API key hash and by JWT subject,
//! compiled once per apply from the Consumer resources (and kept while they do not change).
//!
//! An API key is looked up by the first 8 bytes of its SHA-256 and then compared in full with
//! [`subtle`]'s constant-time equality, so the time a lookup takes depends on the key's hash,
//! never on how much of a stored key it shares: timing can at most tell bits of a stored hash,
//! from which no key can be found.

use std::collections::HashMap;
use std::sync::Arc;

use portico_api::pb::resource::Spec;
use portico_api::{Kind, ResourceSet};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::compile::{CompileError, compile_error};

/// An API client, as requests are attributed to it.
#[derive(Debug)]
pub struct Consumer {
    /// The Consumer's name.
    pub name: Arc<str>,
    /// Its plan, for rate limits; `None` when it has none.
    pub plan: Option<Arc<str>>,
}

/// A key's SHA-256 and its consumer.
type KeyHash = ([u8; 32], Arc<Consumer>);

/// Every Consumer, by name, key hash and subject.
#[derive(Debug, Default)]
pub struct Consumers {
    by_name: HashMap<String, Arc<Consumer>>,
    /// By the first 8 bytes of the key's SHA-256: the full hashes and their consumers.
    by_key: HashMap<[u8; 8], Vec<KeyHash>>,
    by_subject: HashMap<String, Arc<Consumer>>,
}

impl Consumers {
    /// The directory of the Consumers in `set`.
    pub fn compile(set: &ResourceSet) -> Result<Consumers, CompileError> {
        let mut out = Consumers::default();
        for r in set.of_kind(Kind::Consumer) {
            let Some(Spec::Consumer(spec)) = &r.spec else {
                continue;
            };
            let consumer = Arc::new(Consumer {
                name: r.name.as_str().into(),
                plan: (!spec.plan.is_empty()).then(|| spec.plan.as_str().into()),
            });
            for (i, key) in spec.api_keys.iter().enumerate() {
                let hash = parse_hash(&key.sha256).ok_or_else(|| {
                    compile_error(
                        Kind::Consumer,
                        &r.name,
                        format!("api_keys[{i}].sha256"),
                        "not a SHA-256 in hex",
                    )
                })?;
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&hash[..8]);
                out.by_key
                    .entry(prefix)
                    .or_default()
                    .push((hash, consumer.clone()));
            }
            for s in &spec.jwt_subjects {
                out.by_subject.insert(s.clone(), consumer.clone());
            }
            out.by_name.insert(r.name.clone(), consumer);
        }
        Ok(out)
    }

    /// The consumer named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Consumer>> {
        self.by_name.get(name)
    }

    /// The consumer whose API key is `key`.
    pub fn by_key(&self, key: &[u8]) -> Option<&Arc<Consumer>> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&digest[..8]);
        let mut found = None;
        // Every candidate is compared in full, whichever matches.
        for (hash, consumer) in self.by_key.get(&prefix).into_iter().flatten() {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(consumer);
            }
        }
        found
    }

    /// The consumer whose `jwt_subjects` holds `subject`.
    pub fn by_subject(&self, subject: &str) -> Option<&Arc<Consumer>> {
        self.by_subject.get(subject)
    }
}

/// 64 hex digits as 32 bytes.
fn parse_hash(hex_digits: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_digits).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use portico_api::pb;

    fn consumer(name: &str, keys: &[&str], subjects: &[&str], plan: &str) -> pb::Resource {
        pb::Resource {
            name: name.into(),
            spec: Some(Spec::Consumer(pb::Consumer {
                api_keys: keys
                    .iter()
                    .map(|k| pb::ApiKey {
                        id: String::new(),
                        sha256: hex::encode(Sha256::digest(k.as_bytes())),
                    })
                    .collect(),
                jwt_subjects: subjects.iter().map(|s| s.to_string()).collect(),
                plan: plan.into(),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn keys_and_subjects_find_their_consumer() {
        let set: ResourceSet = [
            consumer("alice", &["key-a", "key-a2"], &["alice@x"], "gold"),
            consumer("bob", &["key-b"], &[], ""),
        ]
        .into_iter()
        .collect();
        let c = Consumers::compile(&set).unwrap();
        assert_eq!(&*c.by_key(b"key-a").unwrap().name, "alice");
        assert_eq!(&*c.by_key(b"key-a2").unwrap().name, "alice");
        assert_eq!(c.by_key(b"key-a").unwrap().plan.as_deref(), Some("gold"));
        assert_eq!(&*c.by_key(b"key-b").unwrap().name, "bob");
        assert!(c.by_key(b"key-c").is_none());
        assert!(c.by_key(b"").is_none());
        assert_eq!(&*c.by_subject("alice@x").unwrap().name, "alice");
        assert!(c.get("bob").unwrap().plan.is_none());
    }
}
