//! Certificates generated at test time, so no key material is checked in.

use portico_api::pb;
use rustls::pki_types::CertificateDer;

/// A self-signed certificate and its key.
pub struct SelfSigned {
    /// The certificate and key in PEM, as a tls Secret holds them.
    pub secret: pb::TlsSecret,
    /// The certificate, for a client to trust.
    pub der: CertificateDer<'static>,
}

impl SelfSigned {
    /// The certificate alone (no key): a Secret that names it as a CA to trust.
    pub fn ca(&self) -> pb::TlsSecret {
        pb::TlsSecret {
            certificate_chain: self.secret.certificate_chain.clone(),
            private_key: String::new(),
        }
    }
}

/// A new self-signed certificate for `host`.
pub fn self_signed(host: &str) -> SelfSigned {
    let cert = rcgen::generate_simple_self_signed(vec![host.to_string()])
        .unwrap_or_else(|e| panic!("generating a certificate for {host}: {e}"));
    SelfSigned {
        secret: pb::TlsSecret {
            certificate_chain: cert.cert.pem(),
            private_key: cert.signing_key.serialize_pem(),
        },
        der: cert.cert.der().clone(),
    }
}
