//! The layers of `src/` import one way: each top-level module names only
//! modules of lower layers (or of its own layer, without cycles). Read from
//! the source, so a new `use crate::...` that breaks the picture of
//! docs/architecture.md fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. `error` is the crate-wide error that aggregates the errors
/// of the layers below it (and holds the quantizer's, whose causes are all
/// its own); the session layer and the front ends use it.
const LAYERS: &[&[&str]] = &[
    &["graph", "tokenizer", "sampler", "npu"],
    &["backend"],
    &["model"],
    &["error"],
    &[
        "session",
        "perplexity",
        "bench",
        "quantize",
        "capture",
        "chat",
        "output_file",
        "fuzz_support",
    ],
    &["cli", "server"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The first path segment of each item of a `use` tree's brace group.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item = String::new();
    for c in group.chars().chain(std::iter::once(',')) {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                let head: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !head.is_empty() {
                    heads.push(head);
                }
                item.clear();
                continue;
            }
            _ => {}
        }
        if depth == 0 || c != '{' {
            item.push(c);
        }
    }
    heads
}

/// Top-level modules a source text names through `crate::`.
fn referenced(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let code: String = src
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(group.len(), |(j, _)| j);
            out.extend(group_heads(&group[..end]));
        } else {
            let head: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(head);
        }
        rest = after;
    }
    // The crate root re-exports the error type.
    let mapped: BTreeSet<String> = out
        .into_iter()
        .map(|m| match m.as_str() {
            "Error" | "Result" => "error".to_string(),
            _ => m,
        })
        .collect();
    mapped
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("src/ is readable").flatten() {
        let p = entry.path();
        let name = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut files = Vec::new();
        if p.is_dir() {
            rust_files(&p, &mut files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p.clone());
        } else {
            continue;
        }
        let deps: &mut BTreeSet<String> = graph.entry(name.clone()).or_default();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("source is readable");
            deps.extend(referenced(&text));
        }
        deps.remove(&name);
        // Re-exported workspace crates are not modules.
        for krate in ["gguf", "kernels", "quant"] {
            deps.remove(krate);
        }
    }
    graph
}

#[test]
fn every_module_has_a_layer() {
    for module in module_graph().keys() {
        assert!(
            layer_of(module).is_some(),
            "src/{module}: add it to a layer in tests/layers.rs and docs/architecture.md"
        );
    }
}

#[test]
fn modules_import_only_lower_layers() {
    let graph = module_graph();
    let mut wrong = Vec::new();
    for (module, deps) in &graph {
        let Some(own) = layer_of(module) else {
            continue;
        };
        for d in deps {
            match layer_of(d) {
                Some(l) if l <= own => {}
                Some(l) => wrong.push(format!("{module} (layer {own}) imports {d} (layer {l})")),
                None => wrong.push(format!("{module} imports {d}, which has no layer")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = module_graph();
    // Depth-first search for a cycle, reporting its path.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(cycle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_scanner_sees_grouped_and_plain_imports() {
    let src = "use crate::{backend::kv::KvCache, graph::{Op, WeightId}, Result};\n\
               fn f() -> crate::model::Model {}\n// crate::cli in a comment\n";
    let got: Vec<String> = referenced(src).into_iter().collect();
    assert_eq!(got, ["backend", "error", "graph", "model"]);
}
