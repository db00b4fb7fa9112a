//! The HTTP endpoints.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::api::{
    self, ChatRequest, CompletionRequest, DetokenizeRequest, Prompt, ResponseFormat, Sampling,
    TokenizeRequest,
};
use super::engine::{Event, Finish, Job};
use super::error::ApiError;
use super::grammar::{Grammar, JsonConstraint};
use super::metrics::Metrics;
use super::schema;
use super::App;
use crate::session::Detokenize;

type AppState = State<Arc<App>>;

pub(super) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/completions", post(completions))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .with_state(app)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no endpoint {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::bad_request(format!(
            "{} is not allowed on {}",
            req.method(),
            req.uri().path()
        ))
    }
}

/// The bearer-token check (constant-time), except for the health check and
/// the page (which asks for the key itself).
async fn authenticate(State(app): AppState, req: Request, next: Next) -> Response {
    let Some(key) = &app.api_key else {
        return next.run(req).await;
    };
    if matches!(req.uri().path(), "/" | "/health") {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(key.as_bytes())) {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// Reads the body up to the limit (413 beyond it).
async fn read_body(app: &App, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.body_limit as u64) {
        return Err(ApiError::too_large(app.body_limit));
    }
    axum::body::to_bytes(body, app.body_limit)
        .await
        .map_err(|_| ApiError::too_large(app.body_limit))
}

/// Runs CPU work (templates, tokenizing) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("request worker failed: {e}")))?
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(app): AppState) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(app.engine.parallel()),
    )
}

async fn models(State(app): AppState) -> Json<Value> {
    let model = app.llm.model();
    Json(json!({
        "object": "list",
        "data": [{
            "id": app.model_name,
            "object": "model",
            "created": app.created,
            "owned_by": "rkinfer",
            "meta": {
                "n_vocab": model.n_vocab(),
                "n_ctx_train": model.n_ctx_train(),
                "n_ctx_slot": app.engine.n_ctx(),
                "slots": app.engine.parallel(),
            }
        }]
    }))
}

async fn tokenize(
    State(app): AppState,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = read_body(&app, &headers, body).await?;
    let req: TokenizeRequest = api::parse(&bytes)?;
    blocking(move || {
        let tok = app.llm.tokenizer();
        let ids = tok
            .encode(&req.content, req.add_special, req.parse_special)
            .map_err(|e| ApiError::invalid_param("content", e.to_string()))?;
        if req.with_pieces {
            let pieces: Vec<Value> = ids
                .iter()
                .map(|&id| json!({"id": id, "piece": String::from_utf8_lossy(&tok.piece(id))}))
                .collect();
            Ok(Json(json!({"tokens": pieces})))
        } else {
            Ok(Json(json!({"tokens": ids})))
        }
    })
    .await
}

async fn detokenize(
    State(app): AppState,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = read_body(&app, &headers, body).await?;
    let req: DetokenizeRequest = api::parse(&bytes)?;
    let tok = app.llm.tokenizer();
    if let Some(bad) = req.tokens.iter().find(|&&t| t as usize >= tok.n_vocab()) {
        return Err(ApiError::invalid_param(
            "tokens",
            format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                tok.n_vocab()
            ),
        ));
    }
    Ok(Json(
        json!({"content": tok.detokenize(&req.tokens, false, false)}),
    ))
}

/// Chat or text completion: the response shapes differ.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

async fn chat_completions(State(app): AppState, headers: HeaderMap, body: Body) -> Response {
    Metrics::add(&app.metrics.requests, 1);
    let result = async {
        let bytes = read_body(&app, &headers, body).await?;
        let req: ChatRequest = api::parse(&bytes)?;
        if req.messages.is_empty() {
            return Err(ApiError::invalid_param(
                "messages",
                "'messages' must not be empty",
            ));
        }
        let app2 = app.clone();
        let (req, prompt) = blocking(move || {
            let mut kwargs = req.chat_template_kwargs.clone();
            if let Some(tools) = &req.tools {
                kwargs.entry("tools").or_insert_with(|| tools.clone());
            }
            let text = app2
                .template
                .render_with(&req.messages, true, &kwargs)
                .map_err(|e| ApiError::invalid_param("messages", e.to_string()))?;
            // BOS per the model's flags, unless the template writes it.
            let bos = app2.template.bos_token();
            let add_special = bos.is_empty() || !text.starts_with(bos);
            let ids = app2
                .llm
                .tokenizer()
                .encode(&text, add_special, true)
                .map_err(|e| ApiError::invalid_param("messages", e.to_string()))?;
            Ok((req, ids))
        })
        .await?;
        let mut stop_extra = app.template.stop_strings().to_vec();
        start(
            &app,
            prompt,
            &req.sampling,
            Kind::Chat,
            std::mem::take(&mut stop_extra),
        )
        .await
    }
    .await;
    result.unwrap_or_else(|e| failed(&app, e))
}

async fn completions(State(app): AppState, headers: HeaderMap, body: Body) -> Response {
    Metrics::add(&app.metrics.requests, 1);
    let result = async {
        let bytes = read_body(&app, &headers, body).await?;
        let req: CompletionRequest = api::parse(&bytes)?;
        let app2 = app.clone();
        let (req, prompt) = blocking(move || {
            let tok = app2.llm.tokenizer();
            let ids = match &req.prompt {
                Prompt::Text(s) => tok.encode(s, true, true),
                Prompt::Texts(v) if v.len() == 1 => tok.encode(&v[0], true, true),
                Prompt::Texts(v) => {
                    return Err(ApiError::invalid_param(
                        "prompt",
                        format!(
                            "{} prompts given: only one per request is supported",
                            v.len()
                        ),
                    ))
                }
                Prompt::Tokens(ids) => Ok(ids.clone()),
            }
            .map_err(|e| ApiError::invalid_param("prompt", e.to_string()))?;
            if ids.is_empty() {
                return Err(ApiError::invalid_param("prompt", "the prompt is empty"));
            }
            if let Some(bad) = ids.iter().find(|&&t| t as usize >= tok.n_vocab()) {
                return Err(ApiError::invalid_param(
                    "prompt",
                    format!(
                        "token id {bad} is outside the vocabulary of {} tokens",
                        tok.n_vocab()
                    ),
                ));
            }
            Ok((req, ids))
        })
        .await?;
        start(&app, prompt, &req.sampling, Kind::Text, Vec::new()).await
    }
    .await;
    result.unwrap_or_else(|e| failed(&app, e))
}

fn failed(app: &App, e: ApiError) -> Response {
    Metrics::add(&app.metrics.requests_failed, 1);
    e.into_response()
}

/// Queues the generation and answers with the whole reply or a stream.
async fn start(
    app: &Arc<App>,
    prompt: Vec<u32>,
    sampling: &Sampling,
    kind: Kind,
    stop_extra: Vec<String>,
) -> Result<Response, ApiError> {
    let n_vocab = app.llm.model().n_vocab();
    let mut params = sampling.params(n_vocab, prompt.len(), app.engine.n_ctx())?;
    params.stop.extend(stop_extra);
    params.json = match &sampling.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some(Grammar::any_object()),
        Some(ResponseFormat::JsonSchema { json_schema }) => match &json_schema.schema {
            None => Some(Grammar::any_object()),
            Some(schema) => Some(schema::compile(schema).map_err(|e| {
                ApiError::invalid_param(
                    "response_format",
                    format!("response_format.json_schema.schema is not supported: {e}"),
                )
            })?),
        },
    }
    .map(|g| JsonConstraint::new(app.vocab.clone(), Arc::new(g)));
    let (tx, rx) = unbounded_channel();
    app.engine.submit(Job {
        prompt,
        params,
        events: tx,
    })?;
    let id = app.next_id.fetch_add(1, Ordering::Relaxed);
    let meta = Meta {
        id: match kind {
            Kind::Chat => format!("chatcmpl-{:x}-{id}", app.created),
            Kind::Text => format!("cmpl-{:x}-{id}", app.created),
        },
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: sampling
            .model
            .clone()
            .unwrap_or_else(|| app.model_name.clone()),
        kind,
        include_usage: sampling.include_usage(),
    };
    if sampling.stream {
        Ok(stream_response(meta, rx))
    } else {
        whole_response(meta, rx).await
    }
}

/// What every response of one request repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    include_usage: bool,
}

impl Meta {
    fn usage(f: &Finish) -> Value {
        json!({
            "prompt_tokens": f.prompt_tokens,
            "completion_tokens": f.completion_tokens,
            "total_tokens": f.prompt_tokens + f.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": f.cached_tokens},
        })
    }

    fn whole(&self, text: String, f: &Finish) -> Value {
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": f.reason.as_str(),
                "logprobs": null,
            }),
            Kind::Text => json!({
                "index": 0,
                "text": text,
                "finish_reason": f.reason.as_str(),
                "logprobs": null,
            }),
        };
        json!({
            "id": self.id,
            "object": match self.kind { Kind::Chat => "chat.completion", Kind::Text => "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": Meta::usage(f),
        })
    }

    /// One stream chunk: a piece of text and/or the finish reason.
    fn chunk(&self, delta: Option<Value>, text: Option<&str>, finish: Option<&Finish>) -> Value {
        let reason = finish.map(|f| f.reason.as_str());
        let choice = match self.kind {
            Kind::Chat => {
                let delta = delta.unwrap_or_else(|| match text {
                    Some(t) => json!({"content": t}),
                    None => json!({}),
                });
                json!({"index": 0, "delta": delta, "finish_reason": reason, "logprobs": null})
            }
            Kind::Text => {
                json!({"index": 0, "text": text.unwrap_or(""), "finish_reason": reason, "logprobs": null})
            }
        };
        let mut v = json!({
            "id": self.id,
            "object": match self.kind { Kind::Chat => "chat.completion.chunk", Kind::Text => "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if let Some(f) = finish {
            // llama-server's habit; clients ignore it or read it.
            v["usage"] = Meta::usage(f);
        }
        v
    }

    fn usage_chunk(&self, f: &Finish) -> Value {
        json!({
            "id": self.id,
            "object": match self.kind { Kind::Chat => "chat.completion.chunk", Kind::Text => "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": Meta::usage(f),
        })
    }
}

async fn whole_response(
    meta: Meta,
    mut rx: UnboundedReceiver<Event>,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done(f)) => return Ok(Json(meta.whole(text, &f)).into_response()),
            Some(Event::Failed(e)) => return Err(e),
            None => return Err(ApiError::internal("the inference thread stopped")),
        }
    }
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// Streams `data: {chunk}` events and `data: [DONE]`. Dropping the body
/// (client gone) drops the receiver, which stops the generation.
fn stream_response(meta: Meta, rx: UnboundedReceiver<Event>) -> Response {
    let first = match meta.kind {
        Kind::Chat => Some(sse(&meta.chunk(
            Some(json!({"role": "assistant", "content": ""})),
            None,
            None,
        ))),
        Kind::Text => None,
    };
    let state = (meta, rx, first, false);
    let stream = futures_util::stream::unfold(state, |(meta, mut rx, first, done)| async move {
        if let Some(f) = first {
            return Some((Ok::<_, Infallible>(f), (meta, rx, None, false)));
        }
        if done {
            return None;
        }
        let out = match rx.recv().await {
            Some(Event::Text(t)) => {
                return Some((
                    Ok(sse(&meta.chunk(None, Some(&t), None))),
                    (meta, rx, None, false),
                ))
            }
            Some(Event::Done(f)) => {
                let mut s = sse(&meta.chunk(None, None, Some(&f)));
                if meta.include_usage {
                    s.push_str(&sse(&meta.usage_chunk(&f)));
                }
                s
            }
            Some(Event::Failed(e)) => sse(&e.body()),
            None => sse(&ApiError::internal("the inference thread stopped").body()),
        };
        Some((Ok(out + "data: [DONE]\n\n"), (meta, rx, None, true)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::internal("building the stream failed").into_response())
}
