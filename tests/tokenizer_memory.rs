//! Memory the tokenizers take per byte of input, measured by a counting
//! global allocator. Gemma's vocabulary has user-defined tokens for runs of
//! up to 31 spaces (and of newlines, tabs): cutting the text at them once
//! recorded every match at every position (~744 bytes per byte of spaces,
//! 790 MB for 1 MB).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rkinfer::tokenizer::Tokenizer;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator with the same
// arguments; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (the caller upholds alloc's contract).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (ptr came from alloc with this layout).
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is (the caller upholds realloc's contract).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let now = if new_size >= layout.size() {
                CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size())
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed)
                    - (layout.size() - new_size)
            };
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One measurement at a time: the counters are global.
static SERIAL: Mutex<()> = Mutex::new(());

/// Peak bytes allocated above the starting level while encoding `text`,
/// and the ids.
fn peak_while_encoding(tok: &Tokenizer, text: &str) -> (usize, Vec<u32>) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let ids = tok.encode(text, true, false).expect("encodes");
    (PEAK.load(Ordering::Relaxed) - base, ids)
}

fn tokenizer(name: &str) -> Tokenizer {
    let file = gguf::GgufFile::open(common::model_path(name)).expect("model opens");
    Tokenizer::from_gguf(&file).expect("tokenizer builds")
}

/// Bytes per byte of whitespace allowed: a few words of bookkeeping (21
/// measured: a heap entry and an owner word per byte).
const MAX_PER_WHITESPACE_BYTE: usize = 32;
/// Bytes per byte of prose allowed (47 measured for SmolLM2's BPE, 5 for
/// Gemma): a guard against regressions, not a target.
const MAX_PER_TEXT_BYTE: usize = 64;

#[test]
fn whitespace_costs_a_few_bytes_per_byte() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tok = tokenizer("gemma3-q4_k_m");
    for (what, text) in [
        ("spaces", " ".repeat(1 << 20)),
        ("newlines", "\n".repeat(1 << 20)),
        ("tabs", "\t".repeat(1 << 20)),
        ("mixed", " \n\t  \n\n\t\t   x".repeat(1 << 16)),
    ] {
        let (peak, ids) = peak_while_encoding(&tok, &text);
        assert!(ids.len() > 1, "{what}");
        let per_byte = peak / text.len();
        eprintln!("{what}: {per_byte} bytes per byte");
        assert!(
            per_byte <= MAX_PER_WHITESPACE_BYTE,
            "{what}: {peak} bytes for {} bytes of input ({per_byte} per byte)",
            text.len()
        );
    }
}

#[test]
fn ordinary_text_stays_cheap_too() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let corpus = std::fs::read_to_string(common::corpus_path()).expect("corpus");
    for name in ["gemma3-q4_k_m", "smollm2-q4_1"] {
        let tok = tokenizer(name);
        let (peak, _) = peak_while_encoding(&tok, &corpus);
        let per_byte = peak / corpus.len();
        eprintln!("{name}, corpus: {per_byte} bytes per byte");
        assert!(
            per_byte <= MAX_PER_TEXT_BYTE,
            "{name}: {peak} bytes for the corpus ({per_byte} per byte)"
        );
    }
}
