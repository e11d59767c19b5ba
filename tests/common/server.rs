//! `flint serve` as a child process on a free port, and small HTTP helpers (ureq).

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub base: String,
    pub model: String,
}

impl Server {
    /// Starts `flint serve --port 0 <args>` and waits for its "serving" line. Keep the
    /// `Server` in the test that starts it (not in a static): its drop stops the process, and on
    /// Linux the process also dies with the thread that started it, should the test be killed.
    pub fn start(model: &std::path::Path, args: &[&str]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flint"));
        command
            .args(["serve", "--model"])
            .arg(model)
            .args(["--port", "0"])
            .args(args)
            .env("XDG_RUNTIME_DIR", std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut command);
        let mut child = command.spawn().expect("flint serve starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (base, model) = loop {
            let line = lines.next().expect("flint serve printed its address before exiting").unwrap();
            eprintln!("[serve] {line}");
            if let Some(rest) = line.strip_prefix("flint: serving `") {
                let (model, rest) = rest.split_once("` on ").unwrap();
                let base = rest.split_whitespace().next().unwrap().trim_end_matches("/v1").to_string();
                break (base, model.to_string());
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| eprintln!("[serve] {l}")));
        Server { child, base, model }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON; returns the status and the parsed body.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, "application/json", &body.to_string(), None)
    }

    pub fn post_raw(&self, path: &str, content_type: &str, body: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = ureq::post(&self.url(path)).set("Content-Type", content_type);
        if let Some(k) = key {
            request = request.set("Authorization", &format!("Bearer {k}"));
        }
        respond(request.send_string(body))
    }

    pub fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = ureq::get(&self.url(path));
        if let Some(k) = key {
            request = request.set("Authorization", &format!("Bearer {k}"));
        }
        respond(request.call())
    }

    /// `/health`'s counters.
    pub fn health(&self) -> Value {
        self.get("/health", None).1
    }

    /// Waits until no request is queued or running (bounded, so a stuck server fails the test).
    pub fn wait_idle(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let h = self.health();
            if h["active"] == 0 {
                return h;
            }
            assert!(Instant::now() < deadline, "the server stayed busy: {h}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Drop runs neither on SIGKILL nor on a timeout's kill, so the kernel ends the child instead
/// (PR_SET_PDEATHSIG). It fires when the spawning *thread* exits, which for a `Server` owned by
/// its test is the test's own end.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: prctl, getppid and _exit are async-signal-safe; nothing here allocates.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died between fork and prctl: no signal will come.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

fn respond(result: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("HTTP request failed: {e}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A streaming POST: the SSE `data:` payloads, read one at a time.
pub struct Stream {
    lines: std::io::Lines<BufReader<Box<dyn std::io::Read + Send + Sync>>>,
}

impl Stream {
    pub fn open(server: &Server, path: &str, body: &Value) -> Stream {
        let response = ureq::post(&server.url(path))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .expect("the stream opens");
        assert_eq!(response.header("content-type"), Some("text/event-stream"));
        Stream { lines: BufReader::new(response.into_reader()).lines() }
    }

    /// The next `data:` payload (`None` at the end of the stream).
    pub fn next_data(&mut self) -> Option<String> {
        for line in self.lines.by_ref() {
            if let Some(data) = line.unwrap().strip_prefix("data: ") {
                return Some(data.to_string());
            }
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
