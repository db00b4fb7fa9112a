//! Tokenizer throughput: encoding the perplexity corpus (152 KB) with each
//! real model's vocabulary, plus loading the vocabulary from the GGUF.
//! `cargo bench --bench tokenize`; models from $RKINFER_MODELS or ./models
//! (run scripts/fetch-models.sh).

use std::path::PathBuf;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rkinfer::tokenizer::Tokenizer;

fn models_dir() -> PathBuf {
    std::env::var_os("RKINFER_MODELS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"),
        PathBuf::from,
    )
}

fn bench_tokenize(c: &mut Criterion) {
    let dir = models_dir();
    let corpus = match std::fs::read_to_string(dir.join("corpus.txt")) {
        Ok(text) => text,
        Err(e) => {
            eprintln!(
                "{}: {e}: run scripts/fetch-models.sh",
                dir.join("corpus.txt").display()
            );
            return;
        }
    };
    let mut group = c.benchmark_group("tokenize");
    group.sample_size(10);
    for (name, file) in [
        ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ("gemma3", "gemma-3-270m-q4_k_m.gguf"),
    ] {
        let gguf = match gguf::GgufFile::open(dir.join(file)) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("{file}: {e}: run scripts/fetch-models.sh");
                continue;
            }
        };
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{name}/load_vocab"), |b| {
            b.iter(|| Tokenizer::from_gguf(black_box(&gguf)).map(|t| t.n_vocab()))
        });
        let tok = match Tokenizer::from_gguf(&gguf) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{file}: {e}");
                continue;
            }
        };
        group.throughput(Throughput::Bytes(corpus.len() as u64));
        group.bench_function(format!("{name}/encode_corpus"), |b| {
            b.iter(|| {
                tok.encode(black_box(&corpus), true, false)
                    .map(|ids| ids.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_tokenize);
criterion_main!(benches);
