//! The control plane's certificate authority: generated on the first start of an installation
//! and kept in the store (`<root>/v1/auth/ca`), so every replica serves and issues under the
//! same CA and agents and the CLI pin one fingerprint.
//!
//! It issues two kinds of certificates:
//! - a serving certificate for each replica, at start, for the names given (`--tls-san`) and
//!   the loopback names; it lives in memory only and is issued again at the next start;
//! - agent client certificates ([`Authority::issue_agent`]), from a certificate signing
//!   request, naming the node id and its join generation in two URI subject alternative
//!   names: `spiffe://portico/node/<id>` and `urn:portico:generation:<n>`. Only the public key
//!   of the request is used: the control plane decides every other field.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use portico_api::pb::CaRecord;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

use crate::keys::{self, Keys};
use crate::metered::MeteredStore;
use crate::store::{Compare, Op, Store, StoreError, Txn, TxnOutcome};

/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this long before they are issued, so a replica whose clock is behind the
/// issuing one's accepts them at once.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// The URI naming an agent's node in its certificate: this prefix and the node id.
pub const NODE_URI_PREFIX: &str = "spiffe://portico/node/";
/// The URI naming the join generation in an agent certificate: this prefix and the number.
pub const GENERATION_URI_PREFIX: &str = "urn:portico:generation:";

/// Why the CA could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The store failed.
    #[error("the certificate authority in the store: {0}")]
    Store(#[from] StoreError),
    /// The stored CA is unreadable.
    #[error("the stored certificate authority is unreadable: {0}")]
    Corrupt(String),
    /// Generating or signing failed.
    #[error("issuing a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    /// A certificate signing request is malformed or its signature does not verify.
    #[error("the certificate signing request is invalid: {0}")]
    Request(rcgen::Error),
}

/// A certificate issued to an agent.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// When it expires.
    pub not_after: SystemTime,
}

/// What an agent certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCert {
    /// The node id.
    pub node_id: String,
    /// The join generation it was issued under.
    pub generation: u64,
    /// When it expires.
    pub not_after: SystemTime,
}

/// The certificate authority.
pub struct Authority {
    certificate_pem: String,
    fingerprint: String,
    not_after: SystemTime,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// A new CA, and the record that stores it.
    pub fn generate() -> Result<(Authority, CaRecord), CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Portico");
        name.push(DnType::CommonName, "Portico control plane CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_VALIDITY).into();
        params.serial_number = Some(serial());
        let cert = params.self_signed(&key)?;
        let record = CaRecord {
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
        };
        Ok((Authority::from_record(&record)?, record))
    }

    /// The CA a record holds.
    pub fn from_record(record: &CaRecord) -> Result<Authority, CaError> {
        let corrupt = |what: &str| CaError::Corrupt(what.to_string());
        let der = CertificateDer::from_pem_slice(record.certificate_pem.as_bytes())
            .map_err(|_| corrupt("the certificate is not PEM"))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| corrupt("the certificate does not parse"))?;
        let not_after = unix_time(parsed.validity().not_after.timestamp());
        let key = KeyPair::from_pem(&record.private_key_pem)
            .map_err(|_| corrupt("the private key is not a PEM key"))?;
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|_| corrupt("the certificate cannot issue"))?;
        Ok(Authority {
            certificate_pem: record.certificate_pem.clone(),
            fingerprint: fingerprint(&der),
            not_after,
            issuer,
        })
    }

    /// The installation's CA: the stored one, or a new one stored now. When replicas start
    /// together, the first write wins and the others load it.
    pub async fn load_or_create(store: &MeteredStore, keys: &Keys) -> Result<Authority, CaError> {
        let key = keys.ca();
        if let Some(kv) = store.get(&key).await? {
            return Self::decode(&kv.key, &kv.value);
        }
        let (authority, record) = Authority::generate()?;
        let txn = Txn {
            compares: vec![Compare::ModRevision {
                key: key.clone(),
                revision: 0,
            }],
            ops: vec![Op::Put {
                key: key.clone(),
                value: keys::encode(&record),
                lease: None,
            }],
        };
        match store.txn(txn).await? {
            TxnOutcome::Committed(_) => {
                tracing::info!(fingerprint = %authority.fingerprint, "created the certificate authority");
                Ok(authority)
            }
            TxnOutcome::Conflict(_) => match store.get(&key).await? {
                Some(kv) => Self::decode(&kv.key, &kv.value),
                None => Err(CaError::Corrupt("it vanished while being created".into())),
            },
        }
    }

    fn decode(key: &str, value: &[u8]) -> Result<Authority, CaError> {
        let record: CaRecord =
            keys::decode(key, value).map_err(|e| CaError::Corrupt(e.to_string()))?;
        Authority::from_record(&record)
    }

    /// Lowercase hex SHA-256 of the CA certificate (DER).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// When the CA expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// A serving certificate for `names` (host names or IP addresses) and the loopback names,
    /// as a PEM chain (the certificate, then the CA) and its PEM key.
    pub fn serving(&self, names: &[String]) -> Result<(String, String), CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Portico");
        dn.push(DnType::CommonName, "portico-cp");
        params.distinguished_name = dn;
        let mut sans: Vec<SanType> = Vec::new();
        let loopback = ["localhost", "127.0.0.1", "::1"].map(String::from);
        for name in loopback.iter().chain(names) {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.as_str().try_into()?),
            };
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = self.not_after.max(now).into();
        params.serial_number = Some(serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((
            format!("{}{}", cert.pem(), self.certificate_pem),
            key.serialize_pem(),
        ))
    }

    /// A client certificate for `node_id` at join `generation`, valid for `ttl`, for the key
    /// of the certificate signing request `csr` (DER).
    pub fn issue_agent(
        &self,
        csr: &[u8],
        node_id: &str,
        generation: u64,
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        let request =
            CertificateSigningRequestParams::from_der(&csr.into()).map_err(CaError::Request)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Portico agents");
        dn.push(DnType::CommonName, node_id);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::URI(format!("{NODE_URI_PREFIX}{node_id}").try_into()?),
            SanType::URI(format!("{GENERATION_URI_PREFIX}{generation}").try_into()?),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        // X.509 times have whole seconds: round the expiry down, so it is never later than
        // what the certificate says.
        let not_after = unix_time(
            (now + ttl)
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );
        params.not_before = (now - BACKDATE).into();
        params.not_after = not_after.into();
        params.serial_number = Some(serial());
        let cert = params.signed_by(&request.public_key, &self.issuer)?;
        Ok(Issued {
            certificate_pem: cert.pem(),
            not_after,
        })
    }
}

/// What an agent certificate (DER, already verified against the CA by the TLS layer) says;
/// `None` when it is not one.
pub fn agent_cert(der: &[u8]) -> Option<AgentCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    let mut node_id = None;
    let mut generation = None;
    for name in &names.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            if let Some(id) = uri.strip_prefix(NODE_URI_PREFIX) {
                node_id = Some(id.to_string());
            } else if let Some(g) = uri.strip_prefix(GENERATION_URI_PREFIX) {
                generation = g.parse().ok();
            }
        }
    }
    Some(AgentCert {
        node_id: node_id?,
        generation: generation?,
        not_after: unix_time(cert.validity().not_after.timestamp()),
    })
}

/// Lowercase hex SHA-256 of a certificate (DER): how fingerprints are written everywhere.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, and without a leading zero byte that DER would strip.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn unix_time(seconds: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn csr() -> (KeyPair, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let request = CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        let der = request.der().to_vec();
        (key, der)
    }

    #[test]
    fn a_stored_authority_loads_back_with_the_same_fingerprint() {
        let (ca, record) = Authority::generate().unwrap();
        let again = Authority::from_record(&record).unwrap();
        assert_eq!(ca.fingerprint(), again.fingerprint());
        assert_eq!(ca.fingerprint().len(), 64);
        assert!(ca.not_after() > SystemTime::now() + Duration::from_secs(365 * 24 * 3600));
    }

    #[test]
    fn agent_certificates_name_the_node_and_generation_and_expire_after_the_ttl() {
        let (ca, _) = Authority::generate().unwrap();
        let (_, request) = csr();
        let issued = ca
            .issue_agent(&request, "edge-1", 3, Duration::from_secs(3600))
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap();
        let cert = agent_cert(&der).unwrap();
        assert_eq!(cert.node_id, "edge-1");
        assert_eq!(cert.generation, 3);
        assert_eq!(cert.not_after, issued.not_after);
        let left = issued.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(left <= Duration::from_secs(3600) && left > Duration::from_secs(3500));
    }

    #[test]
    fn a_request_with_a_bad_signature_is_refused() {
        let (ca, _) = Authority::generate().unwrap();
        let (_, mut request) = csr();
        let last = request.len() - 1;
        request[last] ^= 0xff;
        assert!(matches!(
            ca.issue_agent(&request, "edge-1", 1, Duration::from_secs(60)),
            Err(CaError::Request(_))
        ));
        assert!(
            ca.issue_agent(b"junk", "edge-1", 1, Duration::from_secs(60))
                .is_err()
        );
    }

    #[test]
    fn serving_certificates_chain_to_the_ca_and_name_loopback_and_given_hosts() {
        let (ca, _) = Authority::generate().unwrap();
        let (chain, key) = ca.serving(&["cp.example".to_string()]).unwrap();
        let certs: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(fingerprint(&certs[1]), ca.fingerprint());
        let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
        let names = format!("{:?}", leaf.subject_alternative_name().unwrap().unwrap());
        for name in ["\"localhost\"", "[127, 0, 0, 1]", "\"cp.example\""] {
            assert!(names.contains(name), "{names}");
        }
        assert!(KeyPair::from_pem(&key).is_ok());
        // Not an agent certificate.
        assert_eq!(agent_cert(&certs[0]), None);
    }
}
