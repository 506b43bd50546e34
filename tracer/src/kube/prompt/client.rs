//! The OpenAI-compatible calls `prompt` makes: list models, send one
//! completion (or chat completion) and time it; errors say which URL failed
//! and what to check.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url}: {reason}. Is the vLLM service up? Check `./deploy.sh status` (the pod must be Ready; the first start downloads the model and takes minutes) and the URL (NodePort 30800 by default)")]
    Unreachable { url: String, reason: String },
    #[error(
        "{url} did not answer within {secs} s (raise --timeout-secs for long generations; check `./deploy.sh logs`)"
    )]
    Timeout { url: String, secs: u64 },
    #[error("{url} answered HTTP {status}: {body} (check --model against GET /v1/models, and `./deploy.sh logs`)")]
    Http { url: String, status: u16, body: String },
    #[error("{url} did not answer like an OpenAI-compatible server: {reason}")]
    BadResponse { url: String, reason: String },
    #[error("{url} lists no models: pass --model")]
    NoModels { url: String },
}

impl ClientError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One request's outcome, as saved in the result JSON.
#[derive(Clone, Debug, Serialize)]
pub struct RequestResult {
    pub index: usize,
    pub prompt: String,
    pub ok: bool,
    /// HTTP status; `null` when no answer came.
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub text: Option<String>,
    pub error: Option<String>,
}

impl RequestResult {
    /// A request that got no usable answer; `send` fills in the rest on success.
    pub fn failed(index: usize, prompt: &str, latency_ms: f64, error: Option<String>) -> Self {
        RequestResult {
            index,
            prompt: prompt.to_string(),
            ok: false,
            status: None,
            latency_ms,
            prompt_tokens: None,
            completion_tokens: None,
            text: None,
            error,
        }
    }
}

#[derive(Deserialize)]
struct Models {
    data: Vec<Model>,
}

#[derive(Deserialize)]
struct Model {
    id: String,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    text: Option<String>,
    message: Option<Message>,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

/// A client for one server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

/// The innermost error (e.g. `Connection refused`), which reqwest's message leaves out.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

impl Client {
    pub fn new(base: &str, timeout: Duration) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| ClientError::BadResponse {
            url: base.to_string(),
            reason: format!("cannot build an HTTP client: {e}"),
        })?;
        Ok(Self { http, base: base.trim_end_matches('/').to_string(), timeout })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn classify(&self, url: &str, e: reqwest::Error) -> ClientError {
        if e.is_timeout() {
            ClientError::Timeout { url: url.to_string(), secs: self.timeout.as_secs() }
        } else if e.is_decode() {
            ClientError::BadResponse { url: url.to_string(), reason: e.to_string() }
        } else {
            ClientError::Unreachable { url: url.to_string(), reason: root_cause(&e) }
        }
    }

    async fn checked(
        &self,
        url: &str,
        r: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response, ClientError> {
        let response = r.map_err(|e| self.classify(url, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let mut body = response.text().await.unwrap_or_default();
        if body.len() > 500 {
            body.truncate(body.floor_char_boundary(500));
            body.push('…');
        }
        Err(ClientError::Http { url: url.to_string(), status: status.as_u16(), body })
    }

    /// The first model the server lists (`GET /v1/models`).
    pub async fn first_model(&self) -> Result<String, ClientError> {
        let url = self.url("/v1/models");
        let response = self.checked(&url, self.http.get(&url).send().await).await?;
        let models: Models = response.json().await.map_err(|e| self.classify(&url, e))?;
        models.data.into_iter().next().map(|m| m.id).ok_or(ClientError::NoModels { url })
    }

    async fn complete(
        &self,
        model: &str,
        prompt: &str,
        max_tokens: u32,
        chat: bool,
    ) -> Result<(u16, Completion), ClientError> {
        let (url, body) = if chat {
            (
                self.url("/v1/chat/completions"),
                json!({"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0}),
            )
        } else {
            (
                self.url("/v1/completions"),
                json!({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}),
            )
        };
        let response = self.checked(&url, self.http.post(&url).json(&body).send().await).await?;
        let status = response.status().as_u16();
        let completion: Completion = response.json().await.map_err(|e| self.classify(&url, e))?;
        if completion.choices.is_empty() {
            return Err(ClientError::BadResponse { url, reason: "no choices in the answer".into() });
        }
        Ok((status, completion))
    }

    /// Sends one prompt and times it; failures are recorded, not returned.
    pub async fn send(
        &self,
        index: usize,
        model: &str,
        prompt: &str,
        max_tokens: u32,
        chat: bool,
    ) -> (RequestResult, Option<ClientError>) {
        let start = Instant::now();
        let outcome = self.complete(model, prompt, max_tokens, chat).await;
        let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
        let mut result = RequestResult::failed(index, prompt, latency_ms, None);
        match outcome {
            Ok((status, c)) => {
                let choice = &c.choices[0];
                result.ok = true;
                result.status = Some(status);
                result.text = choice.text.clone().or_else(|| choice.message.as_ref().and_then(|m| m.content.clone()));
                result.prompt_tokens = c.usage.as_ref().and_then(|u| u.prompt_tokens);
                result.completion_tokens = c.usage.as_ref().and_then(|u| u.completion_tokens);
                (result, None)
            }
            Err(e) => {
                result.status = e.status();
                result.error = Some(e.to_string());
                (result, Some(e))
            }
        }
    }
}
