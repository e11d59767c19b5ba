//! `flint serve`: an OpenAI-compatible HTTP server (axum on tokio) in front of one engine
//! worker. See `routes` for the endpoints, `openai` for the wire shapes, `worker` for the
//! queue that gives requests the GPU one at a time, in arrival order.

pub mod openai;
mod routes;
pub mod worker;

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::routing::{get, post};
use axum::Router;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use worker::{Engine, Stats};

/// How the server listens and what it admits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Requests must carry `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// An origin allowed to call the API from a browser (`*` for any).
    pub cors: Option<String>,
    /// Requests queued or running at once; more get 429.
    pub max_concurrent: usize,
    /// The name clients pass as `model`.
    pub model_id: String,
    /// Positions the engine holds: prompt plus completion.
    pub context: usize,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
}

/// What every handler reads.
pub struct AppState {
    engine: Engine,
    tokenizer: Arc<Tokenizer>,
    stats: Arc<Stats>,
    model_id: String,
    context: usize,
    api_key: Option<String>,
    max_concurrent: usize,
    body_limit: usize,
    stop_token_ids: Vec<u32>,
    created: u64,
    next_id: AtomicU64,
}

fn unix_time() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The routes over `state`.
fn router(state: Arc<AppState>, config: &ServerConfig) -> Result<Router> {
    let mut app = Router::new()
        .route("/v1/chat/completions", post(routes::chat_completions))
        .route("/v1/completions", post(routes::completions))
        .route("/v1/models", get(routes::models))
        .route("/v1/models/{id}", get(routes::model))
        .route("/health", get(routes::health))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(config.body_limit))
        .with_state(state);
    if let Some(origin) = &config.cors {
        use tower_http::cors::{AllowOrigin, Any, CorsLayer};
        let allow = match origin.as_str() {
            "*" => AllowOrigin::any(),
            o => AllowOrigin::exact(
                HeaderValue::from_str(o).map_err(|_| Error::Service(format!("--cors `{o}` is not a valid origin")))?,
            ),
        };
        app = app.layer(CorsLayer::new().allow_origin(allow).allow_methods(Any).allow_headers(Any));
    }
    Ok(app)
}

/// Serves until Ctrl-C or SIGTERM. `engine` already runs the model; `on_listen` is told the
/// bound address (the port may have been 0).
pub fn serve(
    config: ServerConfig,
    engine: Engine,
    stats: Arc<Stats>,
    tokenizer: Arc<Tokenizer>,
    stop_token_ids: Vec<u32>,
    on_listen: impl FnOnce(std::net::SocketAddr),
) -> Result<()> {
    let state = Arc::new(AppState {
        engine,
        tokenizer,
        stats,
        model_id: config.model_id.clone(),
        context: config.context,
        api_key: config.api_key.clone(),
        max_concurrent: config.max_concurrent,
        body_limit: config.body_limit,
        stop_token_ids,
        created: unix_time(),
        next_id: AtomicU64::new(1),
    });
    let app = router(state, &config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Service(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        let address = format!("{}:{}", config.host, config.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| Error::Service(format!("cannot listen on {address}: {e}")))?;
        let bound = listener.local_addr().map_err(|e| Error::Service(format!("no local address: {e}")))?;
        on_listen(bound);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| Error::Service(format!("server error: {e}")))
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
