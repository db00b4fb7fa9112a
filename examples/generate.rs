//! Generate text with the library API: load a model, open a session, feed a
//! prompt, stream the answer, then continue the conversation on the same KV
//! cache.
//!
//! cargo run --release --example generate -- models/SmolLM2-135M-Instruct.Q4_1.gguf "The capital of France is"

use std::io::Write;

use rkinfer::model::StateOptions;
use rkinfer::sampler::{Sampler, SamplerParams};
use rkinfer::session::{GenerateOptions, Llm};

fn main() -> rkinfer::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(model), prompt) = (args.next(), args.next()) else {
        eprintln!("usage: generate MODEL.gguf [PROMPT]");
        std::process::exit(2);
    };
    let prompt = prompt.unwrap_or_else(|| "Once upon a time,".to_string());

    let llm = Llm::load(model.as_ref(), &Default::default())?;
    let mut session = llm.session(&StateOptions {
        n_ctx: 1024,
        ..Default::default()
    })?;
    let mut sampler = Sampler::new(SamplerParams {
        seed: Some(42),
        ..Default::default()
    })?;

    // Turn 1: the prompt, then up to 48 tokens.
    session.feed_text(llm.tokenizer(), &prompt, true)?;
    print!("{prompt}");
    let opts = GenerateOptions {
        max_tokens: 48,
        stop: vec!["\n\n".into()],
    };
    for piece in session.generate_text(llm.tokenizer(), &mut sampler, &opts) {
        print!("{}", piece?);
        std::io::stdout().flush().ok();
    }

    // Turn 2: more text on the same cache (only the new tokens are evaluated).
    let more = " In summary,";
    session.feed_text(llm.tokenizer(), more, false)?;
    print!("{more}");
    for piece in session.generate_text(llm.tokenizer(), &mut Sampler::greedy(), &opts) {
        print!("{}", piece?);
    }
    println!();
    let t = session.timings();
    eprintln!(
        "{} prompt tokens at {:.1} t/s, {} decode steps at {:.1} t/s, {} tokens in the cache",
        t.prompt_tokens,
        t.prompt_tokens_per_s(),
        t.eval_runs,
        t.eval_tokens_per_s(),
        session.tokens().len()
    );
    Ok(())
}
