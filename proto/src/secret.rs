//! Secret material kept out of sight: the `Debug` of Secrets, which never shows a private key
//! or an opaque value (any `{:?}` of a resource, an update or a history record would otherwise
//! carry it into a log or an error), and the fingerprint that history keeps instead of the
//! material.
//!
//! What counts as material: a tls Secret's `private_key` and an opaque Secret's value.
//! Certificate chains are public and stay visible everywhere.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::pb::{Resource, Secret, TlsSecret, resource::Spec, secret};
use crate::reference::REDACTED;

/// Shows a material field as [`REDACTED`], or as `""` when empty (so a reader still sees
/// whether a key is present).
struct Hidden<'a>(&'a str);

impl fmt::Debug for Hidden<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str(REDACTED)
        }
    }
}

impl fmt::Debug for TlsSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSecret")
            .field("certificate_chain", &self.certificate_chain)
            .field("private_key", &Hidden(&self.private_key))
            .finish()
    }
}

impl fmt::Debug for secret::Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            secret::Secret::Tls(tls) => f.debug_tuple("Tls").field(tls).finish(),
            secret::Secret::Opaque(value) => f.debug_tuple("Opaque").field(&Hidden(value)).finish(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("secret", &self.secret)
            .finish()
    }
}

/// The material of `resource`, when it is a Secret that holds some.
pub fn material(resource: &Resource) -> Option<&str> {
    match &resource.spec {
        Some(Spec::Secret(Secret {
            secret: Some(secret::Secret::Tls(tls)),
        })) if !tls.private_key.is_empty() => Some(&tls.private_key),
        Some(Spec::Secret(Secret {
            secret: Some(secret::Secret::Opaque(value)),
        })) if !value.is_empty() => Some(value),
        _ => None,
    }
}

/// The fingerprint of a Secret's material: `sha256:` and the hex SHA-256 of the material,
/// `None` when `resource` holds none. Equal material, equal fingerprint; nothing of the
/// material can be read back from it (keys and JWKS are far too long to guess).
pub fn fingerprint(resource: &Resource) -> Option<String> {
    material(resource).map(|m| format!("sha256:{}", hex::encode(Sha256::digest(m.as_bytes()))))
}

/// Replaces the material of `resource` (a Secret) by [`REDACTED`] and returns its fingerprint;
/// `None`, with `resource` unchanged, when it holds no material.
pub fn strip(resource: &mut Resource) -> Option<String> {
    let fingerprint = fingerprint(resource)?;
    if let Some(Spec::Secret(s)) = &mut resource.spec {
        match &mut s.secret {
            Some(secret::Secret::Tls(tls)) => tls.private_key = REDACTED.into(),
            Some(secret::Secret::Opaque(value)) => *value = REDACTED.into(),
            None => {}
        }
    }
    Some(fingerprint)
}

/// Puts `material` back into `resource` (a Secret whose material was [`strip`]ped).
pub fn restore(resource: &mut Resource, material: &str) {
    if let Some(Spec::Secret(s)) = &mut resource.spec {
        match &mut s.secret {
            Some(secret::Secret::Tls(tls)) => tls.private_key = material.into(),
            Some(secret::Secret::Opaque(value)) => *value = material.into(),
            None => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MARKER: &str = "MARKER-7f3a-never-shown";

    fn tls(key: &str) -> Resource {
        Resource {
            name: "web".into(),
            spec: Some(Spec::Secret(Secret {
                secret: Some(secret::Secret::Tls(TlsSecret {
                    certificate_chain: "-----BEGIN CERTIFICATE-----".into(),
                    private_key: key.into(),
                })),
            })),
            ..Default::default()
        }
    }

    fn opaque(value: &str) -> Resource {
        Resource {
            name: "jwks".into(),
            spec: Some(Spec::Secret(Secret {
                secret: Some(secret::Secret::Opaque(value.into())),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn debug_never_shows_material() {
        for r in [tls(MARKER), opaque(MARKER)] {
            for shown in [format!("{r:?}"), format!("{r:#?}")] {
                assert!(!shown.contains(MARKER), "{shown}");
                assert!(shown.contains(REDACTED), "{shown}");
            }
        }
        let shown = format!("{:?}", tls(""));
        assert!(shown.contains("private_key: \"\""), "{shown}");
        assert!(
            shown.contains("BEGIN CERTIFICATE"),
            "chains stay visible: {shown}"
        );
    }

    #[test]
    fn stripped_material_is_fingerprinted_and_restored() {
        for original in [tls(MARKER), opaque(MARKER)] {
            let mut r = original.clone();
            let print = strip(&mut r).unwrap();
            assert!(
                print.starts_with("sha256:") && print.len() == 7 + 64,
                "{print}"
            );
            assert!(
                !crate::file::to_json(&[r.clone()])
                    .unwrap()
                    .to_string()
                    .contains(MARKER)
            );
            assert_eq!(fingerprint(&original).as_deref(), Some(print.as_str()));
            assert_ne!(fingerprint(&tls("other")), Some(print.clone()));
            restore(&mut r, MARKER);
            assert_eq!(r, original);
        }
        let mut ca = tls("");
        assert_eq!(strip(&mut ca), None);
        assert_eq!(ca, tls(""));
    }
}
