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

/// A certificate authority made at test time, issuing certificates for servers and clients.
pub struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("CA parameters: {e}"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key)
            .unwrap_or_else(|e| panic!("CA certificate: {e}"));
        Ca { issuer }
    }

    /// The CA certificate in PEM, without its key: a Secret that names it as a CA to trust,
    /// and what `SSL_CERT_FILE` may point to.
    pub fn trust(&self) -> pb::TlsSecret {
        pb::TlsSecret {
            certificate_chain: self.issuer.pem(),
            private_key: String::new(),
        }
    }

    /// The CA certificate, for a client to trust.
    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A certificate for `name` (a DNS name or an IP address) signed by this CA, usable by
    /// servers and clients alike.
    pub fn issue(&self, name: &str) -> SelfSigned {
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap_or_else(|e| panic!("certificate parameters for {name}: {e}"));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("key for {name}: {e}"));
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("signing a certificate for {name}: {e}"));
        SelfSigned {
            secret: pb::TlsSecret {
                certificate_chain: cert.pem(),
                private_key: key.serialize_pem(),
            },
            der: cert.der().clone(),
        }
    }
}
