//! `rkinfer serve -m MODEL.gguf`: the OpenAI-compatible HTTP server.

use std::path::PathBuf;
use std::time::Duration;

use crate::chat::{ChatError, ChatTemplate};
use crate::model::StateOptions;
use crate::server::{EngineOptions, Server, ServerOptions};
use crate::session::Llm;
use crate::{Error, Result};

use super::options::{model_path, LoadArgs};
use super::run::{choose_ctx, parse_cache_type};

/// Command-line flags (llama-server's names).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The GGUF model file (or give it as the first positional argument).
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// The model file, positionally.
    #[arg(value_name = "MODEL")]
    pub model_pos: Option<PathBuf>,
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long = "host", default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port; the address is printed).
    #[arg(long = "port", default_value_t = 8080)]
    pub port: u16,
    /// Requests generated at once (slots, each with its own KV cache).
    #[arg(long = "parallel", default_value_t = 2)]
    pub parallel: usize,
    /// Requests that may wait for a slot; more get 503 with Retry-After.
    #[arg(long = "queue", default_value_t = 16)]
    pub queue: usize,
    /// Context size of each slot (0: the model's, capped to 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    pub ctx_size: usize,
    /// Prompt tokens per forward pass.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// Require `Authorization: Bearer KEY`.
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// Largest request body in bytes (413 beyond).
    #[arg(long = "body-limit", default_value_t = 2 << 20)]
    pub body_limit: usize,
    /// The model's name in responses (default: the file's stem).
    #[arg(long = "alias")]
    pub alias: Option<String>,
    /// Chat template: a built-in name (chatml, llama3, gemma, phi3, zephyr,
    /// plain) or a Jinja file (default: the model's).
    #[arg(long = "chat-template")]
    pub chat_template: Option<String>,
    /// Seconds running generations may go on after SIGTERM/Ctrl-C.
    #[arg(long = "shutdown-grace", default_value_t = 5)]
    pub shutdown_grace: u64,
    /// KV cache type of keys: f16, q8_0 or q4_0 (also -ctk).
    #[arg(long = "cache-type-k", default_value = "f16")]
    pub cache_type_k: String,
    /// KV cache type of values: f16, q8_0 or q4_0 (also -ctv).
    #[arg(long = "cache-type-v", default_value = "f16")]
    pub cache_type_v: String,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// Runs `rkinfer serve` until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> Result<()> {
    let path = model_path(&args.model, &args.model_pos)?;
    if args.parallel == 0 {
        return Err(Error::InvalidArgument(
            "--parallel must be at least 1".into(),
        ));
    }
    if args.batch_size == 0 {
        return Err(Error::InvalidArgument("-b must be at least 1".into()));
    }
    let llm = Llm::load(&path, &args.load.to_options()?)?;
    let template = match &args.chat_template {
        Some(name) => ChatTemplate::from_name_or_file(name)
            .map_err(|e| Error::InvalidArgument(format!("--chat-template: {e}")))?
            .with_tokens_of(llm.tokenizer()),
        None => ChatTemplate::for_tokenizer(llm.tokenizer()).map_err(ChatError::into_error)?,
    };
    let template_origin = template.origin().to_string();
    let n_ctx = choose_ctx(args.ctx_size, llm.model().n_ctx_train(), false);
    let model_name = args.alias.clone().unwrap_or_else(|| {
        path.file_stem()
            .map_or_else(|| "rkinfer".into(), |s| s.to_string_lossy().into_owned())
    });
    let opts = ServerOptions {
        host: args.host.clone(),
        port: args.port,
        engine: EngineOptions {
            parallel: args.parallel,
            queue: args.queue,
            state: StateOptions {
                n_ctx,
                type_k: parse_cache_type("-ctk", &args.cache_type_k)?,
                type_v: parse_cache_type("-ctv", &args.cache_type_v)?,
                n_batch: args.batch_size.min(n_ctx),
            },
        },
        api_key: args.api_key.clone(),
        body_limit: args.body_limit,
        model_name,
        shutdown_grace: Duration::from_secs(args.shutdown_grace),
    };
    let server =
        Server::bind(llm, template, opts).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    eprintln!("chat: {}", template_origin);
    eprintln!(
        "rkinfer serve: {} slots of {} tokens; listening on http://{}",
        args.parallel,
        server.n_ctx(),
        server.local_addr()
    );
    server
        .run_until_signal()
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    eprintln!("rkinfer serve: stopped");
    Ok(())
}
