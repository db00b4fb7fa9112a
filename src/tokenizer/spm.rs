//! SentencePiece-style tokenization (llama.cpp's `llm_tokenizer_spm`):
//! start from single characters and repeatedly merge the adjacent pair
//! whose concatenation is the highest-scoring vocabulary token; characters
//! that end up in no token fall back to byte tokens `<0xXX>`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::unicode::utf8_len;
use super::{Tokenizer, TokenizerError};

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

/// Tokenizes already space-escaped text, appending to `out`.
pub(super) fn tokenize(
    tok: &Tokenizer,
    text: &str,
    out: &mut Vec<u32>,
) -> Result<(), TokenizerError> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Ok(());
    }
    let mut symbols: Vec<Symbol> = Vec::with_capacity(bytes.len());
    let mut off = 0;
    while off < bytes.len() {
        let len = utf8_len(bytes[off]).min(bytes.len() - off);
        let idx = symbols.len();
        symbols.push(Symbol {
            start: off,
            len,
            prev: if idx == 0 { NONE } else { idx - 1 },
            next: NONE,
        });
        off += len;
        if off < bytes.len() {
            symbols[idx].next = idx + 1;
        }
    }

    let mut queue = BinaryHeap::with_capacity(symbols.len());
    let try_add =
        |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: usize, right: usize| {
            if left == NONE || right == NONE {
                return;
            }
            let (l, r) = (symbols[left], symbols[right]);
            let size = l.len + r.len;
            if let Some(id) = tok.token_id(&bytes[l.start..l.start + size]) {
                queue.push(Bigram {
                    score: tok.scores[id as usize],
                    left,
                    right,
                    size,
                });
            }
        };
    for i in 1..symbols.len() {
        try_add(&mut queue, &symbols, i - 1, i);
    }
    while let Some(b) = queue.pop() {
        let (l, r) = (symbols[b.left], symbols[b.right]);
        // Stale: one side already merged away or grown.
        if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
            continue;
        }
        symbols[b.left].len += r.len;
        symbols[b.right].len = 0;
        symbols[b.left].next = r.next;
        if r.next != NONE {
            symbols[r.next].prev = b.left;
        }
        try_add(&mut queue, &symbols, symbols[b.left].prev, b.left);
        try_add(&mut queue, &symbols, b.left, symbols[b.left].next);
    }

    let mut i = 0;
    while i != NONE {
        let s = symbols[i];
        let piece = &bytes[s.start..s.start + s.len];
        match tok.token_id(piece) {
            Some(id) => out.push(id),
            None => {
                for &b in piece {
                    out.push(byte_token(tok, b)?);
                }
            }
        }
        i = s.next;
    }
    Ok(())
}

/// llama.cpp's `byte_to_token` for SentencePiece: `<0xXX>`, else the byte
/// itself as a one-character token.
fn byte_token(tok: &Tokenizer, b: u8) -> Result<u32, TokenizerError> {
    let hex = format!("<0x{b:02X}>");
    tok.token_id(hex.as_bytes())
        .or_else(|| tok.token_id(&[b]))
        .ok_or(TokenizerError::MissingByteToken(b))
}
