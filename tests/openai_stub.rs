//! A local OpenAI-compatible server for `cuda-tracer prompt` and
//! `deploy.sh test`: answers /v1/models and (chat) completions, records
//! every request, and can hold completions to prove how many run at once.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use serde_json::{json, Value};

/// What the stub saw.
#[derive(Default)]
pub struct Seen {
    /// (method, path, JSON body) per request, in arrival order.
    pub requests: Vec<(String, String, Value)>,
    pub in_flight: usize,
    /// Most completions in flight at once, before and after the first `held_after`.
    pub max_in_flight_early: usize,
    pub max_in_flight_late: usize,
    pub completions: usize,
    /// Set once `hold` completions were in flight together: from then on no
    /// completion waits (a woken waiter re-checks after another has already
    /// left, so the count alone would strand the rest until the timeout).
    pub released: bool,
}

pub struct Stub {
    pub port: u16,
    pub seen: Arc<(Mutex<Seen>, Condvar)>,
}

/// Completions after the first `held_after` wait until `hold` are in flight
/// (or 10 s pass): a client that really runs them in parallel fills the
/// window, a sequential one never does.
pub fn stub(held_after: usize, hold: usize, fail_completions: bool) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<(Mutex<Seen>, Condvar)> = Arc::default();
    let shared = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let seen = Arc::clone(&shared);
            std::thread::spawn(move || handle(stream, &seen, held_after, hold, fail_completions));
        }
    });
    Stub { port, seen }
}

fn handle(stream: TcpStream, seen: &(Mutex<Seen>, Condvar), held_after: usize, hold: usize, fail: bool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = String::new();
    reader.read_line(&mut head).unwrap();
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or_default().to_string());
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let body: Value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
    let (lock, wake) = seen;
    let (status, answer) = match path.as_str() {
        "/v1/models" => {
            lock.lock().unwrap().requests.push((method, path, body));
            (
                200,
                json!({"object": "list", "data": [{"id": "stub/model-a", "object": "model"}, {"id": "stub/model-b"}]}),
            )
        }
        "/v1/completions" | "/v1/chat/completions" => {
            let mut s = lock.lock().unwrap();
            s.requests.push((method, path.clone(), body.clone()));
            s.completions += 1;
            let late = s.completions > held_after;
            s.in_flight += 1;
            if late {
                s.max_in_flight_late = s.max_in_flight_late.max(s.in_flight);
                wake.notify_all();
                s = wake
                    .wait_timeout_while(s, Duration::from_secs(10), |s| !s.released && s.in_flight < hold)
                    .unwrap()
                    .0;
                s.released |= s.in_flight >= hold;
                wake.notify_all();
            } else {
                s.max_in_flight_early = s.max_in_flight_early.max(s.in_flight);
            }
            s.in_flight -= 1;
            drop(s);
            if fail {
                (404, json!({"object": "error", "message": "The model `nope` does not exist.", "code": 404}))
            } else {
                let prompt = body["prompt"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| body["messages"][0]["content"].as_str().unwrap_or_default().to_string());
                let text = format!("echo: {prompt}");
                let choice = if path == "/v1/completions" {
                    json!({"index": 0, "text": text, "finish_reason": "length"})
                } else {
                    json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"})
                };
                let usage = json!({"prompt_tokens": prompt.split_whitespace().count(), "completion_tokens": body["max_tokens"], "total_tokens": 0});
                (
                    200,
                    json!({"id": "cmpl-1", "object": "text_completion", "model": body["model"], "choices": [choice], "usage": usage}),
                )
            }
        }
        _ => (404, json!({"detail": "Not Found"})),
    };
    let text = answer.to_string();
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

/// The one `<prefix>*.json` result file `prompt` wrote into `out`, parsed.
pub fn result_file(out: &Path, prefix: &str) -> Value {
    let files: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    assert_eq!(files.len(), 1, "{prefix}*.json in {}: {files:?}", out.display());
    serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap()
}
