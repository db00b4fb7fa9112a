//! `response_format: json_object`: decoding constrained so the reply is one
//! JSON object. A byte-level JSON recognizer says which tokens may come
//! next; the others get a logit of minus infinity.

use std::sync::Arc;

use crate::session::Detokenize;
use crate::tokenizer::Tokenizer;

/// Whitespace bytes allowed in a row (a model must not idle forever).
const MAX_WHITESPACE_RUN: u8 = 16;
/// Containers nested at most.
const MAX_DEPTH: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Number {
    /// After '-': a digit must follow.
    Minus,
    /// A leading zero.
    Zero,
    Int,
    /// After '.': a digit must follow.
    Dot,
    Frac,
    /// After 'e': a sign or a digit.
    Exp,
    /// After the exponent's sign: a digit.
    ExpSign,
    ExpDigits,
}

impl Number {
    fn can_end(self) -> bool {
        matches!(
            self,
            Number::Zero | Number::Int | Number::Frac | Number::ExpDigits
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A value must come (the top level: an object).
    Value,
    /// After '{': a key or '}'.
    KeyOrEnd,
    /// After ',' in an object: a key.
    Key,
    /// After a key: ':'.
    Colon,
    /// After '[': a value or ']'.
    ValueOrEnd,
    /// After a value: ',' or the container's end.
    AfterValue,
    /// Inside a string; `escape` counts what an escape still needs
    /// (1: the escaped byte, 2..=5: hex digits of \u).
    Str {
        key: bool,
        escape: u8,
    },
    Number(Number),
    /// Inside true/false/null: the bytes still to come.
    Literal(&'static [u8]),
    /// The top-level object is closed.
    Done,
}

/// An incremental JSON recognizer over bytes.
#[derive(Clone, Debug)]
pub struct JsonMachine {
    stack: Vec<Container>,
    mode: Mode,
    whitespace: u8,
}

impl Default for JsonMachine {
    fn default() -> Self {
        JsonMachine {
            stack: Vec::new(),
            mode: Mode::Value,
            whitespace: 0,
        }
    }
}

impl JsonMachine {
    /// Whether the top-level object is complete.
    pub fn is_complete(&self) -> bool {
        self.mode == Mode::Done
    }

    /// Feeds bytes; false (and an unspecified state) if they cannot
    /// continue a JSON object.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.byte(b))
    }

    fn end_value(&mut self) -> Mode {
        if self.stack.is_empty() {
            Mode::Done
        } else {
            Mode::AfterValue
        }
    }

    fn open(&mut self, c: Container) -> bool {
        if self.stack.len() >= MAX_DEPTH {
            return false;
        }
        self.stack.push(c);
        self.mode = match c {
            Container::Object => Mode::KeyOrEnd,
            Container::Array => Mode::ValueOrEnd,
        };
        true
    }

    fn close(&mut self, c: Container) -> bool {
        if self.stack.last() != Some(&c) {
            return false;
        }
        self.stack.pop();
        self.mode = self.end_value();
        true
    }

    /// A value starting with `b` (the top level takes only an object).
    fn start_value(&mut self, b: u8) -> bool {
        if self.stack.is_empty() && b != b'{' {
            return false;
        }
        self.mode = match b {
            b'{' => return self.open(Container::Object),
            b'[' => return self.open(Container::Array),
            b'"' => Mode::Str {
                key: false,
                escape: 0,
            },
            b'-' => Mode::Number(Number::Minus),
            b'0' => Mode::Number(Number::Zero),
            b'1'..=b'9' => Mode::Number(Number::Int),
            b't' => Mode::Literal(b"rue"),
            b'f' => Mode::Literal(b"alse"),
            b'n' => Mode::Literal(b"ull"),
            _ => return false,
        };
        true
    }

    fn byte(&mut self, b: u8) -> bool {
        let is_ws = matches!(b, b' ' | b'\n' | b'\r' | b'\t');
        let between_tokens = !matches!(
            self.mode,
            Mode::Str { .. } | Mode::Literal(_) | Mode::Number(_)
        );
        if is_ws && between_tokens {
            if self.mode == Mode::Done || self.whitespace >= MAX_WHITESPACE_RUN {
                return false;
            }
            self.whitespace += 1;
            return true;
        }
        self.whitespace = 0;
        match self.mode {
            Mode::Done => false,
            Mode::Value => self.start_value(b),
            Mode::ValueOrEnd => {
                b == b']' && self.close(Container::Array) || b != b']' && self.start_value(b)
            }
            Mode::KeyOrEnd if b == b'}' => self.close(Container::Object),
            Mode::KeyOrEnd | Mode::Key => {
                self.mode = Mode::Str {
                    key: true,
                    escape: 0,
                };
                b == b'"'
            }
            Mode::Colon => {
                self.mode = Mode::Value;
                b == b':'
            }
            Mode::AfterValue => match (b, self.stack.last()) {
                (b',', Some(Container::Object)) => {
                    self.mode = Mode::Key;
                    true
                }
                (b',', Some(Container::Array)) => {
                    self.mode = Mode::Value;
                    true
                }
                (b'}', _) => self.close(Container::Object),
                (b']', _) => self.close(Container::Array),
                _ => false,
            },
            Mode::Str { key, escape } => self.string_byte(b, key, escape),
            Mode::Number(n) => self.number_byte(b, n),
            Mode::Literal(rest) => match rest.split_first() {
                Some((&want, tail)) if want == b => {
                    self.mode = if tail.is_empty() {
                        self.end_value()
                    } else {
                        Mode::Literal(tail)
                    };
                    true
                }
                _ => false,
            },
        }
    }

    fn string_byte(&mut self, b: u8, key: bool, escape: u8) -> bool {
        let next = match escape {
            0 => match b {
                b'"' => {
                    self.mode = if key { Mode::Colon } else { self.end_value() };
                    return true;
                }
                b'\\' => 1,
                0..=0x1f => return false,
                _ => 0,
            },
            1 => match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 0,
                b'u' => 5,
                _ => return false,
            },
            n if b.is_ascii_hexdigit() => {
                if n == 2 {
                    0
                } else {
                    n - 1
                }
            }
            _ => return false,
        };
        self.mode = Mode::Str { key, escape: next };
        true
    }

    fn number_byte(&mut self, b: u8, n: Number) -> bool {
        use Number::*;
        let next = match (n, b) {
            (Minus, b'0') => Zero,
            (Minus, b'1'..=b'9') => Int,
            (Int, b'0'..=b'9') => Int,
            (Zero | Int, b'.') => Dot,
            (Dot | Frac, b'0'..=b'9') => Frac,
            (Zero | Int | Frac, b'e' | b'E') => Exp,
            (Exp, b'+' | b'-') => ExpSign,
            (Exp | ExpSign | ExpDigits, b'0'..=b'9') => ExpDigits,
            _ => {
                // The number ends here: the byte belongs to what follows.
                if !n.can_end() {
                    return false;
                }
                self.mode = self.end_value();
                return self.mode != Mode::Done && self.byte(b);
            }
        };
        self.mode = Mode::Number(next);
        true
    }
}

/// The token texts of a vocabulary, computed once per server.
#[derive(Debug)]
pub struct TokenBytes(Vec<Vec<u8>>);

impl TokenBytes {
    pub fn new(tokenizer: &Tokenizer) -> TokenBytes {
        TokenBytes(
            (0..tokenizer.n_vocab() as u32)
                .map(|id| tokenizer.piece(id))
                .collect(),
        )
    }
}

/// The JSON constraint of one request.
#[derive(Clone, Debug)]
pub struct JsonConstraint {
    machine: JsonMachine,
    probe: JsonMachine,
    vocab: Arc<TokenBytes>,
}

impl JsonConstraint {
    pub fn new(vocab: Arc<TokenBytes>) -> JsonConstraint {
        JsonConstraint {
            machine: JsonMachine::default(),
            probe: JsonMachine::default(),
            vocab,
        }
    }

    /// Sets the logit of every token that cannot continue the JSON (and of
    /// empty tokens, which would not advance it) to minus infinity.
    pub fn mask(&mut self, logits: &mut [f32], _tokenizer: &Tokenizer, eog: &[u32]) {
        for (id, l) in logits.iter_mut().enumerate() {
            if *l == f32::NEG_INFINITY {
                continue;
            }
            let bytes = self.vocab.0.get(id).map_or(&[][..], |b| &b[..]);
            self.probe.clone_from(&self.machine);
            if bytes.is_empty() || !self.probe.feed(bytes) {
                *l = f32::NEG_INFINITY;
            }
        }
        // The reply ends when the object closes, never before.
        for &id in eog {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
    }

    /// Advances over a sampled token's bytes.
    pub fn accept(&mut self, bytes: &[u8]) {
        self.machine.feed(bytes);
    }

    pub fn is_complete(&self) -> bool {
        self.machine.is_complete()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(text: &str) -> bool {
        let mut m = JsonMachine::default();
        m.feed(text.as_bytes()) && m.is_complete()
    }

    #[test]
    fn recognizes_json_objects() {
        for ok in [
            "{}",
            r#"{"a": 1}"#,
            r#"{"a": [1, -2.5e+3, 0, true, null, "x\"\u00e9"], "b": {"c": false}}"#,
            "{\n  \"name\": \"Ann\",\n  \"age\": 30\n}",
            r#"{"n":0.5}"#,
        ] {
            assert!(accepts(ok), "{ok}");
            assert!(serde_json::from_str::<serde_json::Value>(ok).is_ok());
        }
        for bad in [
            "[]",
            "1",
            r#"{"a" 1}"#,
            r#"{"a": 01}"#,
            r#"{"a": tru}"#,
            r#"{"a": 1,}"#,
            r#"{a: 1}"#,
            "{\"a\": \"\n\"}",
            r#"{"a": 1} x"#,
            r#"{"a": -}"#,
            r#"{"a": 1.}"#,
            r#"{"a": [1}"#,
        ] {
            assert!(!accepts(bad), "{bad}");
        }
        // Prefixes are accepted while they can still become an object.
        let mut m = JsonMachine::default();
        assert!(m.feed(br#"{"a": [1"#));
        assert!(!m.is_complete());
        assert!(m.feed(b"0]}"));
        assert!(m.is_complete());
        assert!(!m.feed(b"}"));
    }

    #[test]
    fn nesting_and_whitespace_are_bounded() {
        let deep = "{\"a\":".to_string() + &"[".repeat(MAX_DEPTH);
        assert!(!JsonMachine::default().feed(deep.as_bytes()));
        let spaces = "{".to_string() + &" ".repeat(MAX_WHITESPACE_RUN as usize + 1);
        assert!(!JsonMachine::default().feed(spaces.as_bytes()));
    }
}
