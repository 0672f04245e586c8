//! Secrets applied back as `get` shows them. `get` and `list` replace a TLS private key and an
//! opaque value with the placeholder `<redacted>`; an apply whose Secret holds the placeholder
//! there keeps the stored material, so `portico get secret NAME -o yaml | portico apply -f -`
//! changes nothing it did not mean to, and the change is `unchanged` for that reason. A
//! placeholder with nothing stored to keep (a new secret, or a stored one of the other variant)
//! is refused, naming the field: the placeholder is never stored as a value.

use portico_api::pb::{resource::Spec, secret};
use portico_api::reference::REDACTED;
use portico_api::validate::ValidationError;
use portico_api::{Kind, Resource, ResourceKey, ResourceSet};

/// Replaces each placeholder in `resources` with the material `stored` holds for it; errors for
/// the placeholders with nothing to keep.
pub(super) fn keep_redacted(
    stored: &ResourceSet,
    resources: &mut [Resource],
) -> Result<(), Vec<ValidationError>> {
    let mut errors = Vec::new();
    for r in resources.iter_mut() {
        let Some(Spec::Secret(s)) = &mut r.spec else {
            continue;
        };
        let kept = match stored
            .get(Kind::Secret, &r.name)
            .and_then(|s| s.spec.as_ref())
        {
            Some(Spec::Secret(s)) => s.secret.as_ref(),
            _ => None,
        };
        let missing = match (&mut s.secret, kept) {
            (Some(secret::Secret::Tls(tls)), kept) if tls.private_key == REDACTED => match kept {
                Some(secret::Secret::Tls(k)) if !k.private_key.is_empty() => {
                    tls.private_key = k.private_key.clone();
                    None
                }
                _ => Some("tls.private_key"),
            },
            (Some(secret::Secret::Opaque(value)), kept) if value == REDACTED => match kept {
                Some(secret::Secret::Opaque(k)) if !k.is_empty() => {
                    *value = k.clone();
                    None
                }
                _ => Some("opaque"),
            },
            _ => None,
        };
        if let Some(field) = missing {
            errors.push(ValidationError {
                key: ResourceKey::new(Kind::Secret, &r.name),
                field: field.to_string(),
                message: format!(
                    "is the placeholder {REDACTED:?} that `get` shows in place of secret \
                     material, and there is no stored value to keep: give the value itself"
                ),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use portico_api::pb::{Secret, TlsSecret};

    use super::*;

    fn tls(name: &str, key: &str) -> Resource {
        Resource {
            name: name.into(),
            spec: Some(Spec::Secret(Secret {
                secret: Some(secret::Secret::Tls(TlsSecret {
                    certificate_chain: "chain".into(),
                    private_key: key.into(),
                })),
            })),
            ..Default::default()
        }
    }

    fn opaque(name: &str, value: &str) -> Resource {
        Resource {
            name: name.into(),
            spec: Some(Spec::Secret(Secret {
                secret: Some(secret::Secret::Opaque(value.into())),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn placeholders_keep_what_is_stored_and_are_refused_without_it() {
        let stored: ResourceSet = [tls("cert", "KEY"), opaque("jwks", "{}")]
            .into_iter()
            .collect();
        let mut applied = vec![
            tls("cert", REDACTED),
            opaque("jwks", REDACTED),
            opaque("other", "value"),
        ];
        keep_redacted(&stored, &mut applied).unwrap();
        assert_eq!(applied[0], tls("cert", "KEY"));
        assert_eq!(applied[1], opaque("jwks", "{}"));
        assert_eq!(applied[2], opaque("other", "value"));

        let mut new = vec![opaque("new", REDACTED), opaque("cert", REDACTED)];
        let errors = keep_redacted(&stored, &mut new).unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(
            shown[0].starts_with("Secret/new: opaque: is the placeholder"),
            "{shown:?}"
        );
        assert!(shown[1].starts_with("Secret/cert: opaque:"), "{shown:?}");
    }
}
