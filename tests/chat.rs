//! The library chat on the real models: cache reuse across turns, the
//! model's template rendered as before, the default template of a model
//! without one, and `rkinfer run -cnv`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use rkinfer::chat::{Chat, ChatOptions, ChatTemplate, DefaultReason, Message, TemplateOrigin};
use rkinfer::model::StateOptions;
use rkinfer::session::{Llm, StopReason};
use rkinfer::tokenizer::Tokenizer;

fn tokenizer(file: &str) -> Tokenizer {
    let f = rkinfer::gguf::GgufFile::open(common::models_dir().join(file)).unwrap();
    Tokenizer::from_gguf(&f).unwrap()
}

fn conversation() -> Vec<Message> {
    vec![
        Message::system("You are a helpful assistant."),
        Message::user("Hello! What is 2+2?"),
        Message::assistant("2+2 is 4."),
        Message::user("Thanks. And 3+3?"),
    ]
}

/// SmolLM2's template renders byte for byte as the hand-written renderer
/// that `rkinfer run -cnv` used before the chat module (strings taken from
/// it).
#[test]
fn smollm2_template_renders_as_before() {
    let tok = tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf");
    let t = ChatTemplate::for_tokenizer(&tok).unwrap();
    assert_eq!(t.origin(), &TemplateOrigin::Model);
    let conv = conversation();
    assert_eq!(
        t.render(&conv, true).unwrap(),
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello! What is 2+2?<|im_end|>\n<|im_start|>assistant\n2+2 is 4.<|im_end|>\n<|im_start|>user\nThanks. And 3+3?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&conv[1..], true).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHello! What is 2+2?<|im_end|>\n<|im_start|>assistant\n2+2 is 4.<|im_end|>\n<|im_start|>user\nThanks. And 3+3?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&conv[1..3], false).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHello! What is 2+2?<|im_end|>\n<|im_start|>assistant\n2+2 is 4.<|im_end|>\n"
    );
    assert_eq!(rkinfer::chat::default_builtin_for(&tok), "chatml");
}

/// Gemma 3 270M has no chat template: the gemma built-in is chosen from its
/// vocabulary (not a "System:" transcript).
#[test]
fn gemma_without_template_gets_the_gemma_format() {
    let tok = tokenizer("gemma-3-270m-q4_k_m.gguf");
    assert!(tok.chat_template().is_none());
    let t = ChatTemplate::for_tokenizer(&tok).unwrap();
    assert_eq!(
        t.origin(),
        &TemplateOrigin::Default {
            name: "gemma",
            reason: DefaultReason::NoTemplate
        }
    );
    assert_eq!(
        t.render(&conversation()[..2], true).unwrap(),
        "<bos><start_of_turn>user\nYou are a helpful assistant.\n\nHello! What is 2+2?<end_of_turn>\n<start_of_turn>model\n"
    );
    assert!(t.origin().to_string().contains("no chat template"));
}

/// Two greedy turns on SmolLM2: the second feeds only the new text, and the
/// cache holds exactly the model template's rendering.
#[test]
fn two_turns_reuse_the_cache() {
    let llm = Llm::load(
        &common::models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf"),
        &Default::default(),
    )
    .unwrap();
    let tok = llm.tokenizer();
    let state = StateOptions {
        n_ctx: 512,
        ..Default::default()
    };
    let mut chat = Chat::from_llm(&llm, &state)
        .unwrap()
        .with_options(ChatOptions {
            max_tokens: 24,
            ..Default::default()
        });
    let mut streamed = String::new();
    let first = chat
        .send("What is the capital of France?", |p| streamed.push_str(p))
        .unwrap();
    assert_eq!(streamed, first.text);
    assert!(!first.text.is_empty());
    assert!(matches!(
        first.stop,
        Some(StopReason::EndOfGeneration(_) | StopReason::MaxTokens)
    ));
    let template = ChatTemplate::for_tokenizer(tok).unwrap();
    let prompt1 = template.render(&chat.messages()[..1], true).unwrap();
    assert_eq!(first.reused_tokens, 0);
    assert_eq!(
        first.fed_tokens,
        tok.encode(&prompt1, true, true).unwrap().len()
    );
    let cached = chat.session().tokens().len();
    let prompt_tokens = chat.session().timings().prompt_tokens;

    let second = chat.send("And of Italy?", |_| {}).unwrap();
    let prompt2 = template.render(&chat.messages()[..3], true).unwrap();
    assert!(prompt2.starts_with(&(prompt1.clone() + &first.text)));
    let delta = &prompt2[prompt1.len() + first.text.len()..];
    assert_eq!(second.reused_tokens, cached);
    assert_eq!(
        second.fed_tokens,
        tok.encode(delta, false, true).unwrap().len()
    );
    // Evaluated this turn: the new tokens, plus the last sampled token of
    // the first reply whose logits were never needed.
    let evaluated = chat.session().timings().prompt_tokens - prompt_tokens;
    assert!(
        evaluated <= second.fed_tokens + 1,
        "{evaluated} tokens evaluated for {} new",
        second.fed_tokens
    );
    // The cache holds the template's rendering and both replies.
    assert_eq!(chat.fed_text(), prompt2 + &second.text);
    assert_eq!(
        tok.detokenize(chat.session().tokens(), false, true),
        chat.fed_text()
    );
    assert_eq!(chat.messages().len(), 4);
}

/// `rkinfer run -cnv` on the template-less Gemma file says which template
/// it chose, takes llama.cpp's `-sys`, and answers every line.
#[test]
fn cli_chat_names_the_default_template() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rkinfer"))
        .args(["run", "-m"])
        .arg(common::models_dir().join("gemma-3-270m-q4_k_m.gguf"))
        .args([
            "-cnv",
            "-sys",
            "Be brief.",
            "--temp",
            "0",
            "-n",
            "4",
            "-c",
            "256",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hi\n\xff\nBye\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("chat: built-in template gemma, chosen from the vocabulary"),
        "{err}"
    );
    assert!(err.contains("not valid UTF-8"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("System:"));
    assert_eq!(err.matches("\n> ").count(), 4, "{err}");
}
