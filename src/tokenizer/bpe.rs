//! BPE (llama.cpp's `llm_tokenizer_bpe`): the text is split into words by
//! the pre-tokenizer, each word's bytes are mapped to GPT-2's printable
//! characters (byte-level BPE; Gemma 4 keeps raw UTF-8 with spaces as
//! U+2581 instead), and within a word the adjacent pair with the lowest
//! merge rank is merged until no ranked pair is left.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::unicode::{byte_to_unicode, unicode_to_byte, utf8_len};
use super::Tokenizer;

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

#[derive(PartialEq, Eq)]
struct Bigram {
    rank: u32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: lowest rank first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then(other.left.cmp(&self.left))
    }
}

/// Tokenizes one raw text fragment, appending to `out`.
pub(super) fn tokenize(tok: &Tokenizer, text: &str, out: &mut Vec<u32>) {
    let Some(bpe) = tok.bpe.as_ref() else {
        return;
    };
    let escaped;
    let text = if bpe.escape_whitespace {
        escaped = text.replace(' ', "\u{2581}");
        escaped.as_str()
    } else {
        text
    };
    let table = byte_to_unicode();
    let mut word = String::new();
    let mut symbols: Vec<Symbol> = Vec::new();
    let mut queue: BinaryHeap<Bigram> = BinaryHeap::new();
    for range in bpe.pre.split(text) {
        let bytes = if bpe.byte_encode {
            word.clear();
            for &b in &text.as_bytes()[range] {
                word.push(table[b as usize]);
            }
            word.as_bytes()
        } else {
            &text.as_bytes()[range]
        };
        let whole =
            bpe.ignore_merges || (bpe.whole_newline_words && bytes.iter().all(|&b| b == b'\n'));
        if whole {
            if let Some(id) = tok.token_id(bytes) {
                out.push(id);
                continue;
            }
        }
        symbols.clear();
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
        let rank_of = |symbols: &[Symbol], left: usize, right: usize| -> Option<Bigram> {
            if left == NONE || right == NONE {
                return None;
            }
            let (l, r) = (symbols[left], symbols[right]);
            let lid = *bpe.sides.get(&bytes[l.start..l.start + l.len])?;
            let rid = *bpe.sides.get(&bytes[r.start..r.start + r.len])?;
            let rank = *bpe.ranks.get(&(lid, rid))?;
            Some(Bigram {
                rank,
                left,
                right,
                size: l.len + r.len,
            })
        };
        queue.clear();
        for i in 1..symbols.len() {
            queue.extend(rank_of(&symbols, i - 1, i));
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // Stale: a side merged away, or the pair's text changed.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if r.next != NONE {
                symbols[r.next].prev = b.left;
            }
            queue.extend(rank_of(&symbols, symbols[b.left].prev, b.left));
            queue.extend(rank_of(&symbols, b.left, symbols[b.left].next));
        }
        for s in symbols.iter().filter(|s| s.len > 0) {
            let piece = &bytes[s.start..s.start + s.len];
            match tok.token_id(piece) {
                Some(id) => out.push(id),
                // llama.cpp looks each byte of the piece up as a token
                // (itself, or `<0xXX>` without the byte table) and drops
                // those it does not find.
                None if bpe.byte_encode => {
                    out.extend(piece.iter().filter_map(|&b| tok.token_id(&[b])))
                }
                None => out.extend(
                    piece
                        .iter()
                        .filter_map(|&b| tok.token_id(format!("<0x{b:02X}>").as_bytes())),
                ),
            }
        }
    }
}

/// A BPE token's bytes: each character maps back through GPT-2's table
/// (llama.cpp's `llama_decode_text`, including its marker for characters
/// outside the table).
pub(super) fn decode_text(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match unicode_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}
