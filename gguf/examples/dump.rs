//! Prints a GGUF file's metadata (arrays abbreviated) and tensors.
fn main() {
    let path = std::env::args().nth(1).expect("usage: dump FILE.gguf");
    let t0 = std::time::Instant::now();
    let f = match gguf::GgufFile::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("parsed in {:?}", t0.elapsed());
    println!(
        "version {} alignment {} data_offset {}",
        f.version(),
        f.alignment(),
        f.data_offset()
    );
    for (k, v) in f.metadata() {
        match v {
            gguf::Value::Array(a) if a.len() > 8 => println!("{k} = {}", a.type_description()),
            gguf::Value::String(s) if s.len() > 80 => println!("{k} = string of {} bytes", s.len()),
            _ => println!("{k} = {v}"),
        }
    }
    for t in f.tensors().iter().take(12) {
        println!(
            "{} {:?} {} off {} size {}",
            t.name, t.dims, t.ggml_type, t.offset, t.size
        );
    }
    println!("{} tensors, {} params", f.tensors().len(), f.n_params());
}
