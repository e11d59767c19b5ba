//! The HTTP routes: request checks (in the order the OpenAI API reports them: auth, body,
//! model, parameters, context), admission, and the JSON or server-sent-event responses.

use super::openai::{ApiError, ChatRequest, CompletionRequest, Content, Prompt, Settings, Stop, Usage};
use super::worker::{Event, Job};
use super::AppState;
use crate::engine::{Completion, FinishReason, GenerateOptions};
use crate::sampler::{clock_seed, SamplingParams};
use crate::tokenizer::Message;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

type Shared = State<Arc<AppState>>;

/// At most this many stop strings, as the OpenAI API allows.
const MAX_STOPS: usize = 4;

pub async fn health(State(state): Shared) -> Json<Value> {
    let s = &state.stats;
    Json(json!({
        "status": "ok",
        "model": state.model_id,
        "active": s.active.load(Ordering::SeqCst),
        "completed": s.completed.load(Ordering::SeqCst),
        "cancelled": s.cancelled.load(Ordering::SeqCst),
        "max_concurrent": state.max_concurrent,
        "context": state.context,
    }))
}

fn model_object(state: &AppState) -> Value {
    json!({ "id": state.model_id, "object": "model", "created": state.created, "owned_by": "flint" })
}

pub async fn models(State(state): Shared, headers: HeaderMap) -> Response {
    match authorize(&state, &headers) {
        Ok(()) => Json(json!({ "object": "list", "data": [model_object(&state)] })).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn model(State(state): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    match id == state.model_id {
        true => Json(model_object(&state)).into_response(),
        false => unknown_model(&state, &id).into_response(),
    }
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::invalid(None, format!("Unknown request URL: {method} {}", uri.path()))
        .with_status(StatusCode::NOT_FOUND)
        .with_code("unknown_url")
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::invalid(None, format!("{method} is not allowed on {}", uri.path()))
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

pub async fn chat_completions(
    State(state): Shared,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let request: ChatRequest = parse(&state, &headers, body)?;
        check_model(&state, &request.settings)?;
        let messages = chat_messages(&request)?;
        let text = state
            .tokenizer
            .apply_chat_template(&messages, true)
            .map_err(|e| ApiError::invalid(Some("messages"), e.to_string()))?;
        let prompt = encode(&state, &text)?;
        let plan = plan(&state, &request.settings, prompt)?;
        Ok::<_, ApiError>(respond(state.clone(), plan, Kind::Chat).await)
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn completions(State(state): Shared, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let result = async {
        let request: CompletionRequest = parse(&state, &headers, body)?;
        check_model(&state, &request.settings)?;
        if request.echo == Some(true) {
            return Err(ApiError::invalid(Some("echo"), "echo is not supported"));
        }
        let text = match request.prompt {
            Prompt::One(text) => text,
            Prompt::Many(mut list) if list.len() == 1 => list.remove(0),
            Prompt::Many(list) => {
                return Err(ApiError::invalid(
                    Some("prompt"),
                    format!("{} prompts given; flint completes one prompt per request", list.len()),
                ))
            }
        };
        let prompt = encode(&state, &text)?;
        let plan = plan(&state, &request.settings, prompt)?;
        Ok(respond(state.clone(), plan, Kind::Completion).await)
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// The bearer key, when the server has one.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &state.api_key else { return Ok(()) };
    let unauthorized = |message: &str| {
        ApiError::invalid(None, message).with_status(StatusCode::UNAUTHORIZED).with_code("invalid_api_key")
    };
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match given.and_then(|v| v.strip_prefix("Bearer ")) {
        None => Err(unauthorized("no API key given: send `Authorization: Bearer KEY`")),
        Some(k) if k.trim() == key => Ok(()),
        Some(_) => Err(unauthorized("incorrect API key")),
    }
}

/// Auth, content type, body size and JSON shape, in that order.
fn parse<T: DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    authorize(state, headers)?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.trim_start().to_ascii_lowercase().starts_with("application/json") {
        return Err(ApiError::invalid(
            None,
            format!("the request body must be JSON with `Content-Type: application/json` (got `{content_type}`)"),
        )
        .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    let body = body.map_err(|r| {
        let status = r.status();
        let message = match status {
            StatusCode::PAYLOAD_TOO_LARGE => format!("the request body is larger than {} bytes", state.body_limit),
            _ => format!("cannot read the request body: {}", r.body_text()),
        };
        ApiError::invalid(None, message).with_status(status)
    })?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(None, format!("the request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid(None, "the request body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid(None, format!("invalid request: {e}")))
}

fn unknown_model(state: &AppState, model: &str) -> ApiError {
    ApiError::invalid(
        Some("model"),
        format!("the model `{model}` does not exist; this server serves `{}`", state.model_id),
    )
    .with_status(StatusCode::NOT_FOUND)
    .with_code("model_not_found")
}

fn check_model(state: &AppState, settings: &Settings) -> Result<(), ApiError> {
    match settings.model == state.model_id {
        true => Ok(()),
        false => Err(unknown_model(state, &settings.model)),
    }
}

/// The request's messages as the chat template takes them (text content only).
fn chat_messages(request: &ChatRequest) -> Result<Vec<Message>, ApiError> {
    if request.messages.is_empty() {
        return Err(ApiError::invalid(Some("messages"), "`messages` is empty"));
    }
    request
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(ApiError::invalid(
                        Some("messages"),
                        format!(
                            "messages[{i}].role `{other}` is not supported (system, developer, user, assistant are)"
                        ),
                    ))
                }
            };
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => text.push_str(t),
                            ("text", None) => {
                                return Err(ApiError::invalid(
                                    Some("messages"),
                                    format!("messages[{i}].content[{j}] has type text but no `text`"),
                                ))
                            }
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    Some("messages"),
                                    format!("messages[{i}].content[{j}] has type `{kind}`: this model reads text only"),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            Ok(Message::new(role, &content))
        })
        .collect()
}

fn encode(state: &AppState, text: &str) -> Result<Vec<u32>, ApiError> {
    // The same encoding as `flint run`, so both give the same tokens for the same text.
    let ids = state.tokenizer.encode(text, true).map_err(|e| ApiError::invalid(Some("prompt"), e.to_string()))?;
    match ids.is_empty() {
        true => Err(ApiError::invalid(Some("prompt"), "the prompt is empty")),
        false => Ok(ids),
    }
}

/// A checked request, ready to queue.
struct Plan {
    prompt: Vec<u32>,
    options: GenerateOptions,
    stream: bool,
    include_usage: bool,
}

fn plan(state: &AppState, s: &Settings, prompt: Vec<u32>) -> Result<Plan, ApiError> {
    if let Some(n) = s.n.filter(|&n| n != 1) {
        return Err(ApiError::invalid(Some("n"), format!("n = {n}: flint generates exactly one choice (n = 1)")));
    }
    let context = state.context;
    let requested = s.max_completion_tokens.or(s.max_tokens);
    if let Some(m) = requested {
        if m < 1 {
            return Err(ApiError::invalid(Some("max_tokens"), format!("max_tokens = {m}: it must be at least 1")));
        }
        if m as u64 > context as u64 {
            return Err(ApiError::invalid(
                Some("max_tokens"),
                format!("max_tokens = {m} is more than the model's context of {context} tokens"),
            ));
        }
    }
    let seed = s.seed.map_or_else(clock_seed, |s| s as u64);
    let sampling =
        SamplingParams { temperature: s.temperature.unwrap_or(1.0), top_k: 0, top_p: s.top_p.unwrap_or(1.0), seed };
    sampling.check_setting().map_err(|(param, problem)| ApiError::invalid(Some(param), problem))?;
    let stop = match &s.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(list)) => list.clone(),
    };
    if stop.len() > MAX_STOPS || stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(Some("stop"), format!("stop takes up to {MAX_STOPS} non-empty strings")));
    }
    if prompt.len() >= context {
        return Err(context_exceeded(context, prompt.len(), None));
    }
    let max_tokens = match requested {
        Some(m) if prompt.len() + m as usize > context => {
            return Err(context_exceeded(context, prompt.len(), Some(m as usize)))
        }
        Some(m) => m as usize,
        None => context - prompt.len(),
    };
    Ok(Plan {
        prompt,
        options: GenerateOptions { max_tokens, sampling, stop, stop_token_ids: state.stop_token_ids.clone() },
        stream: s.stream.unwrap_or(false),
        include_usage: s.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false),
    })
}

fn context_exceeded(context: usize, prompt: usize, completion: Option<usize>) -> ApiError {
    let message = match completion {
        None => format!("the prompt has {prompt} tokens; the model's context holds {context}"),
        Some(m) => format!(
            "the model's context holds {context} tokens, but {} were requested ({prompt} in the prompt, \
             {m} in the completion)",
            prompt + m
        ),
    };
    ApiError::invalid(Some("messages"), message).with_code("context_length_exceeded")
}

#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Completion,
}

fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::Cancelled => "length",
    }
}

/// Admits and queues the request, then answers with JSON or a stream.
async fn respond(state: Arc<AppState>, plan: Plan, kind: Kind) -> Response {
    let Some(slot) = state.stats.try_admit(state.max_concurrent) else {
        return ApiError::invalid(
            None,
            format!("the server is at its limit of {} queued or running requests; retry later", state.max_concurrent),
        )
        .with_status(StatusCode::TOO_MANY_REQUESTS)
        .with_code("rate_limit_exceeded")
        .into_response();
    };
    let (events, mut rx) = mpsc::unbounded_channel();
    let job = Job { prompt: plan.prompt, options: plan.options, events, slot };
    if let Err(e) = state.engine.submit(job) {
        return ApiError::server(e.to_string()).with_status(StatusCode::SERVICE_UNAVAILABLE).into_response();
    }
    let id = format!(
        "{}-{}",
        match kind {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        },
        state.next_id.fetch_add(1, Ordering::SeqCst)
    );
    let meta = Meta { id, created: super::unix_time(), model: state.model_id.clone(), kind };
    if plan.stream {
        return stream(meta, rx, plan.include_usage).into_response();
    }
    loop {
        match rx.recv().await {
            Some(Event::Text(_)) => {}
            Some(Event::Done(Ok(c))) => return Json(meta.whole(&c)).into_response(),
            Some(Event::Done(Err(e))) => return ApiError::server(e).into_response(),
            None => return ApiError::server("the engine stopped").into_response(),
        }
    }
}

/// What every response object of one request repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

impl Meta {
    fn whole(&self, c: &Completion) -> Value {
        let usage = Usage::new(c.prompt_tokens, c.tokens.len());
        let finish = finish_reason(c.finish_reason);
        let choice = match self.kind {
            Kind::Chat => json!({
                "index": 0,
                "message": { "role": "assistant", "content": c.text },
                "logprobs": null,
                "finish_reason": finish,
            }),
            Kind::Completion => json!({ "index": 0, "text": c.text, "logprobs": null, "finish_reason": finish }),
        };
        let object = match self.kind {
            Kind::Chat => "chat.completion",
            Kind::Completion => "text_completion",
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [choice], "usage": usage,
        })
    }

    /// One streamed chunk: `text` as the delta, or the role opener, or the finish.
    fn chunk(&self, text: Option<&str>, role: bool, finish: Option<&str>, include_usage: bool) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let delta = match (role, text) {
                    (true, _) => json!({ "role": "assistant", "content": "" }),
                    (false, Some(t)) => json!({ "content": t }),
                    (false, None) => json!({}),
                };
                json!({ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish })
            }
            Kind::Completion => {
                json!({ "index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish })
            }
        };
        let mut chunk = self.chunk_base(json!([choice]));
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    fn chunk_base(&self, choices: Value) -> Value {
        let object = match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        json!({ "id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices })
    }
}

fn data(value: &Value) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().data(value.to_string()))
}

/// Server-sent events: a chunk per piece of text, the finish, the usage when asked, `[DONE]`.
/// A task forwards the engine's events; when the client goes away the response stream is
/// dropped, the task sees its channel close and drops the engine's receiver, which stops the
/// generation at its next token.
fn stream(meta: Meta, mut rx: mpsc::UnboundedReceiver<Event>, include_usage: bool) -> impl IntoResponse {
    let (tx, out) = mpsc::unbounded_channel::<Result<SseEvent, Infallible>>();
    tokio::spawn(async move {
        if matches!(meta.kind, Kind::Chat) && tx.send(data(&meta.chunk(None, true, None, include_usage))).is_err() {
            return;
        }
        loop {
            let event = tokio::select! {
                event = rx.recv() => event,
                _ = tx.closed() => return,
            };
            let sent = match event {
                Some(Event::Text(t)) => tx.send(data(&meta.chunk(Some(&t), false, None, include_usage))),
                Some(Event::Done(Ok(c))) => {
                    let _ =
                        tx.send(data(&meta.chunk(None, false, Some(finish_reason(c.finish_reason)), include_usage)));
                    if include_usage {
                        let mut last = meta.chunk_base(json!([]));
                        last["usage"] = json!(Usage::new(c.prompt_tokens, c.tokens.len()));
                        let _ = tx.send(data(&last));
                    }
                    break;
                }
                Some(Event::Done(Err(e))) => {
                    let _ = tx.send(data(&ApiError::server(e).body()));
                    break;
                }
                None => {
                    let _ = tx.send(data(&ApiError::server("the engine stopped").body()));
                    break;
                }
            };
            if sent.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(SseEvent::default().data("[DONE]")));
    });
    Sse::new(UnboundedReceiverStream::new(out))
}
