//! `flint serve` over HTTP with the real SmolLM2 model: OpenAI error shapes for every class of
//! bad input (and service after each), concurrent streams that match lone requests, client
//! disconnects that cancel their generation and free their place, the API key.

mod common;

use common::server::{Server, Stream};
use serde_json::{json, Value};

/// A server with a small context (to test its limit), owned by the test that starts it: its
/// drop ends the process. (A shared one in a static was never dropped, so it outlived the run.)
fn small_server() -> Option<Server> {
    let model = common::require_real_model()?;
    Some(Server::start(&model, &["--ctx", "256", "--max-body-bytes", "65536"]))
}

fn chat_body(server: &Server, content: &str, max_tokens: u64) -> Value {
    json!({
        "model": server.model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

/// The OpenAI error shape: `error.message` and `error.type` strings, `param` and `code` present.
fn assert_error_shape(body: &Value) {
    let e = &body["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "no error message in {body}");
    assert!(e["type"].is_string(), "no error type in {body}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "param/code missing in {body}");
}

/// (what, path, content type, body, expected status, a param or code the error must name)
type Case<'a> = (&'a str, &'a str, &'a str, String, u16, Option<&'a str>);

#[test]
fn every_bad_input_gets_its_status_and_the_server_keeps_serving() {
    let Some(server) = small_server() else { return };
    let s = &server;
    let model = s.model.as_str();
    let long_prompt = "word ".repeat(400); // > 256 tokens
    let huge = "x".repeat(70_000); // > --max-body-bytes 65536
    let cases: Vec<Case> = vec![
        ("malformed JSON", "/v1/chat/completions", "application/json", "{\"model\": ".into(), 400, None),
        ("not an object", "/v1/chat/completions", "application/json", "[1, 2]".into(), 400, None),
        ("missing messages", "/v1/chat/completions", "application/json", json!({"model": model}).to_string(), 400, None),
        ("empty messages", "/v1/chat/completions", "application/json", json!({"model": model, "messages": []}).to_string(), 400, Some("messages")),
        ("unknown model", "/v1/chat/completions", "application/json",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string(), 404, Some("model_not_found")),
        ("negative max_tokens", "/v1/chat/completions", "application/json",
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}).to_string(), 400, Some("max_tokens")),
        ("zero max_completion_tokens", "/v1/chat/completions", "application/json",
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}).to_string(), 400, Some("max_tokens")),
        ("oversized max_tokens", "/v1/completions", "application/json",
            json!({"model": model, "prompt": "hi", "max_tokens": 1_000_000}).to_string(), 400, Some("max_tokens")),
        ("prompt longer than the context", "/v1/completions", "application/json",
            json!({"model": model, "prompt": long_prompt}).to_string(), 400, Some("context_length_exceeded")),
        ("prompt plus max_tokens beyond the context", "/v1/completions", "application/json",
            json!({"model": model, "prompt": "word ".repeat(200), "max_tokens": 100}).to_string(), 400, Some("context_length_exceeded")),
        ("wrong Content-Type", "/v1/chat/completions", "text/plain",
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string(), 415, None),
        ("content of the wrong type", "/v1/chat/completions", "application/json",
            json!({"model": model, "messages": [{"role": "user", "content": 42}]}).to_string(), 400, None),
        ("image content", "/v1/chat/completions", "application/json",
            json!({"model": model, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}).to_string(), 400, Some("messages")),
        ("temperature as a string", "/v1/completions", "application/json",
            json!({"model": model, "prompt": "hi", "temperature": "hot"}).to_string(), 400, None),
        ("temperature out of range", "/v1/completions", "application/json",
            json!({"model": model, "prompt": "hi", "temperature": 3.5}).to_string(), 400, Some("temperature")),
        ("n = 2", "/v1/chat/completions", "application/json",
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "n": 2}).to_string(), 400, Some("n")),
        ("oversized body", "/v1/completions", "application/json",
            json!({"model": model, "prompt": huge}).to_string(), 413, None),
        ("unknown URL", "/v1/embeddings", "application/json", "{}".into(), 404, None),
    ];
    for (what, path, content_type, body, status, names) in cases {
        let (got, response) = s.post_raw(path, content_type, &body, None);
        assert_eq!(got, status, "{what}: {response}");
        assert_error_shape(&response);
        if let Some(name) = names {
            let e = &response["error"];
            assert!(e["param"] == name || e["code"] == name, "{what}: the error should name `{name}`: {response}");
        }
        // The server keeps serving.
        let (ok, answer) = s.post("/v1/chat/completions", &chat_body(s, "Say yes.", 1));
        assert_eq!(ok, 200, "after {what}: {answer}");
        assert_eq!(answer["usage"]["completion_tokens"], 1, "after {what}: {answer}");
    }
    // A wrong method on a real route.
    let (status, body) = s.get("/v1/chat/completions", None);
    assert_eq!(status, 405, "{body}");
    assert_error_shape(&body);
}

#[test]
fn models_and_health() {
    let Some(server) = small_server() else { return };
    let s = &server;
    let (status, list) = s.get("/v1/models", None);
    assert_eq!(status, 200);
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], s.model.as_str());
    assert_eq!(s.get(&format!("/v1/models/{}", s.model), None).0, 200);
    assert_eq!(s.get("/v1/models/nope", None).0, 404);
    assert_eq!(s.health()["status"], "ok");
}

/// Text and finish reason of a stream, checking every chunk belongs to it (same id).
fn read_stream(mut stream: Stream) -> (String, String, Value) {
    let (mut text, mut finish, mut usage, mut id) = (String::new(), String::new(), Value::Null, None::<String>);
    while let Some(data) = stream.next_data() {
        if data == "[DONE]" {
            assert!(stream.next_data().is_none(), "data after [DONE]");
            return (text, finish, usage);
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        let chunk_id = chunk["id"].as_str().unwrap().to_string();
        assert_eq!(id.get_or_insert_with(|| chunk_id.clone()), &chunk_id, "a chunk of another request");
        if let Some(choice) = chunk["choices"].get(0) {
            text.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
        if chunk["usage"].is_object() {
            usage = chunk["usage"].clone();
        }
    }
    panic!("the stream ended without [DONE]");
}

#[test]
fn sixteen_concurrent_streams_equal_lone_requests() {
    let Some(server) = small_server() else { return };
    let s = &server;
    // Enough tokens for the answers to differ, few enough for 32 requests on a software GPU.
    const TOKENS: u64 = 6;
    let prompts: Vec<String> = (0..16).map(|i| format!("Name {} animals that live in the sea.", i + 2)).collect();
    let body = |p: &str| {
        let mut b = chat_body(s, p, TOKENS);
        b["stream"] = json!(true);
        b["stream_options"] = json!({"include_usage": true});
        b
    };
    // Each prompt alone first (greedy, so each has one right answer).
    let alone: Vec<Value> = prompts
        .iter()
        .map(|p| {
            let (status, answer) = s.post("/v1/chat/completions", &chat_body(s, p, TOKENS));
            assert_eq!(status, 200, "{answer}");
            answer
        })
        .collect();
    let together: Vec<(String, String, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| scope.spawn(move || read_stream(Stream::open(s, "/v1/chat/completions", &body(p)))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, ((text, finish, usage), lone)) in together.iter().zip(&alone).enumerate() {
        assert_eq!(text, lone["choices"][0]["message"]["content"].as_str().unwrap(), "stream {i}");
        assert_eq!(finish, lone["choices"][0]["finish_reason"].as_str().unwrap(), "stream {i}");
        assert_eq!(usage, &lone["usage"], "stream {i}");
        // Exact count: TOKENS unless the model ended earlier.
        let n = usage["completion_tokens"].as_u64().unwrap();
        assert!(n == TOKENS || finish == "stop", "stream {i}: {n} tokens, finish {finish}");
        assert_eq!(usage["total_tokens"], usage["prompt_tokens"].as_u64().unwrap() + n);
    }
}

/// A completion prompt the model continues without end (greedy counting).
fn endless(s: &Server, stream: bool) -> Value {
    json!({"model": s.model, "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 1500, "temperature": 0, "stream": stream})
}

#[test]
fn disconnected_clients_cancel_and_free_their_place() {
    let Some(model) = common::require_real_model() else { return };
    let s = Server::start(&model, &["--max-concurrent", "2", "--ctx", "2048"]);
    // Two long streams fill both places; a third request is refused with 429.
    let mut a = Stream::open(&s, "/v1/completions", &endless(&s, true));
    let b = Stream::open(&s, "/v1/completions", &endless(&s, true));
    for _ in 0..3 {
        assert!(a.next_data().is_some());
    }
    let (status, refused) = s.post("/v1/completions", &endless(&s, false));
    assert_eq!(status, 429, "{refused}");
    assert_error_shape(&refused);
    // Both clients leave: A mid-generation, B while it waited in the queue or had just begun.
    drop(a);
    drop(b);
    let health = s.wait_idle();
    // Without cancellation these would run their 1500 tokens and count as completed.
    assert_eq!(health["cancelled"], 2, "{health}");
    assert_eq!(health["completed"], 0, "{health}");
    // Both places are free again.
    let short = json!({"model": s.model, "prompt": "Hello", "max_tokens": 3, "temperature": 0});
    let results: Vec<u16> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..2).map(|_| scope.spawn(|| s.post("/v1/completions", &short).0)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results, [200, 200]);
}

#[test]
fn the_api_key_is_enforced() {
    let Some(model) = common::require_real_model() else { return };
    let s = Server::start(&model, &["--api-key", "sesame"]);
    let body = chat_body(&s, "Say yes.", 2).to_string();
    for key in [None, Some("wrong")] {
        let (status, response) = s.post_raw("/v1/chat/completions", "application/json", &body, key);
        assert_eq!(status, 401, "{response}");
        assert_error_shape(&response);
        assert_eq!(s.get("/v1/models", key).0, 401);
    }
    assert_eq!(s.post_raw("/v1/chat/completions", "application/json", &body, Some("sesame")).0, 200);
    assert_eq!(s.get("/v1/models", Some("sesame")).0, 200);
    // Health checks stay open for load balancers.
    assert_eq!(s.get("/health", None).0, 200);
}
