//! What a route does with the requests it takes: forward to clusters (one, or a weighted
//! split), redirect, or answer with a fixed response.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use portico_api::pb::{self, route_action};

use super::FieldError;
use crate::upstream::Upstream;

/// What a route does.
#[derive(Debug)]
pub enum Action {
    /// Forward to a cluster, chosen at random by weight when there are several.
    Forward(Targets),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with a fixed response.
    Direct {
        /// The status.
        status: StatusCode,
        /// The body.
        body: Bytes,
        /// The Content-Type.
        content_type: HeaderValue,
    },
}

/// A compiled redirect; `None` parts are kept from the request.
#[derive(Debug)]
pub struct Redirect {
    /// "http" or "https".
    pub scheme: Option<String>,
    /// The new host.
    pub host: Option<String>,
    /// The new port.
    pub port: Option<u16>,
    /// The new path.
    pub path: Option<String>,
    /// The redirect status.
    pub status: StatusCode,
}

/// The clusters a route forwards to, with their weights (summing above zero).
#[derive(Debug)]
pub struct Targets(Vec<(Arc<Upstream>, u32)>);

impl Targets {
    /// The cluster for one request.
    pub fn pick(&self) -> &Upstream {
        let total: u64 = self.0.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut point = if self.0.len() > 1 {
            rand::random_range(0..total.max(1))
        } else {
            0
        };
        for (upstream, weight) in &self.0 {
            if point < u64::from(*weight) {
                return upstream;
            }
            point -= u64::from(*weight);
        }
        // Unreachable while weights sum above zero, which compile checks; any target is a safe
        // answer all the same.
        &self.0[0].0
    }
}

/// Cluster names resolved to compiled clusters.
type Clusters = HashMap<String, Arc<Upstream>>;

/// Compiles a route's action; `clusters` resolves cluster names.
pub fn compile(spec: Option<&pb::RouteAction>, clusters: &Clusters) -> Result<Action, FieldError> {
    match spec.and_then(|a| a.action.as_ref()) {
        None => Err(("action".into(), "no action".into())),
        Some(route_action::Action::Cluster(name)) => {
            let one = resolve(clusters, name, "action.cluster".into())?;
            Ok(Action::Forward(Targets(vec![(one, 1)])))
        }
        Some(route_action::Action::WeightedClusters(w)) => weighted(w, clusters),
        Some(route_action::Action::Redirect(r)) => redirect(r).map(Action::Redirect),
        Some(route_action::Action::DirectResponse(d)) => direct(d),
    }
}

/// The cluster `name`, named at `field` of the route.
fn resolve(clusters: &Clusters, name: &str, field: String) -> Result<Arc<Upstream>, FieldError> {
    clusters
        .get(name)
        .cloned()
        .ok_or_else(|| (field, format!("cluster {name:?} does not exist")))
}

fn weighted(w: &pb::WeightedClusters, clusters: &Clusters) -> Result<Action, FieldError> {
    let mut targets = Vec::with_capacity(w.clusters.len());
    for (i, wc) in w.clusters.iter().enumerate() {
        let field = format!("action.weighted_clusters.clusters[{i}].cluster");
        targets.push((resolve(clusters, &wc.cluster, field)?, wc.weight));
    }
    if targets.iter().map(|(_, w)| u64::from(*w)).sum::<u64>() == 0 {
        return Err((
            "action.weighted_clusters".into(),
            "weights must sum above zero".into(),
        ));
    }
    Ok(Action::Forward(Targets(targets)))
}

fn redirect(r: &pb::Redirect) -> Result<Redirect, FieldError> {
    let status = match r.status {
        0 => StatusCode::MOVED_PERMANENTLY,
        301 | 302 | 303 | 307 | 308 => StatusCode::from_u16(r.status as u16)
            .map_err(|e| ("action.redirect.status".to_string(), e.to_string()))?,
        other => {
            return Err((
                "action.redirect.status".into(),
                format!("{other} is not a redirect status"),
            ));
        }
    };
    let port = match r.port {
        0 => None,
        p => Some(
            u16::try_from(p)
                .map_err(|_| ("action.redirect.port".to_string(), format!("bad port {p}")))?,
        ),
    };
    let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
    Ok(Redirect {
        scheme: non_empty(&r.scheme),
        host: non_empty(&r.host),
        port,
        path: non_empty(&r.path),
        status,
    })
}

/// The redirect of an HTTP→HTTPS redirect listener: the request's host, path and query over
/// HTTPS, on `port` (443 and 0 leave it out).
pub fn https_redirect(r: &pb::HttpsRedirect) -> Result<Redirect, FieldError> {
    let field = |f: &str| format!("redirect_to_https.{f}");
    let compiled = redirect(&pb::Redirect {
        scheme: "https".into(),
        port: if r.port == 443 { 0 } else { r.port },
        status: r.status,
        ..Default::default()
    })
    .map_err(|(f, message)| (field(f.trim_start_matches("action.redirect.")), message))?;
    Ok(compiled)
}

fn direct(d: &pb::DirectResponse) -> Result<Action, FieldError> {
    let status = u16::try_from(d.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| {
            (
                "action.direct_response.status".to_string(),
                format!("bad status {}", d.status),
            )
        })?;
    let content_type = if d.content_type.is_empty() {
        HeaderValue::from_static("text/plain")
    } else {
        HeaderValue::from_str(&d.content_type).map_err(|e| {
            (
                "action.direct_response.content_type".to_string(),
                e.to_string(),
            )
        })?
    };
    Ok(Action::Direct {
        status,
        body: Bytes::from(d.body.clone()),
        content_type,
    })
}
