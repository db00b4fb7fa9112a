//! `rkinfer serve` end to end: the binary on 127.0.0.1 with an ephemeral
//! port and SmolLM2-135M, spoken to over plain HTTP/1.1 from the test.

#![cfg(all(feature = "server", feature = "cli"))]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

/// A running server, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Server::start_with(MODEL, extra)
    }

    fn start_with(model: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rkinfer"))
            .args(["serve", "-m", model, "--port", "0", "-c", "512", "-t", "1"])
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start rkinfer serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            if let Some(addr) = line.split("http://").nth(1) {
                break addr.rsplit(':').next().unwrap().trim().parse().unwrap();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server { child, port }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        s
    }

    /// Sends a request; the raw response bytes.
    fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut s = self.connect();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        // The server may answer (413) before reading a large body.
        let _ = s.write_all(body);
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        Response::parse(&buf)
    }

    fn post(&self, path: &str, body: &Value) -> Response {
        self.raw(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    fn get(&self, path: &str) -> Response {
        self.raw("GET", path, &[], b"")
    }

    /// Starts a streaming request and returns the socket after the
    /// response head and the first event.
    fn open_stream(&self, body: &Value) -> BufReader<TcpStream> {
        let s = self.connect();
        let body = body.to_string();
        let mut w = s.try_clone().unwrap();
        write!(
            w,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("200"), "{line}");
        // Read until the first data line.
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line.starts_with("data: ") {
                break;
            }
        }
        r
    }

    fn metric(&self, name: &str) -> f64 {
        let m = self.get("/metrics").text();
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing in {m}"))
            .parse()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Response {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Response {
    fn parse(buf: &[u8]) -> Response {
        let split = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("no response head");
        let head = String::from_utf8_lossy(&buf[..split]).to_lowercase();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut body = buf[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        Response {
            status,
            headers: head,
            body,
        }
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    /// The `data:` payloads of an event stream.
    fn events(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: ").map(str::to_string))
            .collect()
    }
    fn error_type(&self) -> String {
        self.json()["error"]["type"].as_str().unwrap().to_string()
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
    out
}

fn chat(content: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": "smollm2",
        "messages": [{"role": "system", "content": "You are brief."}, {"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    })
}

/// The text of a chat stream, checking its shape.
fn stream_text(r: &Response) -> (String, Value) {
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("text/event-stream"), "{}", r.headers);
    let events = r.events();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let last = chunks.last().unwrap().clone();
    (text, last)
}

#[test]
fn endpoints_answer_as_openai_does() {
    let s = Server::start(&["--parallel", "2"]);
    assert_eq!(s.get("/health").json()["status"], "ok");
    let models = s.get("/v1/models").json();
    assert_eq!(models["data"][0]["id"], "SmolLM2-135M-Instruct.Q4_1");
    assert_eq!(models["data"][0]["meta"]["n_ctx_slot"], 512);

    let whole = s.post("/v1/chat/completions", &chat("Name a fruit.", 8, false));
    assert_eq!(whole.status, 200, "{}", whole.text());
    let whole = whole.json();
    assert_eq!(whole["object"], "chat.completion");
    let text = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!text.is_empty());
    let usage = &whole["usage"];
    assert_eq!(
        usage["completion_tokens"].as_u64().unwrap() + usage["prompt_tokens"].as_u64().unwrap(),
        usage["total_tokens"].as_u64().unwrap()
    );

    // The same request streamed: the same greedy text, and the prompt
    // found in a slot's cache.
    let (streamed, last) =
        stream_text(&s.post("/v1/chat/completions", &chat("Name a fruit.", 8, true)));
    assert_eq!(streamed, text);
    assert_eq!(
        last["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    assert!(
        last["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    let c = s.post(
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(c.status, 200, "{}", c.text());
    let c = c.json();
    assert_eq!(c["object"], "text_completion");
    assert_eq!(c["usage"]["completion_tokens"], 4);
    assert_eq!(c["choices"][0]["finish_reason"], "length");

    let ids = s
        .post("/tokenize", &json!({"content": "Hello world"}))
        .json()["tokens"]
        .clone();
    assert_eq!(ids.as_array().unwrap().len(), 2);
    let back = s.post("/detokenize", &json!({"tokens": ids})).json();
    assert_eq!(back["content"], "Hello world");

    let metrics = s.get("/metrics");
    assert!(metrics.headers.contains("text/plain"));
    assert!(s.metric("rkinfer_requests_total") >= 3.0);
    assert!(s.metric("rkinfer_tokens_predicted_total") >= 16.0);
    assert_eq!(s.metric("rkinfer_slots_total"), 2.0);

    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/v1/chat/completions"));

    // JSON mode: the reply parses as an object.
    let mut req = chat("Describe a cat as JSON with a name and an age.", 48, false);
    req["response_format"] = json!({"type": "json_object"});
    let r = s.post("/v1/chat/completions", &req).json();
    let content = r["choices"][0]["message"]["content"].as_str().unwrap();
    if r["choices"][0]["finish_reason"] == "stop" {
        let v: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
        assert!(v.is_object());
    } else {
        assert!(content.trim_start().starts_with('{'), "{content}");
    }

    // A JSON schema: the reply parses and follows it.
    let mut req = chat("Describe a cat as JSON.", 64, false);
    req["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "cat", "schema": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "legs": {"type": "integer"},
            "color": {"enum": ["black", "white", "ginger"]},
            "indoor": {"type": "boolean"}
        },
        "required": ["name", "legs", "color", "indoor"],
        "additionalProperties": false
    }}});
    let r = s.post("/v1/chat/completions", &req).json();
    assert_eq!(r["choices"][0]["finish_reason"], "stop", "{r}");
    let content = r["choices"][0]["message"]["content"].as_str().unwrap();
    let v: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    let cat = v.as_object().unwrap();
    assert_eq!(cat.len(), 4, "{content}");
    assert!(cat["name"].is_string() && cat["legs"].is_i64() && cat["indoor"].is_boolean());
    assert!(["black", "white", "ginger"].contains(&cat["color"].as_str().unwrap()));
    // A keyword the server cannot hold a reply to is a 400 naming it.
    req["response_format"]["json_schema"]["schema"]["properties"]["name"]["pattern"] =
        json!("^[A-Z]");
    let r = s.post("/v1/chat/completions", &req);
    assert_eq!(r.status, 400);
    let err = r.json()["error"].clone();
    assert_eq!(err["param"], "response_format");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("#/properties/name: the keyword 'pattern' is not supported"),
        "{err}"
    );
}

/// `rkinfer run --temp 0 --json` on a conversation rendered through the
/// library's chat template: the CLI's greedy reply (`text`, `prompt_ids`).
fn run_greedy(messages: &[(&str, &str)], n: usize) -> Value {
    let gguf = rkinfer::gguf::GgufFile::open(MODEL).unwrap();
    let tok = rkinfer::tokenizer::Tokenizer::from_gguf(&gguf).unwrap();
    let template = rkinfer::chat::ChatTemplate::for_tokenizer(&tok).unwrap();
    let msgs: Vec<_> = messages
        .iter()
        .map(|(r, c)| {
            if *r == "system" {
                rkinfer::chat::Message::system(*c)
            } else {
                rkinfer::chat::Message::user(*c)
            }
        })
        .collect();
    let prompt = template.render(&msgs, true).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rkinfer"))
        .args(["run", "-m", MODEL, "-c", "512", "-t", "1", "--temp", "0"])
        .args(["-n", &n.to_string(), "--json", "-p", &prompt])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn greedy_reply_equals_rkinfer_run() {
    let s = Server::start(&["--parallel", "1"]);
    let messages = [
        ("system", "You are brief."),
        ("user", "What is the capital of France?"),
    ];
    let body = json!({
        "messages": messages.iter().map(|(r, c)| json!({"role": r, "content": c})).collect::<Vec<_>>(),
        "max_tokens": 12,
        "temperature": 0,
    });
    let reply = s.post("/v1/chat/completions", &body).json();
    let served = reply["choices"][0]["message"]["content"].as_str().unwrap();

    // The same conversation through the library's template, then `run`.
    let run = run_greedy(&messages, 12);
    assert_eq!(served, run["text"].as_str().unwrap());
    assert_eq!(
        reply["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
        run["prompt_ids"].as_array().unwrap().len()
    );

    // A text completion of the rendered prompt's ids gives the same.
    let c = s
        .post(
            "/v1/completions",
            &json!({"prompt": run["prompt_ids"], "max_tokens": 12, "temperature": 0}),
        )
        .json();
    assert_eq!(c["choices"][0]["text"], run["text"]);
}

/// Continuous batching: concurrent greedy requests (different prompts,
/// lengths and reply lengths, joining and leaving the decode batch) get
/// exactly the text each gets served alone and from `rkinfer run`.
#[test]
fn concurrent_greedy_replies_equal_each_served_alone() {
    let s = Server::start(&["--parallel", "4"]);
    let questions = [
        ("What is the capital of France?", 20),
        ("Name three colours.", 14),
        ("Write one sentence about the sea and the wind over it.", 24),
        ("2+2?", 9),
    ];
    let body = |q: &str, n: usize, cache: bool| {
        json!({
            "messages": [{"role": "system", "content": "You are brief."}, {"role": "user", "content": q}],
            "max_tokens": n,
            "temperature": 0,
            "cache_prompt": cache,
        })
    };
    let reply = |r: Response| -> String {
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let together: Vec<String> = std::thread::scope(|sc| {
        let handles: Vec<_> = questions
            .iter()
            .map(|&(q, n)| {
                let s = &s;
                sc.spawn(move || s.post("/v1/chat/completions", &body(q, n, false)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| reply(h.join().unwrap()))
            .collect()
    });
    assert!(
        s.metric("rkinfer_batch_size_max") > 1.0,
        "the concurrent requests were never decoded in one batch"
    );
    for (&(q, n), text) in questions.iter().zip(&together) {
        let alone = reply(s.post("/v1/chat/completions", &body(q, n, false)));
        assert_eq!(text, &alone, "{q:?}: served with others vs alone");
        let run = run_greedy(&[("system", "You are brief."), ("user", q)], n);
        assert_eq!(text, run["text"].as_str().unwrap(), "{q:?}: served vs run");
    }
    assert!(s.metric("rkinfer_decode_batches_total") > 0.0);
}

#[test]
fn faults_get_the_right_status_and_the_server_goes_on() {
    let s = Server::start(&["--parallel", "1", "--queue", "1", "--api-key", "sesame"]);
    let auth = [
        ("Authorization", "Bearer sesame"),
        ("Content-Type", "application/json"),
    ];
    let post = |path: &str, body: &[u8]| s.raw("POST", path, &auth, body);

    let r = post("/v1/chat/completions", b"{\"messages\": [");
    assert_eq!(
        (r.status, r.error_type().as_str()),
        (400, "invalid_request_error")
    );
    let r = post(
        "/v1/chat/completions",
        br#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}"#,
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("many"), "{}", r.text());
    let r = post(
        "/v1/chat/completions",
        br#"{"messages": [{"role": "robot", "content": "hi"}]}"#,
    );
    assert_eq!(r.status, 400);
    let r = post(
        "/v1/chat/completions",
        br#"{"messages": [{"role": "user", "content": "hi"}], "n": 3}"#,
    );
    assert_eq!(
        (r.status, r.json()["error"]["param"].as_str()),
        (400, Some("n"))
    );
    let r = post(
        "/v1/chat/completions",
        br#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}"#,
    );
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (400, Some("context_length_exceeded"))
    );
    let r = post("/v1/completions", br#"{"prompt": [999999]}"#);
    assert_eq!(r.status, 400);
    let r = post(
        "/v1/chat/completions",
        br#"{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"x": 1}}"#,
    );
    assert_eq!(r.status, 400);
    let big = vec![b'a'; 10 << 20];
    assert_eq!(post("/v1/chat/completions", &big).status, 413);
    assert_eq!(s.raw("GET", "/v1/nothing", &auth, b"").status, 404);

    // The key: missing or wrong is 401; health needs none.
    assert_eq!(s.get("/v1/models").status, 401);
    let wrong = s.raw(
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer sesamE")],
        b"",
    );
    assert_eq!(
        (wrong.status, wrong.error_type().as_str()),
        (401, "authentication_error")
    );
    assert_eq!(s.get("/health").status, 200);

    // One slot and one queue place: a third request is refused with 503.
    let auth_chat = |content: &str, n: u32| {
        let mut v = chat(content, n, true);
        v["stream"] = json!(true);
        v
    };
    let open = |body: &Value| {
        let st = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        st.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let b = body.to_string();
        let mut w = st.try_clone().unwrap();
        write!(w, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sesame\r\nContent-Length: {}\r\n\r\n{b}", b.len()).unwrap();
        let mut r = BufReader::new(st);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        (line, r)
    };
    let (l1, mut first) = open(&auth_chat("Count to one hundred.", 400));
    assert!(l1.contains("200"), "{l1}");
    // Wait until the first request holds the slot.
    let mut line = String::new();
    while !line.starts_with("data: {\"choices\":[{\"delta\":{\"content\":\"")
        || line.contains("\"content\":\"\"")
    {
        line.clear();
        first.read_line(&mut line).unwrap();
    }
    let (l2, second) = open(&auth_chat("Count to two hundred.", 400));
    assert!(l2.contains("200"), "{l2}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let third = loop {
        let r = post(
            "/v1/chat/completions",
            chat("Hi", 4, false).to_string().as_bytes(),
        );
        if r.status == 503 || Instant::now() > deadline {
            break r;
        }
    };
    assert_eq!(third.status, 503, "{}", third.text());
    assert!(
        third.headers.contains("retry-after: 1"),
        "{}",
        third.headers
    );

    // Both clients hang up mid-stream: their generations stop and the slot
    // serves the next request.
    drop(first);
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(60);
    let ok = loop {
        let r = post(
            "/v1/chat/completions",
            chat("Hi", 4, false).to_string().as_bytes(),
        );
        if r.status == 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(ok.status, 200, "{}", ok.text());
    let metrics = s.raw("GET", "/metrics", &auth, b"").text();
    let cancelled: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rkinfer_requests_cancelled_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(cancelled >= 1.0, "{metrics}");
}

#[test]
fn sigterm_ends_streams_and_the_process_cleanly() {
    let mut s = Server::start(&["--parallel", "2", "--shutdown-grace", "1"]);
    let mut a = s.open_stream(&chat("Tell me a long story.", 400, true));
    let mut b = s.open_stream(&chat("Tell me another long story.", 400, true));
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    for stream in [&mut a, &mut b] {
        let mut rest = String::new();
        stream.read_to_string(&mut rest).unwrap();
        assert!(rest.contains("data: [DONE]"), "{rest}");
    }
    let start = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "server still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    assert!(Path::new(MODEL).exists());
}

#[path = "support/tiny_models.rs"]
mod tiny_models;

/// A model with recurrent layers (the lfm2 fixture) cannot keep a strict
/// prefix of a cached prompt: the slot starts over, and the reply is the
/// one a fresh slot gives.
#[test]
fn prompt_cache_reuse_on_a_recurrent_model_replays() {
    let spec = tiny_models::tiny_spec("lfm2").unwrap();
    let tok = rkinfer::gguf::GgufFile::open(MODEL).unwrap();
    let dir = std::env::temp_dir().join(format!("rkinfer-server-lfm2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = tiny_models::make_tiny_model(&spec, "q5_0", &tok, &dir).unwrap();
    let model = path.to_str().unwrap();
    let first: Vec<u32> = (1..40).map(|i| i * 311 % 40000).collect();
    let mut second = first[..30].to_vec();
    second.extend([17, 4242, 9000]);
    let complete = |s: &Server, prompt: &[u32], cache: bool| -> Value {
        let body = json!({"prompt": prompt, "max_tokens": 8, "temperature": 0,
                          "cache_prompt": cache});
        s.post("/v1/completions", &body).json()
    };
    let s = Server::start_with(model, &["--parallel", "1"]);
    complete(&s, &first, true);
    let reused = complete(&s, &second, true);
    drop(s);
    let s = Server::start_with(model, &["--parallel", "1"]);
    let fresh = complete(&s, &second, false);
    drop(s);
    assert_eq!(reused["choices"][0]["text"], fresh["choices"][0]["text"]);
    assert!(fresh["choices"][0]["text"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let _ = std::fs::remove_dir_all(dir);
}
