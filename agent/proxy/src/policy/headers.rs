//! `headers`: request and response header changes, and the security-headers preset.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use portico_api::pb;

use crate::headers::HeaderTransform;

/// A compiled `headers` policy.
#[derive(Debug)]
pub struct HeaderPolicy {
    /// Changes to the request sent upstream.
    pub request: HeaderTransform,
    response: HeaderTransform,
    /// Headers set on responses that lack them (the preset, the CSP).
    defaults: Vec<(HeaderName, HeaderValue)>,
}

static SECURITY: [(&HeaderName, &str); 4] = [
    (
        &header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000; includeSubDomains",
    ),
    (&header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (&header::X_FRAME_OPTIONS, "DENY"),
    (&header::REFERRER_POLICY, "strict-origin-when-cross-origin"),
];

impl HeaderPolicy {
    /// Compiles the policy.
    pub fn compile(spec: &pb::HeaderPolicy) -> Result<HeaderPolicy, (String, String)> {
        let transform = |t: Option<&pb::HeaderTransform>, field: &str| {
            HeaderTransform::compile(t).map_err(|e| (field.to_string(), e.to_string()))
        };
        let mut defaults = Vec::new();
        if spec.security_headers {
            for (name, value) in &SECURITY {
                defaults.push(((*name).clone(), HeaderValue::from_static(value)));
            }
        }
        if !spec.content_security_policy.is_empty() {
            let csp = HeaderValue::from_str(&spec.content_security_policy)
                .map_err(|e| ("headers.content_security_policy".to_string(), e.to_string()))?;
            defaults.push((header::CONTENT_SECURITY_POLICY, csp));
        }
        Ok(HeaderPolicy {
            request: transform(spec.request.as_ref(), "headers.request")?,
            response: transform(spec.response.as_ref(), "headers.response")?,
            defaults,
        })
    }

    /// Applies the response changes, then adds the preset headers the response lacks.
    pub fn respond(&self, headers: &mut HeaderMap) {
        self.response.apply(headers);
        for (name, value) in &self.defaults {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
}
