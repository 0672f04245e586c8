//! `cors`: preflights answered by the agent, and the CORS headers of other responses.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use portico_api::pb;

use super::Rejection;
use crate::body::{self, ProxyBody};
use crate::compile::duration_or;

/// A compiled `cors` policy.
#[derive(Debug)]
pub struct Cors {
    origins: Vec<Origin>,
    any_origin: bool,
    methods: Vec<Method>,
    allow_methods: Option<HeaderValue>,
    headers: Vec<String>,
    allow_headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
}

/// One allowed origin other than "*".
#[derive(Debug)]
enum Origin {
    /// "https://shop.example.com", lowercase.
    Exact(String),
    /// "https://*.example.com[:port]": the scheme with "://", the host suffix with its dot,
    /// and the port with its colon (empty for none).
    Subdomains {
        scheme: String,
        suffix: String,
        port: String,
    },
}

impl Origin {
    fn parse(pattern: &str) -> Origin {
        let lower = pattern.to_ascii_lowercase();
        let Some((scheme, rest)) = lower.split_once("://") else {
            return Origin::Exact(lower);
        };
        match rest.strip_prefix('*') {
            Some(host) => {
                let (suffix, port) = match host.rsplit_once(':') {
                    Some((h, p)) => (h.to_string(), format!(":{p}")),
                    None => (host.to_string(), String::new()),
                };
                Origin::Subdomains {
                    scheme: format!("{scheme}://"),
                    suffix,
                    port,
                }
            }
            None => Origin::Exact(lower),
        }
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            Origin::Exact(o) => o.eq_ignore_ascii_case(origin),
            Origin::Subdomains {
                scheme,
                suffix,
                port,
            } => {
                let lower = origin.to_ascii_lowercase();
                let Some(rest) = lower.strip_prefix(scheme.as_str()) else {
                    return false;
                };
                let Some(host) = rest.strip_suffix(port.as_str()) else {
                    return false;
                };
                // A port the pattern does not name is another origin.
                !host.contains(':') && host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

fn joined(items: &[String], field: &str) -> Result<Option<HeaderValue>, (String, String)> {
    if items.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(&items.join(", "))
        .map(Some)
        .map_err(|e| (field.to_string(), e.to_string()))
}

impl Cors {
    /// Compiles the policy.
    pub fn compile(spec: &pb::Cors) -> Result<Cors, (String, String)> {
        let methods = spec
            .allow_methods
            .iter()
            .map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ("cors.allow_methods".to_string(), e.to_string()))?;
        let upper: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
        let max_age = spec
            .max_age
            .as_ref()
            .map(|d| duration_or(Some(d), std::time::Duration::ZERO).as_secs())
            .map(HeaderValue::from);
        Ok(Cors {
            origins: spec
                .allow_origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| Origin::parse(o))
                .collect(),
            any_origin: spec.allow_origins.iter().any(|o| o == "*"),
            methods,
            allow_methods: joined(&upper, "cors.allow_methods")?,
            headers: spec
                .allow_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            allow_headers: joined(&spec.allow_headers, "cors.allow_headers")?,
            expose: joined(&spec.expose_headers, "cors.expose_headers")?,
            max_age,
            credentials: spec.allow_credentials,
        })
    }

    /// The value of Access-Control-Allow-Origin for `origin`, when it is allowed.
    pub fn allowed(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        let text = origin.to_str().ok()?;
        if self.origins.iter().any(|o| o.matches(text)) {
            Some(origin.clone())
        } else if self.any_origin {
            // Validation refuses credentials with "*", so "*" is always a valid answer here.
            Some(HeaderValue::from_static("*"))
        } else {
            None
        }
    }

    /// The answer to a preflight (OPTIONS with Origin and Access-Control-Request-Method), or
    /// `None` when `req` is not one.
    pub fn preflight<B>(&self, req: &Request<B>) -> Option<Result<Response<ProxyBody>, Rejection>> {
        if req.method() != Method::OPTIONS {
            return None;
        }
        let headers = req.headers();
        let origin = headers.get(header::ORIGIN)?;
        let method = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        Some(self.answer(origin, method, headers))
    }

    fn answer(
        &self,
        origin: &HeaderValue,
        method: &HeaderValue,
        headers: &HeaderMap,
    ) -> Result<Response<ProxyBody>, Rejection> {
        let preflight = |reason| Rejection::new(StatusCode::FORBIDDEN, reason);
        let allow_origin = self.allowed(origin).ok_or(preflight("cors_origin"))?;
        let method_ok = self.methods.is_empty()
            || Method::from_bytes(method.as_bytes()).is_ok_and(|m| self.methods.contains(&m));
        let requested = headers
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|h| !h.is_empty());
        let mut requested = requested;
        let headers_ok = self.headers.is_empty()
            || requested.all(|h| self.headers.iter().any(|a| a.eq_ignore_ascii_case(h)));
        if !method_ok || !headers_ok {
            return Err(preflight("cors_preflight"));
        }
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone().unwrap_or_else(|| method.clone()),
        );
        let allow_headers = match &self.allow_headers {
            Some(v) => Some(v.clone()),
            None => headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
        };
        if let Some(v) = allow_headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        if let Some(v) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, v.clone());
        }
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        vary(h, "origin");
        Ok(response)
    }

    /// Adds the CORS headers of an actual (not preflight) response to a request from
    /// `origin` (`None`: the request had no Origin, or one not allowed).
    pub fn decorate(&self, allow_origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        vary(headers, "origin");
        let Some(origin) = allow_origin else { return };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = &self.expose {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}

/// Adds `name` to Vary unless it is there already.
pub(crate) fn vary(headers: &mut HeaderMap, name: &'static str) {
    let present = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(name) || v.trim() == "*");
    if !present {
        headers.append(header::VARY, HeaderValue::from_static(name));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cors(origins: &[&str]) -> Cors {
        Cors::compile(&pb::Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "put".into()],
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn origins_match_exactly_by_wildcard_subdomain_or_any() {
        let c = cors(&["https://shop.example.com", "https://*.example.org"]);
        let allowed = |o: &'static str| c.allowed(&HeaderValue::from_static(o)).is_some();
        assert!(allowed("https://shop.example.com"));
        assert!(allowed("https://SHOP.example.com"));
        assert!(!allowed("http://shop.example.com"));
        assert!(!allowed("https://shop.example.com:8443"));
        assert!(allowed("https://a.example.org"));
        assert!(allowed("https://a.b.example.org"));
        assert!(!allowed("https://example.org"));
        assert!(!allowed("https://evilexample.org"));
        assert!(!allowed("https://a.example.org:444"));
        let any = cors(&["*"]);
        assert_eq!(
            any.allowed(&HeaderValue::from_static("https://x.test"))
                .unwrap(),
            "*"
        );
    }

    #[test]
    fn preflights_are_answered_or_refused() {
        let c = cors(&["https://shop.example.com"]);
        let req = |origin: &'static str, method: &'static str| {
            Request::options("/")
                .header("origin", origin)
                .header("access-control-request-method", method)
                .body(())
                .unwrap()
        };
        let ok = c
            .preflight(&req("https://shop.example.com", "PUT"))
            .unwrap()
            .unwrap();
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        assert_eq!(ok.headers()["access-control-allow-methods"], "GET, PUT");
        let origin = c
            .preflight(&req("https://evil.test", "GET"))
            .unwrap()
            .unwrap_err();
        assert_eq!(origin.reason, "cors_origin");
        let method = c
            .preflight(&req("https://shop.example.com", "DELETE"))
            .unwrap()
            .unwrap_err();
        assert_eq!(method.reason, "cors_preflight");
        assert!(
            c.preflight(&Request::options("/").body(()).unwrap())
                .is_none()
        );
    }
}
