//! `response_format`: decoding constrained so the reply is JSON, either any
//! object (`json_object`) or a value of a JSON schema (`json_schema`, compiled
//! by [`super::schema`]). A [`Grammar`] is a small graph of value nodes; a
//! byte-level recognizer walks it and says which tokens may come next; the
//! others get a logit of minus infinity.

use std::sync::Arc;

use crate::session::Detokenize;
use crate::tokenizer::Tokenizer;

/// Whitespace bytes allowed in a row (a model must not idle forever).
const MAX_WHITESPACE_RUN: u8 = 16;
/// Containers nested at most.
const MAX_DEPTH: usize = 32;
/// Properties of one object, or values of one enum, at most (a bit set each).
pub const MAX_CHOICES: usize = 64;

/// An index into [`Grammar::nodes`].
pub type NodeId = usize;

/// One property of an object node.
#[derive(Clone, Debug, PartialEq)]
pub struct Prop {
    /// The key as JSON text, quotes included.
    pub key: Vec<u8>,
    pub value: NodeId,
    pub required: bool,
}

/// What a value may be.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// An object with these properties, in this order; optional ones may be
    /// left out, no others come.
    Object(Vec<Prop>),
    /// An object with any keys whose values are all of one node.
    Map(NodeId),
    Array {
        items: NodeId,
        min: usize,
        max: usize,
    },
    String,
    Number {
        integer: bool,
    },
    /// One of these JSON texts exactly (enum, const, booleans, null).
    Literals(Vec<Vec<u8>>),
    /// One of these nodes; their first bytes tell them apart.
    Union(Vec<NodeId>),
}

impl Node {
    fn is_object(&self) -> bool {
        matches!(self, Node::Object(_) | Node::Map(_))
    }
}

/// The values a constrained reply may take; the root is an object.
#[derive(Clone, Debug, PartialEq)]
pub struct Grammar {
    nodes: Vec<Node>,
    /// Per node, the ASCII bytes its values may start with (a bit set).
    first: Vec<u128>,
    root: NodeId,
}

/// Why nodes do not make a [`Grammar`].
#[derive(Clone, Debug, PartialEq)]
pub enum GrammarError {
    RootNotObject,
    /// Two alternatives of a union can start with the same byte.
    Ambiguous {
        node: NodeId,
        byte: u8,
    },
    /// Unions nested in unions too deeply (or in a cycle).
    UnionTooDeep,
    BadNode(NodeId),
}

impl Grammar {
    /// Nodes whose root is `root`; checks that every union can be decided
    /// by its first byte.
    pub fn new(nodes: Vec<Node>, root: NodeId) -> Result<Grammar, GrammarError> {
        let all = |n: &Node| match n {
            Node::Object(p) => p.iter().all(|p| p.value < nodes.len()),
            Node::Map(v) | Node::Array { items: v, .. } => *v < nodes.len(),
            Node::Union(alts) => alts.iter().all(|&a| a < nodes.len()),
            _ => true,
        };
        if let Some(bad) = nodes.iter().position(|n| !all(n)) {
            return Err(GrammarError::BadNode(bad));
        }
        if !nodes.get(root).is_some_and(Node::is_object) {
            return Err(GrammarError::RootNotObject);
        }
        let mut first = Vec::with_capacity(nodes.len());
        for id in 0..nodes.len() {
            first.push(first_bytes(&nodes, id, 0)?);
        }
        Ok(Grammar { nodes, first, root })
    }

    /// Any JSON object (`json_object`).
    pub fn any_object() -> Grammar {
        let mut nodes = Vec::new();
        let object = any_value(&mut nodes).1;
        // Built from known parts; cannot fail, but stay panic-free anyway.
        Grammar::new(nodes.clone(), object).unwrap_or(Grammar {
            first: vec![0; nodes.len()],
            nodes,
            root: object,
        })
    }

    fn literals(&self, id: NodeId) -> &[Vec<u8>] {
        match self.nodes.get(id) {
            Some(Node::Literals(l)) => l,
            _ => &[],
        }
    }
}

/// Appends the nodes of "any JSON value"; returns (that value, any object).
pub fn any_value(nodes: &mut Vec<Node>) -> (NodeId, NodeId) {
    let value = nodes.len();
    let object = value + 1;
    nodes.push(Node::Union(vec![
        object,
        value + 2,
        value + 3,
        value + 4,
        value + 5,
    ]));
    nodes.push(Node::Map(value));
    nodes.push(Node::Array {
        items: value,
        min: 0,
        max: usize::MAX,
    });
    nodes.push(Node::String);
    nodes.push(Node::Number { integer: false });
    nodes.push(Node::Literals(vec![
        b"true".to_vec(),
        b"false".to_vec(),
        b"null".to_vec(),
    ]));
    (value, object)
}

fn bit(b: u8) -> u128 {
    if b < 128 {
        1 << b
    } else {
        0
    }
}

fn first_bytes(nodes: &[Node], id: NodeId, depth: usize) -> Result<u128, GrammarError> {
    if depth > MAX_DEPTH {
        return Err(GrammarError::UnionTooDeep);
    }
    Ok(match nodes.get(id) {
        None => return Err(GrammarError::BadNode(id)),
        Some(Node::Object(_) | Node::Map(_)) => bit(b'{'),
        Some(Node::Array { .. }) => bit(b'['),
        Some(Node::String) => bit(b'"'),
        Some(Node::Number { .. }) => (b'0'..=b'9').fold(bit(b'-'), |s, b| s | bit(b)),
        Some(Node::Literals(l)) => l
            .iter()
            .filter_map(|t| t.first())
            .fold(0, |s, &b| s | bit(b)),
        Some(Node::Union(alts)) => {
            let mut seen = 0u128;
            for &alt in alts {
                let f = first_bytes(nodes, alt, depth + 1)?;
                if seen & f != 0 {
                    let byte = (seen & f).trailing_zeros() as u8;
                    return Err(GrammarError::Ambiguous { node: id, byte });
                }
                seen |= f;
            }
            seen
        }
    })
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
    fn start(b: u8) -> Option<Number> {
        match b {
            b'-' => Some(Number::Minus),
            b'0' => Some(Number::Zero),
            b'1'..=b'9' => Some(Number::Int),
            _ => None,
        }
    }

    /// The state after `b`, if `b` continues the number.
    fn next(self, b: u8, integer: bool) -> Option<Number> {
        use Number::*;
        Some(match (self, b) {
            (Minus, b'0') => Zero,
            (Minus, b'1'..=b'9') => Int,
            (Int, b'0'..=b'9') => Int,
            (Zero | Int, b'.') if !integer => Dot,
            (Dot | Frac, b'0'..=b'9') => Frac,
            (Zero | Int | Frac, b'e' | b'E') if !integer => Exp,
            (Exp, b'+' | b'-') => ExpSign,
            (Exp | ExpSign | ExpDigits, b'0'..=b'9') => ExpDigits,
            _ => return None,
        })
    }

    fn can_end(self) -> bool {
        matches!(
            self,
            Number::Zero | Number::Int | Number::Frac | Number::ExpDigits
        )
    }
}

/// Inside a string, `escape` counts what an escape still needs (1: the
/// escaped byte, 2..=5: hex digits of \u). Some(None): the string ended.
fn string_byte(escape: u8, b: u8) -> Option<Option<u8>> {
    let next = match escape {
        0 => match b {
            b'"' => return Some(None),
            b'\\' => 1,
            0..=0x1f => return None,
            _ => 0,
        },
        1 => match b {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 0,
            b'u' => 5,
            _ => return None,
        },
        n if b.is_ascii_hexdigit() => {
            if n == 2 {
                0
            } else {
                n - 1
            }
        }
        _ => return None,
    };
    Some(Some(next))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InObject {
    /// After '{': a key or '}'.
    KeyOrEnd,
    /// After ',': a key.
    Key,
    /// Inside the key of an [`Node::Object`]: `pos` bytes matched, `live`
    /// the properties still matching.
    PropKey { pos: usize, live: u64 },
    /// Inside the key of a [`Node::Map`].
    MapKey { escape: u8 },
    /// After a key: ':'; the property (None in a map).
    Colon(Option<usize>),
    /// After a value: ',' or '}'.
    AfterValue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    /// A value of this node starts (after optional whitespace).
    Value(NodeId),
    /// `next`: the first property that may still come.
    Object {
        node: NodeId,
        next: usize,
        at: InObject,
    },
    /// `count`: the items begun; `open`: right after '['.
    Array {
        node: NodeId,
        count: usize,
        open: bool,
    },
    Str {
        escape: u8,
    },
    Number {
        at: Number,
        integer: bool,
    },
    /// `pos` bytes of the literals in `live` matched.
    Literal {
        node: NodeId,
        pos: usize,
        live: u64,
    },
}

impl Frame {
    fn between_tokens(self) -> bool {
        match self {
            Frame::Value(_) | Frame::Array { .. } => true,
            Frame::Object { at, .. } => {
                !matches!(at, InObject::PropKey { .. } | InObject::MapKey { .. })
            }
            _ => false,
        }
    }
}

/// What one byte did to the top frame.
enum Step {
    Taken,
    /// The frames changed; the same byte goes to the new top.
    Again,
    Rejected,
}

/// The bits of `live` whose index passes `keep`.
fn filter_bits(live: u64, mut keep: impl FnMut(usize) -> bool) -> u64 {
    (0..MAX_CHOICES)
        .filter(|&i| live & (1 << i) != 0 && keep(i))
        .fold(0, |s, i| s | 1 << i)
}

/// The properties that may come next: those from `next` up to the first
/// required one.
fn allowed_props(props: &[Prop], next: usize) -> u64 {
    let mut live = 0;
    for (i, p) in props.iter().enumerate().skip(next).take(MAX_CHOICES) {
        live |= 1 << i;
        if p.required {
            break;
        }
    }
    live
}

/// An incremental recognizer of a [`Grammar`]'s values over bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonMachine {
    stack: Vec<Frame>,
    whitespace: u8,
}

impl JsonMachine {
    pub fn new(grammar: &Grammar) -> JsonMachine {
        JsonMachine {
            stack: vec![Frame::Value(grammar.root)],
            whitespace: 0,
        }
    }

    /// Whether the root value is complete.
    pub fn is_complete(&self) -> bool {
        self.stack.is_empty()
    }

    /// Feeds bytes; false (and an unspecified state) if they cannot
    /// continue a value of `grammar` (which must be the one of `new`).
    pub fn feed(&mut self, grammar: &Grammar, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.byte(grammar, b))
    }

    fn byte(&mut self, g: &Grammar, b: u8) -> bool {
        let is_ws = matches!(b, b' ' | b'\n' | b'\r' | b'\t');
        loop {
            let Some(&top) = self.stack.last() else {
                return false;
            };
            if is_ws && top.between_tokens() {
                if self.whitespace >= MAX_WHITESPACE_RUN {
                    return false;
                }
                self.whitespace += 1;
                return true;
            }
            self.whitespace = 0;
            match self.step(g, top, b) {
                Step::Taken => return true,
                Step::Again => continue,
                Step::Rejected => return false,
            }
        }
    }

    fn set_top(&mut self, f: Frame) -> Step {
        if let Some(top) = self.stack.last_mut() {
            *top = f;
        }
        Step::Taken
    }

    fn step(&mut self, g: &Grammar, top: Frame, b: u8) -> Step {
        match top {
            Frame::Value(id) => self.start(g, id, b),
            Frame::Object { node, next, at } => self.object_byte(g, node, next, at, b),
            Frame::Array { node, count, open } => {
                let Some(&Node::Array { items, min, max }) = g.nodes.get(node) else {
                    return Step::Rejected;
                };
                match b {
                    b']' if count >= min => {
                        self.stack.pop();
                        Step::Taken
                    }
                    b',' if !open && count < max => {
                        self.set_top(Frame::Array {
                            node,
                            count: count + 1,
                            open: false,
                        });
                        self.stack.push(Frame::Value(items));
                        Step::Taken
                    }
                    b']' | b',' => Step::Rejected,
                    _ if open && max > 0 => {
                        self.set_top(Frame::Array {
                            node,
                            count: 1,
                            open: false,
                        });
                        self.stack.push(Frame::Value(items));
                        Step::Again
                    }
                    _ => Step::Rejected,
                }
            }
            Frame::Str { escape } => match string_byte(escape, b) {
                Some(Some(escape)) => self.set_top(Frame::Str { escape }),
                Some(None) => {
                    self.stack.pop();
                    Step::Taken
                }
                None => Step::Rejected,
            },
            Frame::Number { at, integer } => match at.next(b, integer) {
                Some(at) => self.set_top(Frame::Number { at, integer }),
                // The number ends here: the byte belongs to what follows.
                None if at.can_end() => {
                    self.stack.pop();
                    Step::Again
                }
                None => Step::Rejected,
            },
            Frame::Literal { node, pos, live } => {
                let lits = g.literals(node);
                let next = filter_bits(live, |i| lits[i].get(pos) == Some(&b));
                if next != 0 {
                    self.set_top(Frame::Literal {
                        node,
                        pos: pos + 1,
                        live: next,
                    })
                } else if filter_bits(live, |i| lits[i].len() == pos) != 0 {
                    self.stack.pop();
                    Step::Again
                } else {
                    Step::Rejected
                }
            }
        }
    }

    /// The first byte of a value of node `id`.
    fn start(&mut self, g: &Grammar, id: NodeId, b: u8) -> Step {
        let Some(node) = g.nodes.get(id) else {
            return Step::Rejected;
        };
        let container = matches!(node, Node::Object(_) | Node::Map(_) | Node::Array { .. });
        if container && self.stack.len() > MAX_DEPTH {
            return Step::Rejected;
        }
        let frame = match (node, b) {
            (Node::Object(_) | Node::Map(_), b'{') => Frame::Object {
                node: id,
                next: 0,
                at: InObject::KeyOrEnd,
            },
            (Node::Array { .. }, b'[') => Frame::Array {
                node: id,
                count: 0,
                open: true,
            },
            (Node::String, b'"') => Frame::Str { escape: 0 },
            (&Node::Number { integer }, _) => match Number::start(b) {
                Some(at) => Frame::Number { at, integer },
                None => return Step::Rejected,
            },
            (Node::Literals(lits), _) => {
                let live = filter_bits(u64::MAX, |i| {
                    lits.get(i).and_then(|l| l.first()) == Some(&b)
                });
                if live == 0 {
                    return Step::Rejected;
                }
                Frame::Literal {
                    node: id,
                    pos: 1,
                    live,
                }
            }
            (Node::Union(alts), _) => {
                let Some(&alt) = alts
                    .iter()
                    .find(|&&a| g.first.get(a).is_some_and(|&f| f & bit(b) != 0))
                else {
                    return Step::Rejected;
                };
                self.set_top(Frame::Value(alt));
                return Step::Again;
            }
            _ => return Step::Rejected,
        };
        self.set_top(frame)
    }

    fn object_byte(&mut self, g: &Grammar, node: NodeId, next: usize, at: InObject, b: u8) -> Step {
        let (props, map_value) = match g.nodes.get(node) {
            Some(Node::Object(props)) => (&props[..], None),
            Some(&Node::Map(value)) => (&[][..], Some(value)),
            _ => return Step::Rejected,
        };
        let set = |m: &mut JsonMachine, at| m.set_top(Frame::Object { node, next, at });
        match (at, b) {
            (InObject::KeyOrEnd | InObject::AfterValue, b'}') => {
                if props[next.min(props.len())..].iter().any(|p| p.required) {
                    return Step::Rejected;
                }
                self.stack.pop();
                Step::Taken
            }
            (InObject::AfterValue, b',') => {
                if map_value.is_none() && allowed_props(props, next) == 0 {
                    return Step::Rejected;
                }
                set(self, InObject::Key)
            }
            (InObject::KeyOrEnd | InObject::Key, b'"') => {
                if map_value.is_some() {
                    return set(self, InObject::MapKey { escape: 0 });
                }
                match allowed_props(props, next) {
                    0 => Step::Rejected,
                    live => set(self, InObject::PropKey { pos: 1, live }),
                }
            }
            (InObject::PropKey { pos, live }, _) => {
                let live = filter_bits(live, |i| props[i].key.get(pos) == Some(&b));
                // Quoted keys are prefix-free: one that ends here is the one.
                let done = (0..props.len().min(MAX_CHOICES))
                    .find(|&i| live & (1 << i) != 0 && props[i].key.len() == pos + 1);
                match (live, done) {
                    (0, _) => Step::Rejected,
                    (_, Some(i)) => set(self, InObject::Colon(Some(i))),
                    _ => set(self, InObject::PropKey { pos: pos + 1, live }),
                }
            }
            (InObject::MapKey { escape }, _) => match string_byte(escape, b) {
                Some(Some(escape)) => set(self, InObject::MapKey { escape }),
                Some(None) => set(self, InObject::Colon(None)),
                None => Step::Rejected,
            },
            (InObject::Colon(prop), b':') => {
                let (value, next) = match (prop, map_value) {
                    (Some(i), _) => match props.get(i) {
                        Some(p) => (p.value, i + 1),
                        None => return Step::Rejected,
                    },
                    (None, Some(value)) => (value, next),
                    (None, None) => return Step::Rejected,
                };
                self.set_top(Frame::Object {
                    node,
                    next,
                    at: InObject::AfterValue,
                });
                self.stack.push(Frame::Value(value));
                Step::Taken
            }
            _ => Step::Rejected,
        }
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
    grammar: Arc<Grammar>,
    machine: JsonMachine,
    probe: JsonMachine,
    vocab: Arc<TokenBytes>,
}

impl JsonConstraint {
    pub fn new(vocab: Arc<TokenBytes>, grammar: Arc<Grammar>) -> JsonConstraint {
        let machine = JsonMachine::new(&grammar);
        JsonConstraint {
            probe: machine.clone(),
            machine,
            grammar,
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
            if bytes.is_empty() || !self.probe.feed(&self.grammar, bytes) {
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
        self.machine.feed(&self.grammar, bytes);
    }

    pub fn is_complete(&self) -> bool {
        self.machine.is_complete()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(text: &str) -> bool {
        let g = Grammar::any_object();
        let mut m = JsonMachine::new(&g);
        m.feed(&g, text.as_bytes()) && m.is_complete()
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
        let g = Grammar::any_object();
        let mut m = JsonMachine::new(&g);
        assert!(m.feed(&g, br#"{"a": [1"#));
        assert!(!m.is_complete());
        assert!(m.feed(&g, b"0]}"));
        assert!(m.is_complete());
        assert!(!m.feed(&g, b"}"));
    }

    #[test]
    fn nesting_and_whitespace_are_bounded() {
        let g = Grammar::any_object();
        let deep = "{\"a\":".to_string() + &"[".repeat(MAX_DEPTH);
        assert!(!JsonMachine::new(&g).feed(&g, deep.as_bytes()));
        let spaces = "{".to_string() + &" ".repeat(MAX_WHITESPACE_RUN as usize + 1);
        assert!(!JsonMachine::new(&g).feed(&g, spaces.as_bytes()));
    }

    #[test]
    fn ambiguous_unions_are_refused() {
        let nodes = vec![
            Node::Union(vec![1, 2]),
            Node::Number { integer: true },
            Node::Number { integer: false },
            Node::Map(0),
        ];
        assert_eq!(
            Grammar::new(nodes.clone(), 3),
            Err(GrammarError::Ambiguous {
                node: 0,
                byte: b'-'
            })
        );
        assert_eq!(Grammar::new(nodes, 1), Err(GrammarError::RootNotObject));
    }
}
