//! [`Chat`]: a conversation over a [`Session`] that renders the whole
//! conversation with the template each turn and feeds only the text added
//! since the last turn, so the KV cache of the history is reused.

use std::ops::ControlFlow;

use super::{ChatError, ChatTemplate, Message, Role};
use crate::model::StateOptions;
use crate::sampler::Sampler;
use crate::session::{
    Detokenize, GenerateOptions, Llm, LogitsSource, ModelContext, Session, StopReason,
};
use crate::tokenizer::Tokenizer;

/// Options of a [`Chat`].
#[derive(Clone, Debug, Default)]
pub struct ChatOptions {
    /// Tokens per reply at most (0: until the model ends its turn or the
    /// context is full).
    pub max_tokens: usize,
    /// Text that ends a reply, besides the model's end-of-turn tokens.
    pub stop: Vec<String>,
    /// Extra template variables, e.g. `enable_thinking`, `tools`.
    pub template_kwargs: serde_json::Map<String, serde_json::Value>,
    /// Free context the next reply should have; when the prompt leaves
    /// less, the oldest turns are dropped first (0: `max_tokens` if set,
    /// else a quarter of the context).
    pub reply_room: usize,
    /// Tokens at the start of the conversation never dropped to make room
    /// (llama.cpp's `--keep`): the turns after the system prompt that end
    /// within the first `keep_tokens` tokens stay, as the system prompt
    /// always does.
    pub keep_tokens: usize,
}

/// One assistant reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The text (also recorded as the assistant's message).
    pub text: String,
    /// Why it ended; `None` when the callback stopped it.
    pub stop: Option<StopReason>,
    /// Prompt tokens fed for this turn.
    pub fed_tokens: usize,
    /// Tokens of the cache kept from earlier turns.
    pub reused_tokens: usize,
    /// Old messages dropped to make room (the system prompt is kept).
    pub dropped_messages: usize,
}

/// A position where the cache holds exactly a prefix of the rendered text:
/// `text` bytes of it as `tokens` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Checkpoint {
    text: usize,
    tokens: usize,
}

/// What a turn feeds: decided before the cache is touched.
struct Plan {
    messages: Vec<Message>,
    rendered: String,
    checkpoint: usize,
    ids: Vec<u32>,
    dropped: usize,
}

/// A conversation with a model: messages, the template, and a session whose
/// cache holds the rendered conversation.
pub struct Chat<'t, L: LogitsSource> {
    session: Session<L>,
    tokenizer: &'t Tokenizer,
    template: ChatTemplate,
    sampler: Sampler,
    options: ChatOptions,
    messages: Vec<Message>,
    /// The text the cache holds, as the template rendered it (possibly
    /// followed in the cache by tokens no checkpoint covers).
    fed_text: String,
    /// Prefixes of `fed_text` the cache can be cut back to; the first is
    /// the empty one.
    checkpoints: Vec<Checkpoint>,
}

impl<'t> Chat<'t, ModelContext<'t>> {
    /// A chat with the model's own template (or the default built-in for
    /// its vocabulary) on a new session; greedy sampling.
    pub fn from_llm(llm: &'t Llm, state: &StateOptions) -> Result<Self, ChatError> {
        let session = llm.session(state)?;
        let template = ChatTemplate::for_tokenizer(llm.tokenizer())?;
        Ok(Chat::new(session, llm.tokenizer(), template))
    }
}

impl<'t, L: LogitsSource> Chat<'t, L> {
    /// A chat over `session` (cleared) with `template`; greedy sampling.
    pub fn new(mut session: Session<L>, tokenizer: &'t Tokenizer, template: ChatTemplate) -> Self {
        session.clear();
        Chat {
            session,
            tokenizer,
            template,
            sampler: Sampler::greedy(),
            options: ChatOptions::default(),
            messages: Vec::new(),
            fed_text: String::new(),
            checkpoints: vec![Checkpoint { text: 0, tokens: 0 }],
        }
    }

    /// Samples replies with `sampler`.
    pub fn with_sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = sampler;
        self
    }

    /// Sets the options.
    pub fn with_options(mut self, options: ChatOptions) -> Self {
        self.options = options;
        self
    }

    /// The options, to change between turns.
    pub fn options_mut(&mut self) -> &mut ChatOptions {
        &mut self.options
    }

    /// The sampler.
    pub fn sampler_mut(&mut self) -> &mut Sampler {
        &mut self.sampler
    }

    /// The template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The session (tokens, timings).
    pub fn session(&self) -> &Session<L> {
        &self.session
    }

    /// The conversation as it stands in the context.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The rendered text the cache holds.
    pub fn fed_text(&self) -> &str {
        &self.fed_text
    }

    /// Sets (or replaces) the system prompt; it is kept when old turns are
    /// dropped.
    pub fn set_system(&mut self, text: impl Into<String>) {
        let m = Message::system(text);
        match self.messages.first_mut() {
            Some(first) if first.role == Role::System => *first = m,
            _ => self.messages.insert(0, m),
        }
    }

    /// Appends a message (e.g. a tool result) without replying.
    pub fn push(&mut self, message: Message) {
        self.messages.push(message);
    }

    /// Forgets the conversation except the system prompt.
    pub fn clear(&mut self) {
        self.messages.retain(|m| m.role == Role::System);
        self.messages.truncate(1);
    }

    /// Sends a user message and streams the reply to `on_piece`.
    pub fn send(&mut self, user: &str, mut on_piece: impl FnMut(&str)) -> Result<Reply, ChatError> {
        self.send_with(user, |piece| {
            on_piece(piece);
            ControlFlow::Continue(())
        })
    }

    /// Like [`send`](Self::send); `on_piece` may stop the reply (e.g. on
    /// Ctrl-C), which keeps what was said so far. On an error the message
    /// is not kept and the chat goes on as before it.
    pub fn send_with(
        &mut self,
        user: &str,
        on_piece: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Reply, ChatError> {
        self.messages.push(Message::user(user));
        let reply = self.respond(on_piece);
        if reply.is_err() {
            self.messages.pop();
        }
        reply
    }

    /// Generates the assistant's turn for the conversation as it stands and
    /// records it.
    pub fn respond(
        &mut self,
        mut on_piece: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Reply, ChatError> {
        let plan = self.plan()?;
        let reused = self.checkpoints[plan.checkpoint].tokens;
        self.session.truncate(reused);
        if let Err(e) = self.session.feed_tokens(&plan.ids) {
            self.session.truncate(reused);
            self.checkpoints.truncate(plan.checkpoint + 1);
            self.fed_text
                .truncate(self.checkpoints[plan.checkpoint].text);
            return Err(e.into());
        }
        self.messages = plan.messages;
        self.fed_text = plan.rendered;
        self.checkpoints.truncate(plan.checkpoint + 1);
        let prompt_end = Checkpoint {
            text: self.fed_text.len(),
            tokens: self.session.tokens().len(),
        };
        self.checkpoints.push(prompt_end);

        let mut stop = self.options.stop.clone();
        stop.extend(self.template.stop_strings().iter().cloned());
        let opts = GenerateOptions {
            max_tokens: self.options.max_tokens,
            stop,
        };
        let mut stream = self
            .session
            .generate_text(self.tokenizer, &mut self.sampler, &opts);
        let mut interrupted = false;
        for piece in stream.by_ref() {
            let piece = match piece {
                Ok(p) => p,
                Err(e) => {
                    drop(stream);
                    self.session.truncate(prompt_end.tokens);
                    return Err(e.into());
                }
            };
            if on_piece(&piece).is_break() {
                interrupted = true;
                break;
            }
        }
        let text = stream.text().to_string();
        let generated = stream.generated().to_vec();
        let stop = if interrupted {
            None
        } else {
            stream.stop_reason().cloned()
        };
        drop(stream);

        // The cache extends the checkpoint only if the reply's tokens print
        // as exactly the text recorded (not when a stop string, held bytes
        // or a control token differ); otherwise the next turn re-feeds the
        // reply from the prompt's end.
        let printed: Vec<u8> = generated
            .iter()
            .flat_map(|&id| self.tokenizer.piece(id))
            .collect();
        if printed == text.as_bytes() {
            self.fed_text.push_str(&text);
            self.checkpoints.push(Checkpoint {
                text: self.fed_text.len(),
                tokens: self.session.tokens().len(),
            });
        }
        self.messages.push(Message::assistant(text.clone()));
        Ok(Reply {
            text,
            stop,
            fed_tokens: plan.ids.len(),
            reused_tokens: reused,
            dropped_messages: plan.dropped,
        })
    }

    /// Tokens the reply should find free.
    fn reply_room(&self) -> usize {
        let room = match (self.options.reply_room, self.options.max_tokens) {
            (0, 0) => self.session.n_ctx() / 4,
            (0, n) => n,
            (r, _) => r,
        };
        room.min(self.session.n_ctx() / 2)
    }

    /// Renders the conversation, finds the longest reusable cache prefix,
    /// and drops the oldest turns while the prompt leaves too little room.
    fn plan(&self) -> Result<Plan, ChatError> {
        let n_ctx = self.session.n_ctx();
        let room = self.reply_room();
        let mut messages = self.messages.clone();
        let kept = self.kept_prefix(&messages)?;
        let mut dropped = 0;
        loop {
            let rendered =
                self.template
                    .render_with(&messages, true, &self.options.template_kwargs)?;
            let checkpoint = self.reusable_checkpoint(&rendered);
            let cp = self.checkpoints[checkpoint];
            let delta = &rendered[cp.text..];
            let bos = self.template.bos_token();
            // BOS per the model's flags at the start, unless the template
            // writes it.
            let template_writes_bos = !bos.is_empty() && delta.starts_with(bos);
            let add_special = cp.tokens == 0 && !template_writes_bos;
            let ids = self.tokenizer.encode(delta, add_special, true)?;
            let total = cp.tokens + ids.len();
            let oldest = oldest_turn_from(&messages, kept);
            // With nothing left to drop, go on if one token fits.
            if total + room <= n_ctx || (oldest.is_none() && total < n_ctx) {
                return Ok(Plan {
                    messages,
                    rendered,
                    checkpoint,
                    ids,
                    dropped,
                });
            }
            let Some(turn) = oldest else {
                return Err(ChatError::MessageTooLong {
                    tokens: total,
                    n_ctx,
                });
            };
            dropped += turn.len();
            messages.drain(turn);
        }
    }

    /// How many leading messages are never dropped: the system prompt and
    /// the turns that end within the first `keep_tokens` tokens.
    fn kept_prefix(&self, messages: &[Message]) -> Result<usize, ChatError> {
        let mut kept = system_len(messages);
        if self.options.keep_tokens == 0 {
            return Ok(kept);
        }
        // A turn ends where the next user message starts.
        let ends: Vec<usize> = (kept + 1..messages.len())
            .filter(|&i| messages[i].role == Role::User)
            .collect();
        for end in ends {
            let text = self.template.render_with(
                &messages[..end],
                false,
                &self.options.template_kwargs,
            )?;
            if self.tokenizer.encode(&text, true, true)?.len() > self.options.keep_tokens {
                break;
            }
            kept = end;
        }
        Ok(kept)
    }

    /// The last checkpoint whose text starts `rendered`.
    fn reusable_checkpoint(&self, rendered: &str) -> usize {
        self.checkpoints
            .iter()
            .rposition(|cp| {
                rendered
                    .as_bytes()
                    .starts_with(&self.fed_text.as_bytes()[..cp.text])
            })
            .unwrap_or(0)
    }
}

/// The messages of the oldest turn after the system prompt: a user message
/// and what follows it up to the next user message. `None` when only the
/// last user turn (the one being answered) is left.
#[cfg(test)]
fn oldest_turn(messages: &[Message]) -> Option<std::ops::Range<usize>> {
    oldest_turn_from(messages, system_len(messages))
}

/// 1 when the conversation opens with a system prompt.
fn system_len(messages: &[Message]) -> usize {
    usize::from(messages.first().is_some_and(|m| m.role == Role::System))
}

/// Like `oldest_turn`, from message `start` on (after the system prompt
/// and the kept turns).
fn oldest_turn_from(messages: &[Message], start: usize) -> Option<std::ops::Range<usize>> {
    let last_user = messages.iter().rposition(|m| m.role == Role::User)?;
    if last_user <= start {
        return None;
    }
    let end = messages[start + 1..last_user]
        .iter()
        .position(|m| m.role == Role::User)
        .map_or(last_user, |i| start + 1 + i);
    Some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::CountingLm;
    use crate::session::SessionOptions;

    fn smollm2_tokenizer() -> Tokenizer {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
        );
        let f = gguf::GgufFile::open(path).unwrap();
        Tokenizer::from_gguf(&f).unwrap()
    }

    /// A chat on the counting fake model (each token predicts the next
    /// id), with SmolLM2's tokenizer and the chatml built-in.
    fn fake_chat(tok: &Tokenizer, n_ctx: usize, max_tokens: usize) -> Chat<'_, CountingLm> {
        let session = Session::new(
            CountingLm::new(tok.n_vocab(), n_ctx),
            SessionOptions::default(),
        )
        .unwrap();
        let template = ChatTemplate::builtin("chatml").unwrap().with_tokens_of(tok);
        Chat::new(session, tok, template).with_options(ChatOptions {
            max_tokens,
            ..Default::default()
        })
    }

    #[test]
    fn later_turns_feed_only_the_new_text() {
        let tok = smollm2_tokenizer();
        let mut chat = fake_chat(&tok, 512, 4);
        chat.set_system("Be brief.");
        let first = chat.send("Hi", |_| {}).unwrap();
        assert_eq!(first.reused_tokens, 0);
        let rendered = chat.template().render(&chat.messages()[..2], true).unwrap();
        assert_eq!(
            first.fed_tokens,
            tok.encode(&rendered, false, true).unwrap().len()
        );
        let cached = chat.session().tokens().len();
        let second = chat.send("More", |_| {}).unwrap();
        assert_eq!(second.reused_tokens, cached);
        let all = chat.template().render(chat.messages(), false).unwrap();
        assert!(
            all.starts_with(chat.fed_text()),
            "{all:?} vs {:?}",
            chat.fed_text()
        );
        assert_eq!(chat.messages().len(), 5);
    }

    #[test]
    fn old_turns_are_dropped_and_the_system_prompt_kept() {
        let tok = smollm2_tokenizer();
        let mut chat = fake_chat(&tok, 96, 8);
        chat.set_system("Be brief.");
        let mut dropped = 0;
        for i in 0..12 {
            let reply = chat.send(&format!("Question number {i}?"), |_| {}).unwrap();
            dropped += reply.dropped_messages;
            assert!(chat.session().tokens().len() <= 96);
        }
        assert!(dropped > 0);
        assert_eq!(chat.messages()[0], Message::system("Be brief."));
        assert_eq!(chat.messages()[1].role, Role::User);
        assert_eq!(
            chat.messages().last().map(|m| m.role),
            Some(Role::Assistant)
        );
    }

    #[test]
    fn keep_tokens_protects_the_first_turn() {
        let tok = smollm2_tokenizer();
        let mut chat = fake_chat(&tok, 128, 8);
        chat.set_system("Be brief.");
        chat.options_mut().keep_tokens = 40;
        let mut dropped = 0;
        for i in 0..12 {
            let reply = chat.send(&format!("Question number {i}?"), |_| {}).unwrap();
            dropped += reply.dropped_messages;
            assert!(chat.session().tokens().len() <= 128);
        }
        assert!(dropped > 0);
        assert_eq!(chat.messages()[0], Message::system("Be brief."));
        assert_eq!(chat.messages()[1], Message::user("Question number 0?"));
        assert_eq!(chat.messages()[2].role, Role::Assistant);
        assert_ne!(chat.messages()[3], Message::user("Question number 1?"));
    }

    #[test]
    fn an_overlong_message_is_refused_and_the_chat_goes_on() {
        let tok = smollm2_tokenizer();
        let mut chat = fake_chat(&tok, 64, 4);
        chat.send("Hello", |_| {}).unwrap();
        let before = chat.messages().to_vec();
        let long = "word ".repeat(200);
        match chat.send(&long, |_| {}) {
            Err(ChatError::MessageTooLong { tokens, n_ctx: 64 }) => assert!(tokens > 64),
            other => panic!("{other:?}"),
        }
        assert_eq!(chat.messages(), &before[..]);
        let reply = chat.send("Next", |_| {}).unwrap();
        assert_eq!(reply.dropped_messages, 0);
        assert!(reply.reused_tokens > 0);
    }

    #[test]
    fn the_callback_can_stop_a_reply() {
        let tok = smollm2_tokenizer();
        let mut chat = fake_chat(&tok, 256, 0);
        let mut pieces = 0;
        let reply = chat
            .send_with("Hi", |_| {
                pieces += 1;
                if pieces == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!(reply.stop, None);
        assert_eq!(chat.messages()[1], Message::assistant(reply.text));
        chat.send("Go on", |_| {}).unwrap();
    }

    #[test]
    fn a_rewritten_history_reuses_the_longest_matching_prefix() {
        let tok = smollm2_tokenizer();
        let mut chat = fake_chat(&tok, 512, 3);
        let first = chat.send("Hi", |_| {}).unwrap();
        // An edited reply: the cache is kept up to the first prompt only.
        chat.messages[1].content = "edited".into();
        let second = chat.send("Again", |_| {}).unwrap();
        assert_eq!(second.reused_tokens, first.fed_tokens);
        let expected = chat.template().render(&chat.messages()[..3], true).unwrap();
        assert!(chat.fed_text().starts_with(&expected));
    }

    fn roles(ms: &[Message]) -> Vec<Role> {
        ms.iter().map(|m| m.role).collect()
    }

    #[test]
    fn oldest_turn_keeps_system_and_current_question() {
        use Role::*;
        let m = |r| Message::new(r, "");
        let conv = [
            m(System),
            m(User),
            m(Assistant),
            m(User),
            m(Assistant),
            m(User),
        ];
        assert_eq!(oldest_turn(&conv), Some(1..3));
        assert_eq!(oldest_turn(&conv[1..]), Some(0..2));
        let tool_turn = [m(User), m(Assistant), m(Tool), m(Assistant), m(User)];
        assert_eq!(oldest_turn(&tool_turn), Some(0..4));
        assert_eq!(oldest_turn(&[m(System), m(User)]), None);
        assert_eq!(oldest_turn(&[m(User)]), None);
        assert_eq!(oldest_turn(&[]), None);
        let mut c = conv.to_vec();
        c.drain(oldest_turn(&c).unwrap());
        assert_eq!(roles(&c), vec![System, User, Assistant, User]);
    }
}
