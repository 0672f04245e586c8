//! TLS material: certificates from Secrets, chosen by SNI, and client certificates verified
//! against a CA Secret, in rustls server configs; CA Secrets or the system's trusted roots in
//! upstream client configs. Everything is built on the ring provider (the only crypto provider
//! in the build).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use portico_api::pb;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material does not load.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate chain is not valid PEM or is empty.
    #[error("certificate chain: {0}")]
    Certificate(String),
    /// The private key is not valid PEM or not a supported key type.
    #[error("private key: {0}")]
    PrivateKey(String),
    /// The listener names no certificate.
    #[error("no certificate configured")]
    NoCertificate,
    /// rustls refused the configuration.
    #[error("tls config: {0}")]
    Config(#[from] rustls::Error),
    /// The CAs client certificates are verified against do not make a verifier.
    #[error("client_ca_secret: {0}")]
    ClientCa(String),
    /// The host's trusted roots could not be read.
    #[error("system trust roots: {0}")]
    SystemRoots(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate("no certificate found".into()));
    }
    Ok(chain)
}

type ChainAndKey = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn chain_and_key(secret: &pb::TlsSecret) -> Result<ChainAndKey, TlsError> {
    let chain = certificates(&secret.certificate_chain)?;
    let key = PrivateKeyDer::from_pem_slice(secret.private_key.as_bytes())
        .map_err(|e| TlsError::PrivateKey(e.to_string()))?;
    Ok((chain, key))
}

/// A certificate and signing key from a tls Secret.
pub fn certified_key(secret: &pb::TlsSecret) -> Result<Arc<CertifiedKey>, TlsError> {
    let (chain, key) = chain_and_key(secret)?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::PrivateKey(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// Picks a certificate by SNI: exact name, then the longest `*.suffix`, then the default.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// A resolver over `(server names, key)` entries; the first entry is the default.
    pub fn new(entries: Vec<(Vec<String>, Arc<CertifiedKey>)>) -> Result<Self, TlsError> {
        let default = entries
            .first()
            .map(|(_, k)| k.clone())
            .ok_or(TlsError::NoCertificate)?;
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (names, key) in entries {
            for name in names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix('*') {
                    Some(suffix) => wildcard.entry(suffix.to_string()),
                    None => exact.entry(name),
                }
                .or_insert_with(|| key.clone());
            }
        }
        Ok(SniResolver {
            exact,
            wildcard,
            default,
        })
    }

    /// The certificate served for `server_name`.
    pub fn select(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return self.default.clone();
        };
        self.exact
            .get(&name)
            .or_else(|| {
                name.char_indices()
                    .filter(|(_, c)| *c == '.')
                    .find_map(|(i, _)| self.wildcard.get(&name[i..]))
            })
            .unwrap_or(&self.default)
            .clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.select(hello.server_name()))
    }
}

/// The certificates of a CA Secret as trust anchors.
fn roots(ca: &pb::TlsSecret) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(&ca.certificate_chain)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
    }
    Ok(roots)
}

/// The verifier of client certificates a listener asks for, `None` when it asks for none.
fn client_verifier(
    tls: &pb::ListenerTls,
    secret: &impl Fn(&str) -> Option<pb::TlsSecret>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, TlsError> {
    if tls.client_ca_secret.is_empty() {
        return Ok(None);
    }
    let ca = secret(&tls.client_ca_secret).ok_or_else(|| {
        TlsError::ClientCa(format!(
            "tls secret {:?} does not exist",
            tls.client_ca_secret
        ))
    })?;
    let roots = roots(&ca).map_err(|e| TlsError::ClientCa(e.to_string()))?;
    let builder =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if tls.require_client_cert {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder
        .build()
        .map(Some)
        .map_err(|e| TlsError::ClientCa(e.to_string()))
}

/// A server config for a listener: its certificates by SNI (`secrets` resolves Secret names),
/// client certificates verified against `client_ca_secret` when set, the minimum version and
/// ALPN (default h2 then http/1.1).
pub fn server_config(
    tls: &pb::ListenerTls,
    secret: impl Fn(&str) -> Option<pb::TlsSecret>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut entries = Vec::with_capacity(tls.certificates.len());
    for (i, cert) in tls.certificates.iter().enumerate() {
        let material = secret(&cert.secret).ok_or_else(|| {
            TlsError::Certificate(format!(
                "certificates[{i}]: tls secret {:?} does not exist",
                cert.secret
            ))
        })?;
        entries.push((cert.server_names.clone(), certified_key(&material)?));
    }
    let resolver = SniResolver::new(entries)?;
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version() {
        pb::TlsVersion::Tls13 => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder =
        rustls::ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions)?;
    let builder = match client_verifier(tls, &secret)? {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = if tls.alpn.is_empty() {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect()
    };
    Ok(Arc::new(config))
}

/// The system's trusted roots, read once: every cluster trusting them shares one store.
static SYSTEM_ROOTS: Mutex<Option<Arc<rustls::RootCertStore>>> = Mutex::new(None);

/// The host's trusted roots (its CA bundle; `SSL_CERT_FILE` and `SSL_CERT_DIR` point
/// elsewhere), read on first use. A failure is not kept: the next compile reads again, so a
/// bundle installed later is found without a restart.
pub fn system_roots() -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut cached = SYSTEM_ROOTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(roots) = cached.as_ref() {
        return Ok(roots.clone());
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = match found.errors.first() {
            Some(e) => e.to_string(),
            None => "the host's CA bundle holds no certificate".to_string(),
        };
        return Err(TlsError::SystemRoots(format!(
            "none found ({why}); name a CA Secret in tls.ca_secret, or install the host's CA \
             certificates"
        )));
    }
    let roots = Arc::new(roots);
    *cached = Some(roots.clone());
    Ok(roots)
}

/// A client config for upstream TLS: trusts the certificates in `ca`, or the system's roots
/// without one, presents `client` when set (mTLS), and offers `h2` or `http/1.1` by ALPN.
pub fn client_config(
    ca: Option<&pb::TlsSecret>,
    client: Option<&pb::TlsSecret>,
    http2: bool,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = match ca {
        Some(ca) => Arc::new(roots(ca)?),
        None => system_roots()?,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some(secret) => {
            let (chain, key) = chain_and_key(secret)?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Arc::new(config))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn secret_for(names: &[&str]) -> pb::TlsSecret {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = rcgen::generate_simple_self_signed(names).unwrap();
        pb::TlsSecret {
            certificate_chain: cert.cert.pem(),
            private_key: cert.signing_key.serialize_pem(),
        }
    }

    #[test]
    fn sni_selects_exact_then_wildcard_then_default() {
        let a = certified_key(&secret_for(&["a.example"])).unwrap();
        let w = certified_key(&secret_for(&["*.shop.example"])).unwrap();
        let resolver = SniResolver::new(vec![
            (vec!["a.example".into()], a.clone()),
            (vec!["*.shop.example".into()], w.clone()),
        ])
        .unwrap();
        assert!(Arc::ptr_eq(&resolver.select(Some("A.example")), &a));
        assert!(Arc::ptr_eq(&resolver.select(Some("x.shop.example")), &w));
        assert!(Arc::ptr_eq(&resolver.select(Some("other")), &a));
        assert!(Arc::ptr_eq(&resolver.select(None), &a));
    }

    #[test]
    fn bad_material_is_reported() {
        let bad = pb::TlsSecret {
            certificate_chain: "not pem".into(),
            private_key: String::new(),
        };
        assert!(matches!(certified_key(&bad), Err(TlsError::Certificate(_))));
        let mut no_key = secret_for(&["a"]);
        no_key.private_key = String::new();
        assert!(matches!(
            certified_key(&no_key),
            Err(TlsError::PrivateKey(_))
        ));
        let tls = pb::ListenerTls::default();
        assert!(matches!(
            server_config(&tls, |_| None),
            Err(TlsError::NoCertificate)
        ));
    }
}
