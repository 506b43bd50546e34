//! `cuda-tracer prompt` against a local OpenAI-compatible stub server:
//! the requests it sends (model discovery, single, sequential, parallel),
//! the JSON it saves, and clear errors for a refused connection or a 404.

use std::path::Path;

use cuda_tracer_tests::{
    openai_stub::{result_file, stub},
    *,
};

fn prompt_cmd(port: u16, out: &Path, extra: &[&str]) -> std::process::Output {
    tracer_cmd()
        .args(["prompt", "--url", &format!("http://127.0.0.1:{port}"), "--out"])
        .arg(out)
        .args(extra)
        .env_remove("VLLM_URL")
        .output()
        .unwrap()
}

#[test]
fn single_then_sequential_then_parallel_requests_are_sent_and_saved() {
    let (batch, parallel) = (8, 4);
    // The single prompt and the sequential run are answered at once.
    let stub = stub(1 + batch, parallel, false);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("results");
    let output = prompt_cmd(stub.port, &out, &["--batch", "8", "--parallel", "4", "--max-tokens", "16"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("model stub/model-a") && stdout.contains("parallel"), "{stdout}");

    let seen = stub.seen.0.lock().unwrap();
    let paths: Vec<&str> =
        seen.requests.iter().map(|(m, p, _)| if m == "GET" { "GET models" } else { p.as_str() }).collect();
    assert_eq!(paths[0], "GET models", "the model comes from /v1/models");
    assert_eq!(paths[1..], vec!["/v1/completions"; 1 + 2 * batch]);
    for (_, _, body) in &seen.requests[1..] {
        assert_eq!(body["model"], "stub/model-a");
        assert_eq!(body["max_tokens"], 16);
    }
    assert_eq!(seen.max_in_flight_early, 1, "single and sequential requests never overlap");
    assert_eq!(seen.max_in_flight_late, parallel, "the parallel run keeps --parallel requests in flight");
    // The batch is the built-in prompts, the same in both runs.
    let prompts: Vec<&str> = seen.requests[2..].iter().map(|(_, _, b)| b["prompt"].as_str().unwrap()).collect();
    let sent_in_order: Vec<String> = prompts[..batch].iter().map(|p| p.to_string()).collect();
    let (mut sequential, mut parallel_sent) = (prompts[..batch].to_vec(), prompts[batch..].to_vec());
    sequential.sort_unstable();
    parallel_sent.sort_unstable();
    assert_eq!(sequential, parallel_sent);
    sequential.dedup();
    assert_eq!(sequential.len(), batch, "distinct prompts");
    drop(seen);

    let single = result_file(&out, "single_prompt_result_");
    assert_eq!(single["model"], "stub/model-a");
    assert_eq!(single["endpoint"], "/v1/completions");
    let r = &single["result"];
    assert_eq!(
        (r["ok"].as_bool(), r["status"].as_u64(), r["completion_tokens"].as_u64()),
        (Some(true), Some(200), Some(16))
    );
    assert_eq!(r["text"], format!("echo: {}", r["prompt"].as_str().unwrap()));
    assert!(r["latency_ms"].as_f64().unwrap() > 0.0);

    let b = result_file(&out, "batch_prompts_result_");
    for (mode, concurrency) in [("sequential", 1), ("parallel", parallel)] {
        let run = &b[mode];
        let s = &run["summary"];
        assert_eq!(s["mode"], mode);
        assert_eq!(s["concurrency"], concurrency);
        assert_eq!(
            (s["requests"].as_u64(), s["succeeded"].as_u64(), s["failed"].as_u64()),
            (Some(8), Some(8), Some(0))
        );
        assert_eq!(s["completion_tokens"], 8 * 16);
        assert!(s["wall_ms"].as_f64().unwrap() > 0.0 && s["completion_tokens_per_sec"].as_f64().unwrap() > 0.0);
        let requests = run["requests"].as_array().unwrap();
        let indexes: Vec<u64> = requests.iter().map(|r| r["index"].as_u64().unwrap()).collect();
        assert_eq!(indexes, (0..8).collect::<Vec<_>>());
        if mode == "sequential" {
            let saved: Vec<&str> = requests.iter().map(|r| r["prompt"].as_str().unwrap()).collect();
            assert_eq!(saved, sent_in_order, "a sequential run sends the prompts in order");
        }
        for r in requests {
            assert_eq!(r["text"], format!("echo: {}", r["prompt"].as_str().unwrap()));
        }
    }
    assert!(b["parallel_speedup"].as_f64().unwrap() > 0.0);
}

#[test]
fn chat_endpoint_with_a_named_model_skips_model_discovery() {
    let stub = stub(usize::MAX, 1, false);
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("prompts.txt");
    std::fs::write(&prompts, "first question\n\nsecond question\n").unwrap();
    let out = tmp.path().join("results");
    let output = prompt_cmd(
        stub.port,
        &out,
        &[
            "--chat",
            "--model",
            "my-model",
            "--batch",
            "3",
            "--parallel",
            "1",
            "--prompts-file",
            prompts.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let seen = stub.seen.0.lock().unwrap();
    assert!(seen
        .requests
        .iter()
        .all(|(m, p, b)| m == "POST" && p == "/v1/chat/completions" && b["model"] == "my-model"));
    let contents: Vec<&str> =
        seen.requests.iter().map(|(_, _, b)| b["messages"][0]["content"].as_str().unwrap()).collect();
    assert_eq!(contents[1..], ["first question", "second question", "first question"]);
    let b = result_file(&out, "batch_prompts_result_");
    assert!(b["parallel"].is_null(), "--parallel 1: sequential only");
    assert_eq!(b["sequential"]["requests"][1]["text"], "echo: second question");
}

#[test]
fn refused_connection_and_http_errors_say_what_to_check() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let output = prompt_cmd(port, &tmp.path().join("r1"), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    for want in
        [format!("cannot reach http://127.0.0.1:{port}/v1/models"), "refused".into(), "./deploy.sh status".into()]
    {
        assert!(stderr.contains(&want), "{want:?} not in {stderr}");
    }

    let stub = stub(usize::MAX, 1, true);
    let out = tmp.path().join("r2");
    let output = prompt_cmd(stub.port, &out, &["--model", "nope"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("/v1/completions answered HTTP 404") && stderr.contains("does not exist"), "{stderr}");
    // The failed single prompt is saved, and no batch was sent.
    let single = result_file(&out, "single_prompt_result_");
    assert_eq!((single["result"]["ok"].as_bool(), single["result"]["status"].as_u64()), (Some(false), Some(404)));
    assert_eq!(stub.seen.0.lock().unwrap().requests.len(), 1);
}
