//! DingTalk transport: each attempt built and sent with its timeout, QPS answers retried with
//! back-off, and every answer classified into a result or a [`DingTalkError`].

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderValue, ACCEPT};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::time::Instant;
use url::Url;

use crate::proxy::names::{X_ACS_DINGTALK_ACCESS_TOKEN, X_ACS_REQUEST_ID};
use crate::telemetry::ErrorChain;

use super::api::{Api, Family};
use super::client::{DingTalkClient, RetryPolicy};
use super::error::DingTalkError;
use super::types::{describe_decode_error, AppToken};

/// Largest response body accepted; DingTalk's answers are a few kilobytes.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest DingTalk message kept in an error.
pub(super) const MAX_MESSAGE_CHARS: usize = 300;

/// One DingTalk call, rebuilt for every attempt.
pub(super) struct Call<'a> {
    pub(super) api: Api,
    pub(super) method: Method,
    pub(super) url: Url,
    pub(super) body: Option<&'a Value>,
    pub(super) user_token: Option<&'a str>,
}

/// A JSON object answer and the HTTP status it came with.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: Map<String, Value>,
}

impl DingTalkClient {
    /// A POST to the legacy API with the cached app token. If DingTalk rejects the token, the
    /// cache is dropped and the call is repeated once with a freshly fetched token.
    pub(super) async fn oapi(&self, api: Api, body: &Value) -> Result<Answer, DingTalkError> {
        let token = self.app_token().await?;
        match self.oapi_with(api, body, &token).await {
            Err(err) if err.is_app_token_rejected() => {
                tracing::info!(
                    api = %api,
                    error = %err,
                    "DingTalk rejected the cached app token; fetching a new one"
                );
                self.invalidate_app_token(&token).await;
                let token = self.app_token().await?;
                self.oapi_with(api, body, &token).await
            }
            other => other,
        }
    }

    pub(super) async fn oapi_with(
        &self,
        api: Api,
        body: &Value,
        token: &AppToken,
    ) -> Result<Answer, DingTalkError> {
        let mut url = join(&self.inner.settings.endpoints.oapi, api.path());
        url.query_pairs_mut()
            .append_pair("access_token", token.secret());
        self.execute(&Call {
            api,
            method: Method::POST,
            url,
            body: Some(body),
            user_token: None,
        })
        .await
    }

    /// Runs `call`, retrying QPS-limit answers with exponential back-off and jitter.
    /// Nothing else is retried: timeouts could have consumed a single-use code.
    pub(super) async fn execute(&self, call: &Call<'_>) -> Result<Answer, DingTalkError> {
        let policy = self.inner.settings.retry;
        let mut retries = 0;
        loop {
            match self.attempt(call, retries).await {
                Err(err) if err.is_rate_limited() => {
                    if retries >= policy.max_retries {
                        return Err(DingTalkError::RateLimited {
                            api: call.api,
                            detail: format!(
                                "still rate limited after {retries} retries; last answer: {err}"
                            ),
                        });
                    }
                    let delay = backoff(policy, retries);
                    tracing::debug!(
                        api = %call.api,
                        retries,
                        delay_ms = delay.as_millis() as u64,
                        "rate limited; backing off"
                    );
                    tokio::time::sleep(delay).await;
                    retries += 1;
                }
                other => return other,
            }
        }
    }

    /// One HTTP attempt, once the call budget admits it, counted in the DingTalk metrics by
    /// API, result and error code.
    pub(super) async fn attempt(
        &self,
        call: &Call<'_>,
        retry: u32,
    ) -> Result<Answer, DingTalkError> {
        self.admit(call.api).await?;
        let started = Instant::now();
        let result = self.exchange(call, retry).await;
        self.inner
            .settings
            .metrics
            .call(call.api, result.as_ref().map(|_| ()), started.elapsed());
        result
    }

    async fn exchange(&self, call: &Call<'_>, retry: u32) -> Result<Answer, DingTalkError> {
        let api = call.api;
        let timeout = self.inner.settings.timeout;
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone())
            .timeout(timeout)
            .header(ACCEPT, "application/json");
        if let Some(body) = call.body {
            request = request.json(body);
        }
        if let Some(token) = call.user_token {
            let mut value = HeaderValue::from_str(token).map_err(|_| DingTalkError::Decode {
                api,
                status: 0,
                detail: "the user token contains characters that cannot be sent in a header"
                    .to_owned(),
            })?;
            value.set_sensitive(true);
            request = request.header(X_ACS_DINGTALK_ACCESS_TOKEN, value);
        }

        let started = Instant::now();
        let exchange = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let header_request_id = response
                .headers()
                .get(X_ACS_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = read_body(response).await?;
            Ok::<_, reqwest::Error>((status, header_request_id, content_type, body))
        };
        let outcome = tokio::time::timeout(timeout, exchange).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let (status, header_request_id, content_type, body) = match outcome {
            Err(_) => {
                tracing::debug!(api = %api, elapsed_ms, retry, "DingTalk call timed out");
                return Err(DingTalkError::Timeout { api });
            }
            Ok(Err(err)) => {
                let err = transport_error(api, err);
                tracing::debug!(api = %api, elapsed_ms, retry, error = %ErrorChain(&err), "DingTalk call failed");
                return Err(err);
            }
            Ok(Ok(parts)) => parts,
        };
        let Some(body) = body else {
            return Err(DingTalkError::Decode {
                api,
                status,
                detail: format!("response body larger than {MAX_BODY_BYTES} bytes"),
            });
        };
        let parsed = serde_json::from_slice::<Value>(&body).ok();
        let request_id = parsed
            .as_ref()
            .and_then(|v| v.as_object())
            .and_then(body_request_id)
            .or(header_request_id);
        tracing::debug!(
            api = %api,
            status,
            elapsed_ms,
            retry,
            dingtalk_request_id = request_id.as_deref().unwrap_or("-"),
            "DingTalk call"
        );
        let object = match parsed {
            Some(Value::Object(object)) => object,
            Some(_) => {
                return Err(DingTalkError::Decode {
                    api,
                    status,
                    detail: "the body is JSON but not an object".to_owned(),
                })
            }
            None => {
                return Err(DingTalkError::Throttled {
                    api,
                    detail: format!(
                        "non-JSON response (HTTP {status}, content-type {}, {} bytes): \
                         an IP ban page, a proxy or an outage",
                        content_type.as_deref().unwrap_or("none"),
                        body.len()
                    ),
                })
            }
        };
        if object.get("punish").and_then(Value::as_str) == Some("deny") {
            let wait = object.get("wait").map(Value::to_string);
            return Err(DingTalkError::Throttled {
                api,
                detail: format!(
                    "the gateway's IP is banned by DingTalk (punish: deny, wait {} s)",
                    wait.as_deref().unwrap_or("?")
                ),
            });
        }
        match call.api.family() {
            Family::New => classify_new(api, status, object, request_id),
            Family::Legacy => classify_legacy(api, status, object, request_id),
        }
    }
}

/// A new-API answer: the object itself on 2xx, `{code, message, requestid}` otherwise.
pub(super) fn classify_new(
    api: Api,
    status: u16,
    object: Map<String, Value>,
    request_id: Option<String>,
) -> Result<Answer, DingTalkError> {
    if (200..300).contains(&status) {
        return Ok(Answer {
            status,
            body: object,
        });
    }
    api_error(api, status, &object, request_id)
}

pub(super) fn api_error(
    api: Api,
    status: u16,
    object: &Map<String, Value>,
    request_id: Option<String>,
) -> Result<Answer, DingTalkError> {
    let Some(code) = first_str(object, &["code", "Code"]) else {
        return Err(DingTalkError::Decode {
            api,
            status,
            detail: "error response without a code".to_owned(),
        });
    };
    let message = first_str(object, &["message", "Message", "description"]).unwrap_or_default();
    let required_scopes = [
        "accessdenieddetail",
        "accessDeniedDetail",
        "AccessDeniedDetail",
    ]
    .iter()
    .find_map(|key| object.get(*key))
    .and_then(|detail| detail.get("requiredScopes"))
    .and_then(Value::as_array)
    .map(|scopes| {
        scopes
            .iter()
            .filter_map(Value::as_str)
            .map(|s| truncate(s, 100))
            .collect()
    })
    .unwrap_or_default();
    Err(DingTalkError::Api {
        api,
        status,
        code: truncate(&code, 100),
        message: truncate(&message, MAX_MESSAGE_CHARS),
        request_id,
        required_scopes,
    })
}

/// A legacy answer: success only when `errcode` is 0 and there is no `sub_code`.
pub(super) fn classify_legacy(
    api: Api,
    status: u16,
    object: Map<String, Value>,
    request_id: Option<String>,
) -> Result<Answer, DingTalkError> {
    let Some(errcode) = object.get("errcode") else {
        if !(200..300).contains(&status) {
            return api_error(api, status, &object, request_id);
        }
        return Err(DingTalkError::Decode {
            api,
            status,
            detail: "no errcode in the response".to_owned(),
        });
    };
    let errcode = match errcode {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let Some(errcode) = errcode else {
        return Err(DingTalkError::Decode {
            api,
            status,
            detail: "errcode is not an integer".to_owned(),
        });
    };
    let sub_code = match object.get("sub_code") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.trim() != "0" => {
            Some(truncate(s.trim(), 100))
        }
        Some(Value::Number(n)) if n.as_i64() != Some(0) => Some(n.to_string()),
        _ => None,
    };
    if errcode == 0 && sub_code.is_none() && (200..300).contains(&status) {
        return Ok(Answer {
            status,
            body: object,
        });
    }
    let sub_msg = first_str(&object, &["sub_msg"]).filter(|s| !s.is_empty());
    let errmsg = first_str(&object, &["errmsg"]).filter(|s| !s.is_empty());
    // With a sub_code the sub_msg is the reason (errmsg is a wrapper); without one, both can
    // carry something (errcode 22 names the API as invalid in errmsg and says why in sub_msg).
    let message = match (&sub_code, sub_msg, errmsg) {
        (Some(_), Some(sub), _) => sub,
        (None, Some(sub), Some(msg)) if sub != msg => format!("{msg} ({sub})"),
        (_, sub, msg) => msg.or(sub).unwrap_or_default(),
    };
    Err(DingTalkError::Legacy {
        api,
        errcode,
        sub_code,
        message: truncate(&message, MAX_MESSAGE_CHARS),
        request_id,
    })
}

/// The `result` object of a successful legacy answer, decoded as `T`.
pub(super) fn result<T: DeserializeOwned>(
    api: Api,
    mut answer: Answer,
) -> Result<T, DingTalkError> {
    match answer.body.remove("result") {
        Some(Value::Object(object)) => decode(api, answer.status, object),
        _ => Err(DingTalkError::Decode {
            api,
            status: answer.status,
            detail: "no result object in the response".to_owned(),
        }),
    }
}

pub(super) fn decode<T: DeserializeOwned>(
    api: Api,
    status: u16,
    object: Map<String, Value>,
) -> Result<T, DingTalkError> {
    serde_json::from_value(Value::Object(object)).map_err(|err| DingTalkError::Decode {
        api,
        status,
        detail: describe_decode_error(&err),
    })
}

pub(super) fn body_request_id(object: &Map<String, Value>) -> Option<String> {
    first_str(
        object,
        &["requestid", "requestId", "RequestId", "request_id"],
    )
    .map(|id| truncate(&id, 100))
}

pub(super) fn first_str(object: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|key| object.get(*key).and_then(Value::as_str))
        .map(str::to_owned)
}

pub(super) fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `base` with `path` appended to its path (so a base with a prefix keeps it).
pub(crate) fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}/{}", base.path().trim_end_matches('/'), path);
    url.set_path(&joined);
    url
}

pub(super) fn backoff(policy: RetryPolicy, retry: u32) -> Duration {
    let base = policy.base_delay.saturating_mul(1u32 << retry.min(10));
    let jitter_ms = (base.as_millis() / 2).min(u128::from(u64::MAX)) as u64;
    let jitter = rand::rng().random_range(0..=jitter_ms);
    base.saturating_add(Duration::from_millis(jitter))
}

/// Reads at most `MAX_BODY_BYTES`; `None` when the body is larger.
pub(super) async fn read_body(
    mut response: reqwest::Response,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

pub(super) fn transport_error(api: Api, err: reqwest::Error) -> DingTalkError {
    if err.is_timeout() {
        return DingTalkError::Timeout { api };
    }
    // The URL of an oapi call carries the app token in its query: never keep it.
    DingTalkError::Transport {
        api,
        source: Arc::new(err.without_url()),
    }
}
