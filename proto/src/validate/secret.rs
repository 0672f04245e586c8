//! Secret rules: a TLS chain is PEM certificates that parse, and a private key parses and
//! belongs to the leaf certificate.

use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::Errors;
use crate::pb::{Secret, TlsSecret, secret};

pub(crate) fn check(s: &Secret, e: &mut Errors) {
    match &s.secret {
        None => e.add("", "a secret value (tls or opaque) is required"),
        Some(secret::Secret::Tls(tls)) => check_tls(tls, e),
        Some(secret::Secret::Opaque(_)) => {}
    }
}

fn check_tls(tls: &TlsSecret, e: &mut Errors) {
    let chain = match certificates(&tls.certificate_chain) {
        Ok(chain) => chain,
        Err(message) => {
            e.add("tls.certificate_chain", message);
            return;
        }
    };
    if tls.private_key.is_empty() {
        return;
    }
    e.check("tls.private_key", key_matches(chain, &tls.private_key));
}

/// The certificates of a PEM chain, each checked to be an X.509 certificate.
fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("invalid PEM: {err}"))?;
    if chain.is_empty() {
        return Err("no PEM certificate found".into());
    }
    // Reading a certificate as a trust anchor parses it, whatever its place in the chain.
    let mut parsed = RootCertStore::empty();
    for (i, cert) in chain.iter().enumerate() {
        parsed
            .add(cert.clone())
            .map_err(|err| format!("certificate {i} does not parse: {err}"))?;
    }
    Ok(chain)
}

fn key_matches(chain: Vec<CertificateDer<'static>>, pem: &str) -> Result<(), String> {
    let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|err| format!("invalid PEM private key: {err}"))?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|err| format!("unsupported private key: {err}"))?;
    match CertifiedKey::new(chain, signing).keys_match() {
        Ok(()) => Ok(()),
        // The key type cannot report its public key, so there is nothing to compare.
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err("private key does not match the first certificate of the chain".into())
        }
        Err(err) => Err(format!(
            "cannot check the key against the certificate: {err}"
        )),
    }
}
