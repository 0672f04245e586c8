//! Admission of xDS clients (Envoy proxies, proxyless gRPC clients) with authentication on.
//!
//! The ADS service hands out the same config as the Discovery stream, so it admits the same
//! identities: an agent certificate over mutual TLS (the client's node id must be the
//! certificate's, its locality and metadata within what the identity's join token allowed),
//! or, for clients that cannot join (Envoy, gRPC libraries), a join token sent as
//! `authorization: Bearer TOKEN`. A join token admits any node id that is not a joined
//! agent's (no token client can pose as a Portico agent), and bounds the region and labels
//! that node may claim, so listener selectors scope what it gets exactly as they would for an
//! agent joined with that token. An xDS stream does not use up a join token's uses: it gets
//! no certificate, and it ends with the token's revocation or expiry. A client with neither
//! credential is refused before its first request is read.

use std::time::SystemTime;

use portico_api::pb::{Node, Role, Token};
use rustls_pki_types::CertificateDer;
use tonic::Request;

use super::identity::{AgentPeer, IdentityError, within};
use super::table::AuthTable;
use super::{Auth, AuthError, expired};

/// What authenticated an xDS stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XdsPeer {
    /// An agent certificate over mutual TLS.
    Agent(AgentPeer),
    /// A join token (named) in the `authorization` header.
    Token(String),
}

impl XdsPeer {
    /// Refuses `node` unless this credential allows it to claim what it claims.
    pub fn check_node(&self, table: &AuthTable, node: &Node) -> Result<(), IdentityError> {
        match self {
            XdsPeer::Agent(agent) => agent.check_hello(node),
            XdsPeer::Token(name) => {
                let token = table
                    .token(name)
                    .map(|e| &e.value)
                    .ok_or(IdentityError::Token(AuthError::UnknownToken))?;
                check_token_node(token, table, node)
            }
        }
    }

    /// Whether the credential still admits the stream in `table` at `now` (a revoked or
    /// expired certificate or token ends it).
    pub fn still_valid(&self, table: &AuthTable, now: SystemTime) -> bool {
        match self {
            XdsPeer::Agent(agent) => super::identity::valid(&agent.cert, table, now).is_ok(),
            XdsPeer::Token(name) => table
                .token(name)
                .is_some_and(|e| e.value.role() == Role::Join && !expired(&e.value, now)),
        }
    }
}

/// A node claimed with a join token: not a joined agent's, and within the token's bounds.
fn check_token_node(token: &Token, table: &AuthTable, node: &Node) -> Result<(), IdentityError> {
    if table.identity(&node.id).is_some() {
        return Err(IdentityError::AgentNode(node.id.clone()));
    }
    within(&node.id, &token.region, &token.labels, node)
}

impl Auth {
    /// The credential of an xDS stream: `None` with authentication off.
    pub fn xds_peer<T>(&self, req: &Request<T>) -> Result<Option<XdsPeer>, IdentityError> {
        if !self.on {
            return Ok(None);
        }
        let certs = req.peer_certs();
        if let Some(certs) = certs.as_deref().filter(|c| !c.is_empty()) {
            let certs: &[CertificateDer<'static>] = certs;
            return self.agent(Some(certs)).map(|a| Some(XdsPeer::Agent(a)));
        }
        let Some(token) = self.presented(req).map_err(IdentityError::Token)? else {
            return Err(IdentityError::NoXdsCredential);
        };
        if token.role() != Role::Join {
            return Err(IdentityError::Token(AuthError::WrongKind {
                name: token.name.clone(),
                role: token.role().name(),
                what: "xDS clients authenticate with a join token (portico token create --join)",
            }));
        }
        Ok(Some(XdsPeer::Token(token.name.clone())))
    }
}
