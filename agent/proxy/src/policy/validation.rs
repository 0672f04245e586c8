//! `request_validation`: methods, required headers, content types and body size checked on
//! the head; JSON bodies read (up to a bound) and checked against a JSON Schema.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body::Body;
use portico_api::pb;

use super::{Rejection, header_name};

/// Largest JSON body validated when the policy sets no bound.
const DEFAULT_MAX_JSON_BYTES: u64 = 1 << 20;

/// A compiled `request_validation` policy.
#[derive(Debug)]
pub struct RequestValidation {
    /// Largest body; `None`: the listener's limit.
    pub max_body_bytes: Option<u64>,
    required: Vec<HeaderName>,
    content_types: Vec<String>,
    methods: Vec<Method>,
    allow: Option<HeaderValue>,
    schema: Option<Schema>,
}

/// A JSON Schema and the largest body it reads.
struct Schema {
    validator: jsonschema::Validator,
    max_bytes: u64,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl RequestValidation {
    /// Compiles the policy.
    pub fn compile(spec: &pb::RequestValidation) -> Result<RequestValidation, (String, String)> {
        let methods = spec
            .allowed_methods
            .iter()
            .map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                (
                    "request_validation.allowed_methods".to_string(),
                    e.to_string(),
                )
            })?;
        let allow = (!methods.is_empty())
            .then(|| {
                let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
                HeaderValue::from_str(&names.join(", "))
            })
            .transpose()
            .map_err(|e| {
                (
                    "request_validation.allowed_methods".to_string(),
                    e.to_string(),
                )
            })?;
        let mut required = Vec::new();
        for (i, h) in spec.required_headers.iter().enumerate() {
            required.push(header_name(
                h,
                &format!("request_validation.required_headers[{i}]"),
            )?);
        }
        let schema = if spec.json_schema.is_empty() {
            None
        } else {
            let validator = portico_api::validate::json_schema(&spec.json_schema)
                .map_err(|e| ("request_validation.json_schema".to_string(), e))?;
            Some(Schema {
                validator,
                max_bytes: if spec.max_json_bytes == 0 {
                    DEFAULT_MAX_JSON_BYTES
                } else {
                    spec.max_json_bytes
                },
            })
        };
        Ok(RequestValidation {
            max_body_bytes: (spec.max_body_bytes > 0).then_some(spec.max_body_bytes),
            required,
            content_types: spec
                .allowed_content_types
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            methods,
            allow,
            schema,
        })
    }

    /// The checks on the head. Returns whether the body is JSON to read and check against the
    /// schema, with the largest size read.
    pub fn check_head<B: Body>(&self, req: &Request<B>) -> Result<Option<u64>, Rejection> {
        if !self.methods.is_empty() && !self.methods.contains(req.method()) {
            let mut r = Rejection::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
            if let Some(allow) = &self.allow {
                r = r.with_header(header::ALLOW, allow.clone());
            }
            return Err(r);
        }
        let headers = req.headers();
        if self.required.iter().any(|h| !headers.contains_key(h)) {
            return Err(Rejection::new(StatusCode::BAD_REQUEST, "header_missing"));
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let (Some(max), Some(n)) = (self.max_body_bytes, declared)
            && n > max
        {
            return Err(Rejection::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
            ));
        }
        let has_body = !req.body().is_end_stream();
        let media = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        if has_body
            && !self.content_types.is_empty()
            && !media
                .as_deref()
                .is_some_and(|m| self.content_types.iter().any(|t| t == m))
        {
            return Err(Rejection::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ));
        }
        let json = media.as_deref().is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        });
        match &self.schema {
            Some(schema) if has_body && json => {
                if declared.is_some_and(|n| n > schema.max_bytes) {
                    return Err(Rejection::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                    ));
                }
                Ok(Some(schema.max_bytes))
            }
            _ => Ok(None),
        }
    }

    /// Checks a whole JSON body against the schema.
    pub fn check_json(&self, body: &Bytes) -> Result<(), Rejection> {
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        let invalid = |detail: String| Rejection {
            detail: Some(detail),
            ..Rejection::new(StatusCode::BAD_REQUEST, "schema_invalid")
        };
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("the body is not JSON: {e}")))?;
        match schema.validator.iter_errors(&value).next() {
            None => Ok(()),
            Some(error) => {
                let path = error.instance_path().to_string();
                let at = if path.is_empty() {
                    "/".to_string()
                } else {
                    path
                };
                Err(invalid(format!(
                    "the body does not match the schema at {at}: {error}"
                )))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn policy() -> RequestValidation {
        RequestValidation::compile(&pb::RequestValidation {
            max_body_bytes: 100,
            required_headers: vec!["x-tenant".into()],
            allowed_content_types: vec!["application/json".into()],
            allowed_methods: vec!["GET".into(), "POST".into()],
            json_schema:
                r#"{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}"#
                    .into(),
            max_json_bytes: 0,
        })
        .unwrap()
    }

    fn req(method: &str, headers: &[(&str, &str)], body: &'static str) -> Request<Full<Bytes>> {
        let mut b = Request::builder().method(method).uri("/");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    #[test]
    fn each_check_has_its_reason() {
        let p = policy();
        let reason = |r: Request<Full<Bytes>>| p.check_head(&r).err().map(|e| e.reason);
        let t = ("x-tenant", "a");
        let json = ("content-type", "application/json; charset=utf-8");
        assert_eq!(reason(req("PUT", &[t], "")), Some("method_not_allowed"));
        assert_eq!(reason(req("GET", &[], "")), Some("header_missing"));
        assert_eq!(
            reason(req("POST", &[t, ("content-type", "text/plain")], "x")),
            Some("unsupported_media_type")
        );
        assert_eq!(
            reason(req("POST", &[t, json, ("content-length", "101")], "")),
            Some("body_too_large")
        );
        assert_eq!(reason(req("GET", &[t], "")), None);
        assert_eq!(
            p.check_head(&req("POST", &[t, json], "{}")).unwrap(),
            Some(1 << 20)
        );
        let bad = p
            .check_json(&Bytes::from_static(br#"{"n": "x"}"#))
            .unwrap_err();
        assert_eq!(bad.reason, "schema_invalid");
        assert!(bad.detail.unwrap().contains("at /n"));
        assert!(p.check_json(&Bytes::from_static(br#"{"n": 1}"#)).is_ok());
        assert!(p.check_json(&Bytes::from_static(b"{")).is_err());
    }
}
