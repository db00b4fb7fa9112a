//! An OpenAI-compatible HTTP server (`rkinfer serve`) on axum + tokio:
//! chat and text completions (streamed as server-sent events), models,
//! health, tokenize/detokenize, Prometheus metrics and a small chat page.
//!
//! Requests share one loaded model through the [`engine`]'s slots, each with
//! its own KV cache; requests beyond the slots wait in a bounded queue.
//!
//! ```no_run
//! use rkinfer::chat::ChatTemplate;
//! use rkinfer::server::{Server, ServerOptions};
//! use rkinfer::session::Llm;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let llm = Llm::load("model.gguf".as_ref(), &Default::default())?;
//! let template = ChatTemplate::for_tokenizer(llm.tokenizer())?;
//! let server = Server::bind(llm, template, ServerOptions::default())?;
//! println!("listening on http://{}", server.local_addr());
//! server.run_until_signal()?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::chat::ChatTemplate;
use crate::model::StateOptions;
use crate::session::Llm;

mod api;
pub mod engine;
mod error;
mod grammar;
mod metrics;
mod routes;
mod schema;

pub use engine::EngineOptions;
pub use error::ApiError;
pub use grammar::{Grammar, JsonMachine};
pub use metrics::Metrics;
pub use schema::compile as compile_json_schema;

/// Settings of a [`Server`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Address to listen on (loopback by default: expose it on purpose).
    pub host: String,
    /// Port (0: any free one; see [`Server::local_addr`]).
    pub port: u16,
    pub engine: EngineOptions,
    /// When set, requests must carry `Authorization: Bearer KEY`
    /// (`/health` and the chat page excepted).
    pub api_key: Option<String>,
    /// Largest request body accepted (413 beyond).
    pub body_limit: usize,
    /// The model's name in responses and `/v1/models`.
    pub model_name: String,
    /// On shutdown, how long running generations may go on before they
    /// are cancelled.
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            host: "127.0.0.1".into(),
            port: 8080,
            engine: EngineOptions {
                parallel: 2,
                queue: 16,
                state: StateOptions::default(),
            },
            api_key: None,
            body_limit: 2 << 20,
            model_name: "rkinfer".into(),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug)]
pub enum ServerError {
    /// Binding or serving the socket failed.
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The slots could not be allocated (context too large, ...).
    Engine(Box<crate::Error>),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Io { what, source } => write!(f, "{what}: {source}"),
            ServerError::Engine(e) => write!(f, "starting the inference slots: {e}"),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Io { source, .. } => Some(source),
            ServerError::Engine(e) => Some(e.as_ref()),
        }
    }
}

/// What the handlers share.
struct App {
    llm: Arc<Llm>,
    template: ChatTemplate,
    engine: engine::Engine,
    metrics: Arc<Metrics>,
    vocab: Arc<grammar::TokenBytes>,
    api_key: Option<String>,
    body_limit: usize,
    model_name: String,
    created: u64,
    next_id: AtomicU64,
}

/// A bound server whose engine runs; [`serve`](Server::serve) answers
/// requests.
pub struct Server {
    app: Arc<App>,
    listener: std::net::TcpListener,
    grace: Duration,
}

impl Server {
    /// Starts the slots and binds the socket.
    pub fn bind(
        llm: Llm,
        template: ChatTemplate,
        opts: ServerOptions,
    ) -> Result<Server, ServerError> {
        let addr = format!("{}:{}", opts.host, opts.port);
        let listener = std::net::TcpListener::bind(&addr).map_err(|source| ServerError::Io {
            what: format!("cannot listen on {addr}"),
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServerError::Io {
                what: "setting the socket non-blocking".into(),
                source,
            })?;
        let llm = Arc::new(llm);
        let metrics = Arc::new(Metrics::default());
        let engine = engine::Engine::start(llm.clone(), &opts.engine, metrics.clone())
            .map_err(|e| ServerError::Engine(Box::new(e)))?;
        let vocab = Arc::new(grammar::TokenBytes::new(llm.tokenizer()));
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let app = Arc::new(App {
            llm,
            template,
            engine,
            metrics,
            vocab,
            api_key: opts.api_key.filter(|k| !k.is_empty()),
            body_limit: opts.body_limit,
            model_name: opts.model_name,
            created,
            next_id: AtomicU64::new(1),
        });
        Ok(Server {
            app,
            listener,
            grace: opts.shutdown_grace,
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Each slot's context size.
    pub fn n_ctx(&self) -> usize {
        self.app.engine.n_ctx()
    }

    /// Serves until `shutdown` resolves; then running generations get the
    /// grace period to finish, and the call returns when every connection
    /// has closed (or a few seconds after the grace period at most).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let listener =
            tokio::net::TcpListener::from_std(self.listener).map_err(|source| ServerError::Io {
                what: "registering the socket".into(),
                source,
            })?;
        let app = self.app.clone();
        let grace = self.grace;
        let stopping = Arc::new(tokio::sync::Notify::new());
        let notify = stopping.clone();
        let engine_app = app.clone();
        let signal = async move {
            shutdown.await;
            engine_app.engine.shutdown(grace);
            notify.notify_one();
        };
        let router = routes::router(app.clone());
        let serve = axum::serve(listener, router).with_graceful_shutdown(signal);
        // Connections that stay open past the grace period (idle clients)
        // must not hold the process.
        let deadline = async move {
            stopping.notified().await;
            tokio::time::sleep(grace + Duration::from_secs(3)).await;
        };
        let result = tokio::select! {
            r = serve => r.map_err(|source| ServerError::Io { what: "serving".into(), source }),
            () = deadline => Ok(()),
        };
        app.engine.shutdown(Duration::ZERO);
        result
    }

    /// Serves on a new runtime until SIGTERM or Ctrl-C.
    pub fn run_until_signal(self) -> Result<(), ServerError> {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("rkinfer-http")
            .enable_all()
            .build()
            .map_err(|source| ServerError::Io {
                what: "starting the async runtime".into(),
                source,
            })?;
        let app = self.app.clone();
        let result = runtime.block_on(self.serve(shutdown_signal()));
        drop(runtime);
        app.engine.join();
        result
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Parses and checks a `/v1/chat/completions` body as the server does,
/// for a context of `n_ctx` and a prompt of `prompt_tokens`: the messages,
/// or the error the client would get (the fuzz targets drive it).
#[doc(hidden)]
pub fn parse_chat_request(
    body: &[u8],
    n_vocab: usize,
    prompt_tokens: usize,
    n_ctx: usize,
) -> Result<Vec<crate::chat::Message>, ApiError> {
    let req: api::ChatRequest = api::parse(body)?;
    req.sampling.params(n_vocab, prompt_tokens, n_ctx)?;
    Ok(req.messages)
}

/// The `server_request` fuzz target's body (see docs/fuzzing.md): any
/// bytes as a chat-completions body, parsed and checked, its messages
/// rendered with the chatml built-in. Here rather than in `fuzz_support`,
/// which sits below the server.
#[doc(hidden)]
pub fn fuzz_chat_request(data: &[u8]) {
    if let Ok(messages) = parse_chat_request(data, 100, 10, 64) {
        if let Ok(t) = crate::chat::ChatTemplate::builtin("chatml") {
            let _ = t.render(&messages, true);
        }
    }
}
