//! Which control planes to trust over TLS: the CA in a PEM file (`--ca-file`), or the CA whose
//! SHA-256 fingerprint was given (`--ca-fingerprint`), as `portico-cp` prints it at start and
//! `portico ca show` prints it again. The CLI uses the same rules.
//!
//! A fingerprint pins the CA, not the server: the server's chain must hold a certificate with
//! that fingerprint, and the server's own certificate is then verified against it as against
//! any root (signature, validity, the host name of the URL).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A CA fingerprint: the SHA-256 of its certificate (DER).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of `der`.
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    /// 64 hex digits, upper or lower case, optionally separated by ':' and prefixed with
    /// `sha256:` (the forms tools print fingerprints in).
    fn from_str(s: &str) -> Result<Fingerprint, String> {
        let s = s.trim();
        let s = s
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("sha256:"))
            .map_or(s, |_| &s[7..]);
        let digits: String = s.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&digits)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a SHA-256 fingerprint (64 hex digits, as portico-cp prints it)"
                )
            })?;
        Ok(Fingerprint(bytes))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Why the trust settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The CA file cannot be read.
    #[error("reading the CA file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no certificate.
    #[error("the CA file {0} holds no PEM certificate")]
    Empty(PathBuf),
    /// Both ways were given.
    #[error("give either --ca-file or --ca-fingerprint, not both")]
    Both,
}

/// How the control plane's certificate is verified.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Against the CA certificates of a PEM file.
    CaFile {
        /// The file, for messages.
        path: PathBuf,
        /// Its contents.
        pem: String,
    },
    /// Against the CA with this fingerprint, found in the server's chain.
    Pinned(Fingerprint),
}

impl Trust {
    /// The trust the options give (`None`: neither was given).
    pub fn from_options(
        ca_file: Option<&Path>,
        fingerprint: Option<Fingerprint>,
    ) -> Result<Option<Trust>, TrustError> {
        match (ca_file, fingerprint) {
            (Some(_), Some(_)) => Err(TrustError::Both),
            (None, None) => Ok(None),
            (None, Some(f)) => Ok(Some(Trust::Pinned(f))),
            (Some(path), None) => {
                let pem = std::fs::read_to_string(path).map_err(|source| TrustError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                    .filter_map(Result::ok)
                    .count();
                if certs == 0 {
                    return Err(TrustError::Empty(path.to_path_buf()));
                }
                Ok(Some(Trust::CaFile {
                    path: path.to_path_buf(),
                    pem,
                }))
            }
        }
    }

    /// `endpoint` (an `https://` URL) verifying the server this way, and presenting
    /// `identity` (a client certificate and key, PEM) when given.
    pub fn apply(
        &self,
        endpoint: Endpoint,
        identity: Option<Identity>,
    ) -> Result<Endpoint, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new();
        if let Some(identity) = identity {
            tls = tls.identity(identity);
        }
        match self {
            Trust::CaFile { pem, .. } => {
                endpoint.tls_config(tls.ca_certificate(Certificate::from_pem(pem)))
            }
            Trust::Pinned(fingerprint) => {
                endpoint.tls_config_with_verifier(tls, Arc::new(PinnedCa::new(*fingerprint)))
            }
        }
    }
}

use rustls::pki_types::pem::PemObject as _;

/// Verifies a server against the CA of one fingerprint, which its chain must hold.
#[derive(Debug)]
pub struct PinnedCa {
    fingerprint: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedCa {
    /// A verifier pinning `fingerprint`.
    pub fn new(fingerprint: Fingerprint) -> PinnedCa {
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        PinnedCa {
            fingerprint,
            provider,
        }
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = std::iter::once(end_entity)
            .chain(intermediates)
            .find(|c| Fingerprint::of(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "no certificate the server presented has the CA fingerprint {} \
                     (--ca-fingerprint)",
                    self.fingerprint
                ))
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_the_usual_spellings() {
        let hex = "ab".repeat(32);
        let f: Fingerprint = hex.parse().unwrap();
        assert_eq!(f.to_string(), hex);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(colons.parse::<Fingerprint>().unwrap(), f);
        assert_eq!(format!("SHA256:{hex}").parse::<Fingerprint>().unwrap(), f);
        for bad in ["", "ab", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_and_both_ways_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "nothing").unwrap();
        assert!(matches!(
            Trust::from_options(Some(&path), None),
            Err(TrustError::Empty(_))
        ));
        let f = Fingerprint::of(b"x");
        assert!(matches!(
            Trust::from_options(Some(&path), Some(f)),
            Err(TrustError::Both)
        ));
        assert!(Trust::from_options(None, None).unwrap().is_none());
    }
}
