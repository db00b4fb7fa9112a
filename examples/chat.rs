//! Chat with the library: the model's own chat template, two turns on one
//! KV cache (the second turn feeds only its new tokens).
//!
//! cargo run --release --example chat -- models/SmolLM2-135M-Instruct.Q4_1.gguf

use std::io::Write;

use rkinfer::chat::{Chat, ChatOptions};
use rkinfer::model::StateOptions;
use rkinfer::session::Llm;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(model) = std::env::args().nth(1) else {
        eprintln!("usage: chat MODEL.gguf");
        std::process::exit(2);
    };
    let llm = Llm::load(model.as_ref(), &Default::default())?;
    let state = StateOptions {
        n_ctx: 1024,
        ..Default::default()
    };
    let mut chat = Chat::from_llm(&llm, &state)?.with_options(ChatOptions {
        max_tokens: 64,
        ..Default::default()
    });
    eprintln!("template: {}", chat.template().origin());
    for question in ["Hello! Who are you?", "Name three colors."] {
        println!("> {question}");
        let reply = chat.send(question, |piece| {
            print!("{piece}");
            std::io::stdout().flush().ok();
        })?;
        println!(
            "\n({} new tokens, {} reused)",
            reply.fed_tokens, reply.reused_tokens
        );
    }
    Ok(())
}
