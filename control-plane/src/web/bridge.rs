//! The page's calls: `POST /api/v1/<Method>` with the request message as proto3 JSON, answered
//! with the response message as proto3 JSON, through the Admin service in process, with the
//! caller's token in the call's metadata as the CLI sends it. Only the reads the page shows and
//! Rollback (its one write, for operator tokens) are open; the rest of the API is not reachable
//! from a browser.

use std::future::Future;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use portico_api::pb::admin_server::Admin;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};

use super::{error, json};
use crate::admin::AdminService;

/// The methods the page may call.
pub const METHODS: [&str; 13] = [
    "WhoAmI",
    "Fleet",
    "Agents",
    "RolloutStatus",
    "GetRollout",
    "History",
    "GetChange",
    "Rollback",
    "Health",
    "Usage",
    "Status",
    "List",
    "Get",
];

/// Calls `method` of `admin` with `body`, as the holder of `token`.
pub async fn call(
    admin: &AdminService,
    method: &str,
    body: &Bytes,
    token: Option<String>,
) -> Response<Full<Bytes>> {
    let t = token;
    match method {
        "WhoAmI" => invoke(body, t, |r| admin.who_am_i(r)).await,
        "Fleet" => invoke(body, t, |r| admin.fleet(r)).await,
        "Agents" => invoke(body, t, |r| admin.agents(r)).await,
        "RolloutStatus" => invoke(body, t, |r| admin.rollout_status(r)).await,
        "GetRollout" => invoke(body, t, |r| admin.get_rollout(r)).await,
        "History" => invoke(body, t, |r| admin.history(r)).await,
        "GetChange" => invoke(body, t, |r| admin.get_change(r)).await,
        "Rollback" => invoke(body, t, |r| admin.rollback(r)).await,
        "Health" => invoke(body, t, |r| admin.health(r)).await,
        "Usage" => invoke(body, t, |r| admin.usage(r)).await,
        "Status" => invoke(body, t, |r| admin.status(r)).await,
        "List" => invoke(body, t, |r| admin.list(r)).await,
        "Get" => invoke(body, t, |r| admin.get(r)).await,
        _ => error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!(
                "no call {method:?} here; the dashboard calls {}",
                METHODS.join(", ")
            ),
        ),
    }
}

/// Decodes the request, makes the call with the token, encodes the answer or the error.
async fn invoke<Req, Resp, F, Fut>(
    body: &Bytes,
    token: Option<String>,
    f: F,
) -> Response<Full<Bytes>>
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let message = if body.iter().all(u8::is_ascii_whitespace) {
        Req::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(m) => m,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    &format!("the request is not the call's message as JSON: {e}"),
                );
            }
        }
    };
    let mut request = Request::new(message);
    if let Some(token) = token {
        match MetadataValue::try_from(format!("Bearer {token}")) {
            Ok(value) => {
                request.metadata_mut().insert("authorization", value);
            }
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "the token holds characters a header cannot",
                );
            }
        }
    }
    match f(request).await {
        Ok(answer) => match serde_json::to_vec(answer.get_ref()) {
            Ok(body) => json(StatusCode::OK, body),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                &format!("encoding the answer: {e}"),
            ),
        },
        Err(status) => refused(&status),
    }
}

/// The HTTP answer of a failed call: the status its gRPC code maps to, and the message.
fn refused(status: &Status) -> Response<Full<Bytes>> {
    let http = match status.code() {
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition | Code::Aborted | Code::AlreadyExists => StatusCode::CONFLICT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let code = format!("{:?}", status.code());
    error(http, &screaming(&code), status.message())
}

/// `PermissionDenied` → `PERMISSION_DENIED`, as gRPC names codes.
fn screaming(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_keep_their_names_and_map_to_http() {
        assert_eq!(screaming("PermissionDenied"), "PERMISSION_DENIED");
        assert_eq!(screaming("Ok"), "OK");
        let answer = refused(&Status::unauthenticated("needs a token"));
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        let answer = refused(&Status::failed_precondition("rollout active"));
        assert_eq!(answer.status(), StatusCode::CONFLICT);
    }
}
