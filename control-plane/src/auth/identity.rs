//! Agent identities: the Identity service that exchanges a join token for a client
//! certificate and renews it, and the checks a Discovery stream's certificate passes.
//!
//! An agent's identity (`<root>/v1/auth/agents/<node id>`) records what its certificates vouch
//! for: the node id, the region and labels its join token allows it to claim, and the join
//! generation. Each join of a node id starts a new generation; a certificate names the node and
//! its generation, so the certificates of an earlier join stop being valid. Revoking an agent
//! marks its identity revoked: none of its certificates is valid any more, its streams close,
//! and only a join token created after the revocation admits the node again. A join is refused
//! for a node id whose newest certificate is still valid, so a join token lets its holder join
//! as a new node, never as one that runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use portico_api::pb::identity_server::Identity;
use portico_api::pb::{
    AgentIdentity, CertificateResponse, JoinRequest, Node, RenewRequest, Role, Token,
};
use rustls_pki_types::CertificateDer;
use tonic::{Request, Response, Status};

use super::ca::{AgentCert, CaError, Issued};
use super::table::{AuthTable, Entry};
use super::{Auth, AuthError, expired, hash};
use crate::keys;
use crate::registry::{system_time, timestamp};
use crate::store::{Compare, Op, Store, StoreError, Txn, TxnOutcome};

/// How often a join or renewal is retried when another write to the same token or identity
/// committed first.
const MAX_ATTEMPTS: usize = 8;

/// Why an agent was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No client certificate on the connection.
    #[error(
        "authentication is on and the agent presented no client certificate: start it with \
         --join-token and --ca-fingerprint (or --ca-file)"
    )]
    NoCertificate,
    /// A certificate of the CA that is not an agent certificate.
    #[error("the client certificate names no agent")]
    NotAnAgent,
    /// No identity for the certificate's node.
    #[error("node {0:?} has no identity here (it never joined, or its identity was deleted)")]
    Unknown(String),
    /// The node was revoked.
    #[error("the certificates of node {0:?} are revoked")]
    Revoked(String),
    /// The certificate belongs to an earlier join of the node.
    #[error("the certificate of node {0:?} is from an earlier join")]
    Superseded(String),
    /// The certificate has expired.
    #[error("the certificate of node {0:?} has expired; the agent joins again")]
    Expired(String),
    /// The Hello names another node than the certificate.
    #[error("the certificate is node {cert:?}'s, but Hello says node {hello:?}")]
    NodeMismatch { cert: String, hello: String },
    /// The Hello claims a region the identity does not allow.
    #[error("node {node:?} may claim region {allowed:?} only, not {claimed:?}")]
    Region {
        node: String,
        allowed: String,
        claimed: String,
    },
    /// The Hello claims a label the identity does not allow.
    #[error(
        "node {node:?} may not claim label {key}={value:?}: its join token allows only {allowed}"
    )]
    Label {
        node: String,
        key: String,
        value: String,
        allowed: String,
    },
    /// The join token is unknown, expired or not a join token.
    #[error(transparent)]
    Token(AuthError),
    /// An xDS stream with neither an agent certificate nor a token.
    #[error(
        "authentication is on and the xDS client presented neither an agent certificate nor a \
         join token (authorization: Bearer TOKEN; portico token create --join)"
    )]
    NoXdsCredential,
    /// A token-authenticated xDS client claims a joined agent's node id.
    #[error("node {0:?} is a joined agent's: it authenticates with its certificate, not a token")]
    AgentNode(String),
    /// The join token has no uses left.
    #[error("join token {0:?} has been used as often as it allows")]
    UsedUp(String),
    /// The node holds a valid certificate already.
    #[error(
        "node {0:?} holds a valid certificate already: the running agent renews it; to replace \
         it, revoke it first (portico agents revoke {0})"
    )]
    Live(String),
    /// The node was revoked after the join token was made.
    #[error(
        "node {0:?} was revoked after join token {1:?} was created: only a newer join token \
         admits it again"
    )]
    RevokedBefore(String, String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The certificate could not be issued.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Other joins kept committing first.
    #[error("the node's identity kept changing concurrently; try again")]
    Busy,
}

/// An agent authenticated by its certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentPeer {
    /// What its certificate says.
    pub cert: AgentCert,
    /// The region it must claim (empty: any).
    pub region: String,
    /// The only labels it may claim (empty: any).
    pub labels: BTreeMap<String, String>,
}

impl AgentPeer {
    /// Refuses a Hello for another node than the certificate's, or claiming a region or labels
    /// the identity does not allow.
    pub fn check_hello(&self, node: &Node) -> Result<(), IdentityError> {
        let id = &self.cert.node_id;
        if node.id != *id {
            return Err(IdentityError::NodeMismatch {
                cert: id.clone(),
                hello: node.id.clone(),
            });
        }
        within(id, &self.region, &self.labels, node)
    }
}

/// Whether `node` claims only what a region bound and a label bound allow.
pub(super) fn within(
    id: &str,
    region: &str,
    labels: &BTreeMap<String, String>,
    node: &Node,
) -> Result<(), IdentityError> {
    if !region.is_empty() && node.region != region {
        return Err(IdentityError::Region {
            node: id.to_string(),
            allowed: region.to_string(),
            claimed: node.region.clone(),
        });
    }
    if labels.is_empty() {
        return Ok(());
    }
    for (key, value) in &node.labels {
        if labels.get(key) != Some(value) {
            let allowed: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            return Err(IdentityError::Label {
                node: id.to_string(),
                key: key.clone(),
                value: value.clone(),
                allowed: allowed.join(","),
            });
        }
    }
    Ok(())
}

impl Auth {
    /// The agent the TLS peer certificates `certs` authenticate.
    pub fn agent(
        &self,
        certs: Option<&[CertificateDer<'static>]>,
    ) -> Result<AgentPeer, IdentityError> {
        let first = certs
            .and_then(|c| c.first())
            .ok_or(IdentityError::NoCertificate)?;
        let cert = super::ca::agent_cert(first).ok_or(IdentityError::NotAnAgent)?;
        valid(&cert, &self.table(), SystemTime::now())
    }
}

/// `cert` as the identities of `table` see it at `now`.
pub fn valid(
    cert: &AgentCert,
    table: &AuthTable,
    now: SystemTime,
) -> Result<AgentPeer, IdentityError> {
    let id = &cert.node_id;
    let identity = &table
        .identity(id)
        .ok_or_else(|| IdentityError::Unknown(id.clone()))?
        .value;
    if identity.revoked.is_some() {
        return Err(IdentityError::Revoked(id.clone()));
    }
    if identity.generation != cert.generation {
        return Err(IdentityError::Superseded(id.clone()));
    }
    if cert.not_after <= now {
        return Err(IdentityError::Expired(id.clone()));
    }
    Ok(AgentPeer {
        cert: cert.clone(),
        region: identity.region.clone(),
        labels: identity.labels.clone(),
    })
}

/// The Identity service.
pub struct IdentityService {
    auth: Arc<Auth>,
}

impl IdentityService {
    /// The service.
    pub fn new(auth: Arc<Auth>) -> IdentityService {
        IdentityService { auth }
    }

    async fn join_inner(&self, req: JoinRequest) -> Result<CertificateResponse, IdentityError> {
        let node = req
            .node
            .ok_or_else(|| IdentityError::BadRequest("node is required".into()))?;
        portico_api::node::check_id(&node.id)
            .map_err(|e| IdentityError::BadRequest(format!("node.id: {e}")))?;
        portico_api::node::check_labels(&node.labels)
            .map_err(|e| IdentityError::BadRequest(format!("node.labels: {e}")))?;
        let sha256 = hash(req.token.trim());
        for _ in 0..MAX_ATTEMPTS {
            let table = self.auth.table();
            let token = table
                .token_by_hash(&sha256)
                .ok_or(IdentityError::Token(AuthError::UnknownToken))?;
            let known = table.identity(&node.id);
            check_join(
                &token.value,
                known.map(|e| &e.value),
                &node,
                SystemTime::now(),
            )?;
            let generation = known.map_or(1, |e| e.value.generation + 1);
            let issued = self.auth.authority.issue_agent(
                &req.csr,
                &node.id,
                generation,
                self.auth.agent_cert_ttl,
            )?;
            let identity = AgentIdentity {
                node_id: node.id.clone(),
                region: token.value.region.clone(),
                labels: token.value.labels.clone(),
                join_token: token.value.name.clone(),
                generation,
                joined: Some(timestamp(SystemTime::now())),
                not_after: Some(timestamp(issued.not_after)),
                revoked: None,
            };
            let mut used = token.value.clone();
            used.uses = used.uses.saturating_add(1);
            let token_key = self.auth.keys.token(&used.name);
            let identity_key = self.auth.keys.identity(&node.id);
            let txn = Txn {
                compares: vec![
                    Compare::ModRevision {
                        key: token_key.clone(),
                        revision: token.mod_revision,
                    },
                    Compare::ModRevision {
                        key: identity_key.clone(),
                        revision: known.map_or(0, |e| e.mod_revision),
                    },
                ],
                ops: vec![
                    Op::Put {
                        key: token_key,
                        value: keys::encode(&used),
                        lease: None,
                    },
                    Op::Put {
                        key: identity_key,
                        value: keys::encode(&identity),
                        lease: None,
                    },
                ],
            };
            match self.auth.store.txn(txn).await? {
                TxnOutcome::Committed(revision) => {
                    self.auth.state.shown(revision).await;
                    tracing::info!(node = %node.id, token = %used.name, generation, "agent joined");
                    return Ok(self.answer(issued));
                }
                // This replica's table was behind: catch up and decide again.
                TxnOutcome::Conflict(revision) => self.auth.state.shown(revision).await,
            }
        }
        Err(IdentityError::Busy)
    }

    async fn renew_inner(
        &self,
        peer: AgentPeer,
        csr: &[u8],
    ) -> Result<CertificateResponse, IdentityError> {
        let id = &peer.cert.node_id;
        for _ in 0..MAX_ATTEMPTS {
            let table = self.auth.table();
            // Checked again: the identity may have changed since the connection was made.
            valid(&peer.cert, &table, SystemTime::now())?;
            let Some(Entry {
                value: identity,
                mod_revision,
            }) = table.identity(id).cloned()
            else {
                return Err(IdentityError::Unknown(id.clone()));
            };
            let issued = self.auth.authority.issue_agent(
                csr,
                id,
                identity.generation,
                self.auth.agent_cert_ttl,
            )?;
            let key = self.auth.keys.identity(id);
            let renewed = AgentIdentity {
                not_after: Some(timestamp(issued.not_after)),
                ..identity
            };
            let txn = Txn {
                compares: vec![Compare::ModRevision {
                    key: key.clone(),
                    revision: mod_revision,
                }],
                ops: vec![Op::Put {
                    key,
                    value: keys::encode(&renewed),
                    lease: None,
                }],
            };
            match self.auth.store.txn(txn).await? {
                TxnOutcome::Committed(revision) => {
                    self.auth.state.shown(revision).await;
                    tracing::debug!(node = %id, "agent certificate renewed");
                    return Ok(self.answer(issued));
                }
                TxnOutcome::Conflict(revision) => self.auth.state.shown(revision).await,
            }
        }
        Err(IdentityError::Busy)
    }

    fn answer(&self, issued: Issued) -> CertificateResponse {
        let not_after = issued
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        CertificateResponse {
            certificate_pem: issued.certificate_pem,
            ca_pem: self.auth.authority.certificate_pem().to_string(),
            not_after_unix_ms: not_after,
        }
    }
}

/// Revokes the certificates of `node_id`: its identity is marked revoked (streams holding its
/// certificates close as every replica sees the change); false when the node has no identity.
pub async fn revoke(auth: &Auth, node_id: &str) -> Result<bool, IdentityError> {
    for _ in 0..MAX_ATTEMPTS {
        let table = auth.table();
        let Some(entry) = table.identity(node_id) else {
            return Ok(false);
        };
        let revoked = AgentIdentity {
            revoked: Some(timestamp(SystemTime::now())),
            ..entry.value.clone()
        };
        let key = auth.keys.identity(node_id);
        let txn = Txn {
            compares: vec![Compare::ModRevision {
                key: key.clone(),
                revision: entry.mod_revision,
            }],
            ops: vec![Op::Put {
                key,
                value: keys::encode(&revoked),
                lease: None,
            }],
        };
        match auth.store.txn(txn).await? {
            TxnOutcome::Committed(revision) => {
                auth.state.shown(revision).await;
                tracing::info!(node = node_id, "agent certificates revoked");
                return Ok(true);
            }
            TxnOutcome::Conflict(revision) => auth.state.shown(revision).await,
        }
    }
    Err(IdentityError::Busy)
}

/// Refuses a join of `node` with `token` when the token cannot join it: not a join token,
/// expired, used up, the node outside its bounds, the node running with a valid certificate,
/// or revoked after the token was made.
fn check_join(
    token: &Token,
    known: Option<&AgentIdentity>,
    node: &Node,
    now: SystemTime,
) -> Result<(), IdentityError> {
    if token.role() != Role::Join {
        return Err(IdentityError::Token(AuthError::WrongKind {
            name: token.name.clone(),
            role: token.role().name(),
            what: "only join tokens let agents join (portico token create --join)",
        }));
    }
    if expired(token, now) {
        return Err(IdentityError::Token(AuthError::Expired {
            name: token.name.clone(),
        }));
    }
    if token.max_uses > 0 && token.uses >= token.max_uses {
        return Err(IdentityError::UsedUp(token.name.clone()));
    }
    within(&node.id, &token.region, &token.labels, node)?;
    if let Some(identity) = known {
        match &identity.revoked {
            Some(revoked) => {
                let created = token.created.as_ref().map(system_time);
                if created.is_none_or(|c| c <= system_time(revoked)) {
                    return Err(IdentityError::RevokedBefore(
                        node.id.clone(),
                        token.name.clone(),
                    ));
                }
            }
            None => {
                if identity
                    .not_after
                    .as_ref()
                    .is_some_and(|t| system_time(t) > now)
                {
                    return Err(IdentityError::Live(node.id.clone()));
                }
            }
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn join(
        &self,
        req: Request<JoinRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        let answer = self.join_inner(req.into_inner()).await;
        answer.map(Response::new).map_err(|e| {
            tracing::info!(error = %e, "join refused");
            Status::from(e)
        })
    }

    async fn renew(
        &self,
        req: Request<RenewRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        let certs = req.peer_certs();
        let peer = self.auth.agent(certs.as_deref().map(Vec::as_slice))?;
        let answer = self.renew_inner(peer, &req.into_inner().csr).await;
        answer.map(Response::new).map_err(Status::from)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn node(id: &str, region: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            id: id.into(),
            region: region.into(),
            zone: "z".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn join_token(region: &str, labels: &[(&str, &str)], created: SystemTime) -> Token {
        Token {
            name: "fleet".into(),
            role: Role::Join as i32,
            created: Some(timestamp(created)),
            region: region.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_join_token_bounds_region_and_labels() {
        let now = SystemTime::now();
        let t = join_token("eu", &[("tier", "edge")], now);
        assert!(check_join(&t, None, &node("a", "eu", &[("tier", "edge")]), now).is_ok());
        assert!(check_join(&t, None, &node("a", "eu", &[]), now).is_ok());
        assert!(matches!(
            check_join(&t, None, &node("a", "us", &[]), now),
            Err(IdentityError::Region { .. })
        ));
        assert!(matches!(
            check_join(&t, None, &node("a", "eu", &[("tier", "payments")]), now),
            Err(IdentityError::Label { .. })
        ));
        assert!(matches!(
            check_join(&t, None, &node("a", "eu", &[("pci", "yes")]), now),
            Err(IdentityError::Label { .. })
        ));
        // Without bounds, anything.
        let open = join_token("", &[], now);
        assert!(check_join(&open, None, &node("a", "us", &[("x", "y")]), now).is_ok());
    }

    #[test]
    fn joins_are_refused_when_used_up_expired_live_or_revoked_after_the_token() {
        let now = SystemTime::now();
        let mut t = join_token("", &[], now);
        t.max_uses = 2;
        t.uses = 2;
        assert!(matches!(
            check_join(&t, None, &node("a", "eu", &[]), now),
            Err(IdentityError::UsedUp(_))
        ));
        let mut t = join_token("", &[], now);
        t.expires = Some(timestamp(now - Duration::from_secs(1)));
        assert!(matches!(
            check_join(&t, None, &node("a", "eu", &[]), now),
            Err(IdentityError::Token(AuthError::Expired { .. }))
        ));
        let mut api = join_token("", &[], now);
        api.role = Role::Admin as i32;
        assert!(matches!(
            check_join(&api, None, &node("a", "eu", &[]), now),
            Err(IdentityError::Token(AuthError::WrongKind { .. }))
        ));
        let t = join_token("", &[], now);
        let live = AgentIdentity {
            node_id: "a".into(),
            generation: 1,
            not_after: Some(timestamp(now + Duration::from_secs(60))),
            ..Default::default()
        };
        assert!(matches!(
            check_join(&t, Some(&live), &node("a", "eu", &[]), now),
            Err(IdentityError::Live(_))
        ));
        let lapsed = AgentIdentity {
            not_after: Some(timestamp(now - Duration::from_secs(60))),
            ..live.clone()
        };
        assert!(check_join(&t, Some(&lapsed), &node("a", "eu", &[]), now).is_ok());
        let revoked = AgentIdentity {
            revoked: Some(timestamp(now)),
            ..live
        };
        let old = join_token("", &[], now - Duration::from_secs(10));
        assert!(matches!(
            check_join(&old, Some(&revoked), &node("a", "eu", &[]), now),
            Err(IdentityError::RevokedBefore(..))
        ));
        let newer = join_token("", &[], now + Duration::from_secs(1));
        assert!(check_join(&newer, Some(&revoked), &node("a", "eu", &[]), now).is_ok());
    }

    #[test]
    fn a_hello_must_name_the_certificate_node() {
        let peer = AgentPeer {
            cert: AgentCert {
                node_id: "edge-1".into(),
                generation: 1,
                not_after: SystemTime::now() + Duration::from_secs(60),
            },
            region: "eu".into(),
            labels: BTreeMap::new(),
        };
        assert!(peer.check_hello(&node("edge-1", "eu", &[])).is_ok());
        assert!(matches!(
            peer.check_hello(&node("edge-2", "eu", &[])),
            Err(IdentityError::NodeMismatch { .. })
        ));
        assert!(matches!(
            peer.check_hello(&node("edge-1", "us", &[])),
            Err(IdentityError::Region { .. })
        ));
    }
}
