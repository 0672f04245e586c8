//! `portico consumer create NAME [--plan P]` and `portico consumer add-key NAME [--id ID]`:
//! make an API key, store only its SHA-256 in the Consumer (applied through the Admin API),
//! and print the key once. Nothing can show the key again: `get consumer` shows the hashes.

use portico_api::pb::{ApiKey, ApplyRequest, Consumer, Kind, Resource, resource};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::commands::Context;
use crate::error::{CliError, CliResult};
use crate::output;

/// `portico consumer …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a Consumer with a new API key, and print the key once.
    Create(CreateArgs),
    /// Add a new API key to a Consumer, and print the key once.
    AddKey(AddKeyArgs),
}

/// `portico consumer create NAME [--plan P] [--id ID]`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The Consumer's name.
    pub name: String,
    /// The consumer's plan (rate-limit plans are keyed by it).
    #[arg(long)]
    pub plan: Option<String>,
    /// A label for the key. Default "key-1".
    #[arg(long)]
    pub id: Option<String>,
}

/// `portico consumer add-key NAME [--id ID]`.
#[derive(Debug, clap::Args)]
pub struct AddKeyArgs {
    /// The Consumer's name.
    pub name: String,
    /// A label for the key. Default "key-N", N one more than the keys the consumer has.
    #[arg(long)]
    pub id: Option<String>,
}

/// What `create` and `add-key` print: the key, once.
#[derive(Debug, Serialize)]
pub struct NewKey {
    /// The consumer.
    pub consumer: String,
    /// The key's label.
    pub id: String,
    /// The API key. Shown only here.
    pub key: String,
    /// Its SHA-256, as stored.
    pub sha256: String,
    /// The config revision that stored it.
    pub revision: i64,
}

impl NewKey {
    fn table(&self) -> String {
        format!(
            "consumer {}: key {:?} stored (revision {})\nkey: {}\nThis key is shown once: only its SHA-256 is kept.\n",
            self.consumer, self.id, self.revision, self.key
        )
    }
}

/// Runs `consumer create` or `consumer add-key`.
pub async fn run(ctx: &Context, command: Command) -> CliResult {
    let (name, id, plan, create) = match command {
        Command::Create(a) => (a.name, a.id, a.plan, true),
        Command::AddKey(a) => (a.name, a.id, None, false),
    };
    let mut admin = ctx.connect().await?;
    let list = ctx.list(&mut admin, Kind::Consumer).await?;
    let stored = list
        .resources
        .into_iter()
        .filter_map(|s| s.resource)
        .find(|r| r.name == name);
    let mut spec = match (stored, create) {
        (Some(_), true) => {
            return Err(CliError::Server(format!(
                "consumer {name:?} already exists; add a key with `portico consumer add-key {name}`"
            )));
        }
        (None, false) => {
            return Err(CliError::Server(format!(
                "consumer {name:?} does not exist; create it with `portico consumer create {name}`"
            )));
        }
        (None, true) => Consumer {
            plan: plan.unwrap_or_default(),
            ..Default::default()
        },
        (Some(r), false) => match r.spec {
            Some(resource::Spec::Consumer(c)) => c,
            _ => Consumer::default(),
        },
    };
    let id = id.unwrap_or_else(|| next_id(&spec));
    if spec.api_keys.iter().any(|k| k.id == id) {
        return Err(CliError::Usage(format!(
            "consumer {name:?} already has a key {id:?}; choose another --id"
        )));
    }
    let key = new_key();
    let sha256 = hash(&key);
    spec.api_keys.push(ApiKey {
        id: id.clone(),
        sha256: sha256.clone(),
    });
    let req = ApplyRequest {
        resources: vec![Resource {
            name: name.clone(),
            spec: Some(resource::Spec::Consumer(spec)),
            ..Default::default()
        }],
        // Written only on top of the consumer as it was read: a concurrent change is a
        // conflict, not a lost key.
        expected_revision: Some(list.revision),
        message: format!("consumer {name}: new API key {id}"),
        ..Default::default()
    };
    let resp = match admin.apply(req).await {
        Ok(r) => r.into_inner(),
        Err(status) => return Err(ctx.write_failed(status, "apply")),
    };
    if !resp.errors.is_empty() {
        let errors = resp
            .errors
            .into_iter()
            .map(|e| portico_api::validate::ValidationError::from(e).to_string())
            .collect();
        return Err(CliError::Validation(errors));
    }
    let out = NewKey {
        consumer: name,
        id,
        key,
        sha256,
        revision: resp.revision,
    };
    output::print(ctx.format, &out, || out.table())
}

/// "key-N", N one more than the keys `spec` has (or more, past ids taken).
fn next_id(spec: &Consumer) -> String {
    (spec.api_keys.len() + 1..)
        .map(|n| format!("key-{n}"))
        .find(|id| spec.api_keys.iter().all(|k| k.id != *id))
        .unwrap_or_default()
}

/// A new API key: "pk_" and 32 random bytes in hex, from the OS-seeded generator.
fn new_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("pk_{}", hex::encode(bytes))
}

/// The lowercase hex SHA-256 of a key, as `Consumer.api_keys` stores it.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_stored_as_their_hash() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
        let h = hash(&a);
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn key_ids_count_up_past_those_taken() {
        let mut spec = Consumer::default();
        assert_eq!(next_id(&spec), "key-1");
        spec.api_keys.push(ApiKey {
            id: "key-2".into(),
            sha256: String::new(),
        });
        assert_eq!(next_id(&spec), "key-3");
    }
}
