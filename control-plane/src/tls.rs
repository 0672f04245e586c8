//! How the gRPC API is served: plaintext, TLS with the operator's certificate
//! (`--tls-cert`/`--tls-key`), or TLS with a certificate of the control plane's own CA (with
//! authentication on and no certificate given: `--auth on`, or the default `auto` on an
//! address that is not loopback). Plaintext is served only on loopback addresses, unless
//! `--allow-insecure-remote` says otherwise. Over TLS, client certificates of the
//! control plane's CA are asked for but optional: agents present them, the CLI does not.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::auth::ca::{Authority, CaError};
use crate::config::{AuthMode, Config};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the gRPC API is served with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serving {
    /// No TLS.
    Plaintext,
    /// TLS with `--tls-cert` and `--tls-key`.
    Given,
    /// TLS with a certificate of the control plane's CA, issued at start.
    Generated,
}

/// Why the gRPC API cannot be served as configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Plaintext on an address other machines reach.
    #[error(
        "refusing to serve plaintext gRPC on {addr}, which is not a loopback address, with \
         authentication off: serve TLS with --tls-cert and --tls-key (or with a certificate of \
         the control plane's own CA, with --auth on or auto), or pass --allow-insecure-remote \
         to serve plaintext anyway"
    )]
    InsecureRemote { addr: SocketAddr },
    /// The dashboard in plaintext on an address other machines reach.
    #[error(
        "refusing to serve the dashboard in plaintext on {addr}, which is not a loopback \
         address: serve TLS (--tls-cert and --tls-key, or --auth on), keep --web-listen on \
         loopback, turn it off (--web-listen off), or pass --allow-insecure-remote"
    )]
    InsecureWeb { addr: SocketAddr },
    /// A certificate or key file cannot be read.
    #[error("reading {flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A certificate or key file holds no usable PEM.
    #[error("{flag} {path}: {reason}")]
    Invalid {
        flag: &'static str,
        path: PathBuf,
        reason: &'static str,
    },
    /// The serving certificate could not be issued.
    #[error(transparent)]
    Issue(#[from] CaError),
}

/// Whether authentication is on for a control plane serving on `addr`.
pub fn auth_on(config: &Config, addr: SocketAddr) -> bool {
    match config.auth {
        AuthMode::On => true,
        AuthMode::Off => false,
        AuthMode::Auto => !addr.ip().is_loopback(),
    }
}

/// Refuses a plaintext dashboard beyond loopback unless `--allow-insecure-remote`.
pub fn check_web(config: &Config, web: SocketAddr, tls: bool) -> Result<(), TlsError> {
    if tls || web.ip().is_loopback() || config.allow_insecure_remote {
        Ok(())
    } else {
        Err(TlsError::InsecureWeb { addr: web })
    }
}

/// What a control plane serving on `addr` serves with, or why it must not start: the given
/// certificate; else, with authentication on (`--auth on`, or `auto` beyond loopback), a
/// certificate of its own CA; else plaintext, which beyond loopback needs
/// `--allow-insecure-remote`.
pub fn serving(config: &Config, addr: SocketAddr) -> Result<Serving, TlsError> {
    if config.tls_cert.is_some() && config.tls_key.is_some() {
        return Ok(Serving::Given);
    }
    if auth_on(config, addr) {
        return Ok(Serving::Generated);
    }
    if !addr.ip().is_loopback() && !config.allow_insecure_remote {
        return Err(TlsError::InsecureRemote { addr });
    }
    Ok(Serving::Plaintext)
}

/// The certificate chain and private key a control plane serving on `addr` presents, as
/// PEM (`None`: plaintext): the given files, or a certificate of `authority` issued now.
pub fn identity(
    serving: Serving,
    config: &Config,
    authority: &Authority,
    addr: SocketAddr,
) -> Result<Option<Pem>, TlsError> {
    match serving {
        Serving::Plaintext => Ok(None),
        Serving::Given => match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => given_identity(cert, key).map(Some),
            _ => Ok(None),
        },
        Serving::Generated => {
            let mut names = config.tls_san.clone();
            if !addr.ip().is_unspecified() {
                names.push(addr.ip().to_string());
            }
            if let Some(host) = hostname::get().ok().and_then(|h| h.into_string().ok()) {
                names.push(host);
            }
            // A name a certificate cannot hold (e.g. an odd hostname) is left out.
            names.retain(|n| rcgen::string::Ia5String::try_from(n.as_str()).is_ok());
            let (chain, key) = authority.serving(&names)?;
            Ok(Some(Pem {
                chain: chain.into_bytes(),
                key: key.into_bytes(),
            }))
        }
    }
}

/// A certificate chain and its private key, as PEM.
#[derive(Clone)]
pub struct Pem {
    pub chain: Vec<u8>,
    pub key: Vec<u8>,
}

/// Never shows the key.
impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pem")
            .field("chain_bytes", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// The gRPC server's TLS settings for `pem`. Client certificates of `authority` are verified
/// when presented.
pub fn grpc_config(pem: &Pem, authority: &Authority) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(&pem.chain, &pem.key))
        .client_ca_root(Certificate::from_pem(authority.certificate_pem()))
        .client_auth_optional(true)
        .timeout(HANDSHAKE_TIMEOUT)
}

/// The dashboard's TLS settings for `pem` (no client certificates: browsers bring tokens).
pub fn web_config(pem: &Pem) -> Result<rustls::ServerConfig, TlsError> {
    let invalid = |reason| TlsError::Invalid {
        flag: "--tls-cert",
        path: PathBuf::from("(the serving certificate)"),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.chain)
        .collect::<Result<_, _>>()
        .map_err(|_| invalid("no PEM certificate in it"))?;
    let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|_| invalid("no PEM private key"))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|_| invalid("the key does not match the certificate"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `--tls-cert` and `--tls-key`, checked so that a bad file is named at start.
fn given_identity(cert: &Path, key: &Path) -> Result<Pem, TlsError> {
    let read = |flag: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            flag,
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read("--tls-cert", cert)?;
    let key_pem = read("--tls-key", key)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            flag: "--tls-cert",
            path: cert.to_path_buf(),
            reason: "no PEM certificate in it",
        });
    }
    if PrivateKeyDer::from_pem_slice(&key_pem).is_err() {
        return Err(TlsError::Invalid {
            flag: "--tls-key",
            path: key.to_path_buf(),
            reason: "no PEM private key in it",
        });
    }
    Ok(Pem {
        chain: cert_pem,
        key: key_pem,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["portico-cp"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    #[test]
    fn loopback_is_plaintext_without_auth_and_elsewhere_tls_unless_consented() {
        let lo: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let lo6: SocketAddr = "[::1]:7000".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        let c = config(&[]);
        assert_eq!(serving(&c, lo).unwrap(), Serving::Plaintext);
        assert_eq!(serving(&c, lo6).unwrap(), Serving::Plaintext);
        assert!(!auth_on(&c, lo));
        assert!(auth_on(&c, any));
        // Beyond loopback the default is authentication on, over the CA's own certificate.
        assert_eq!(serving(&c, any).unwrap(), Serving::Generated);
        let c = config(&["--auth", "off"]);
        let err = serving(&c, any).unwrap_err().to_string();
        assert!(err.contains("--tls-cert"), "{err}");
        assert!(err.contains("--allow-insecure-remote"), "{err}");
        let c = config(&["--allow-insecure-remote", "--auth", "off"]);
        assert_eq!(serving(&c, any).unwrap(), Serving::Plaintext);
        let c = config(&["--auth", "on"]);
        assert_eq!(serving(&c, any).unwrap(), Serving::Generated);
        assert_eq!(serving(&c, lo).unwrap(), Serving::Generated);
        let c = config(&["--tls-cert", "c", "--tls-key", "k", "--auth", "off"]);
        assert_eq!(serving(&c, any).unwrap(), Serving::Given);
    }

    #[test]
    fn the_dashboard_is_plaintext_only_on_loopback_unless_consented() {
        let lo: SocketAddr = "127.0.0.1:7080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7080".parse().unwrap();
        let c = config(&[]);
        assert!(check_web(&c, lo, false).is_ok());
        assert!(check_web(&c, any, true).is_ok());
        let err = check_web(&c, any, false).unwrap_err().to_string();
        assert!(
            err.contains("dashboard in plaintext on 0.0.0.0:7080"),
            "{err}"
        );
        let c = config(&["--allow-insecure-remote"]);
        assert!(check_web(&c, any, false).is_ok());
    }

    #[test]
    fn unreadable_and_empty_certificate_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        let err = given_identity(&cert, &key).unwrap_err().to_string();
        assert!(err.contains("--tls-cert") && err.contains("c.pem"), "{err}");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let err = given_identity(&cert, &key).unwrap_err().to_string();
        assert!(
            err.contains("--tls-cert") && err.contains("no PEM"),
            "{err}"
        );
    }
}
