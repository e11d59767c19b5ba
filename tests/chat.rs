//! `flint chat` in a real terminal (tmux): two turns whose answers are the model's greedy
//! answers with the history, and Ctrl-C stopping an answer without ending the program.

mod common;

use flint::engine::{generate, CpuGenerator, GenerateOptions};
use flint::tokenizer::Message;
use flint::ModelFiles;
use std::ops::ControlFlow;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server of its own holding one `flint chat` pane. The pane runs a bash script that
/// writes flint's exit status to a file: tmux itself does not always reap a pane's process
/// (a zombie with an empty `pane_dead_status` was seen), and bash, unlike sh, keeps waiting
/// when Ctrl-C reaches a child that handles it.
struct Terminal {
    socket: String,
    dir: tempfile::TempDir,
}

impl Terminal {
    fn start(tag: &str, model: &Path, args: &[&str]) -> Terminal {
        let dir = tempfile::tempdir().unwrap();
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let mut command =
            format!("{} chat --model {}", quote(env!("CARGO_BIN_EXE_flint")), quote(&model.to_string_lossy()));
        for a in args {
            command.push_str(&format!(" {}", quote(a)));
        }
        let status = dir.path().join("status");
        let script = dir.path().join("chat.sh");
        std::fs::write(&script, format!("{command}\necho $? > {}\n", quote(&status.to_string_lossy()))).unwrap();
        let terminal = Terminal { socket: format!("flint-test-{}-{tag}", std::process::id()), dir };
        let run = format!("bash {}", quote(&script.to_string_lossy()));
        let out = terminal.tmux(&["new-session", "-d", "-s", "chat", "-x", "200", "-y", "60", &run]);
        assert!(out.status.success(), "tmux: {}", String::from_utf8_lossy(&out.stderr));
        terminal.tmux(&["set-option", "-t", "chat", "remain-on-exit", "on"]);
        terminal
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").args(["-L", &self.socket]).args(args).output().expect("tmux runs")
    }

    fn screen(&self) -> String {
        String::from_utf8(self.tmux(&["capture-pane", "-p", "-J", "-t", "chat", "-S", "-2000"]).stdout).unwrap()
    }

    fn type_line(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "chat", "-l", text]);
        self.tmux(&["send-keys", "-t", "chat", "Enter"]);
    }

    /// Waits (bounded) until `done` holds for the screen; returns the screen.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "waited too long for {what}; the terminal shows:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the program has ended: its status is written, or (killed, so the script ended
    /// with it) the pane is dead.
    fn ended(&self) -> bool {
        let dead = self.tmux(&["display-message", "-p", "-t", "chat", "#{pane_dead}"]).stdout;
        self.dir.path().join("status").exists() || String::from_utf8_lossy(&dead).trim() == "1"
    }

    /// Waits for the program to end; its exit status.
    fn exit_status(&self) -> String {
        let status = self.dir.path().join("status");
        let read = || std::fs::read_to_string(&status).ok().filter(|s| s.ends_with('\n'));
        self.wait_for("the program to end", |_| read().is_some());
        read().unwrap().trim().to_string()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

/// Prompt lines on the screen (`> ` then the user's text, or the waiting empty prompt).
fn prompts(screen: &str) -> usize {
    screen.lines().filter(|l| l.starts_with('>')).count()
}

fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The greedy answer to `history` (CPU reference), as `flint chat --temperature 0` should give.
fn greedy_answer(files: &ModelFiles, history: &[Message], max_tokens: usize) -> String {
    let tokenizer = files.tokenizer.as_ref().unwrap();
    let ids = tokenizer.encode(&tokenizer.apply_chat_template(history, true).unwrap(), true).unwrap();
    let options = GenerateOptions { max_tokens, stop_token_ids: files.stop_token_ids(), ..Default::default() };
    let mut cpu = CpuGenerator::new(files.load_reference().unwrap());
    generate(&mut cpu, tokenizer, &ids, &options, |_| ControlFlow::Continue(())).unwrap().text
}

#[test]
fn two_turns_with_history() {
    let Some(model) = common::require_real_model() else { return };
    let t = Terminal::start("turns", &model, &["--temperature", "0", "--max-tokens", "20", "--device", "cpu"]);
    t.wait_for("the first prompt", |s| prompts(s) == 1);
    let files = ModelFiles::open(&model).unwrap();
    let mut history = vec![];
    for (turn, question) in ["What is the capital of France?", "And of Italy?"].iter().enumerate() {
        t.type_line(question);
        let screen = t.wait_for("the answer", |s| prompts(s) == turn + 2);
        history.push(Message::new("user", question));
        let expected = greedy_answer(&files, &history, 20);
        assert!(!expected.trim().is_empty());
        assert!(squash(&screen).contains(&squash(&expected)), "turn {turn}: expected {expected:?} on\n{screen}");
        history.push(Message::new("assistant", &expected));
    }
    t.type_line("/exit");
    assert_eq!(t.exit_status(), "0");
}

#[test]
fn ctrl_c_stops_the_answer_not_the_program() {
    let Some(model) = common::require_real_model() else { return };
    let t = Terminal::start("ctrl-c", &model, &["--temperature", "0", "--max-tokens", "1500"]);
    t.wait_for("the first prompt", |s| prompts(s) == 1);
    t.type_line("Write a very long story about a dragon who learns to sing.");
    // Let the answer get going, then interrupt it.
    t.wait_for("some of the answer", |s| {
        s.lines().skip_while(|l| !l.starts_with("> Write")).skip(1).any(|l| l.len() > 20)
    });
    t.tmux(&["send-keys", "-t", "chat", "C-c"]);
    let screen = t.wait_for("the stopped answer and a new prompt", |s| s.contains("[stopped]") && prompts(s) == 2);
    assert!(!t.ended(), "Ctrl-C ended the program:\n{screen}");
    // Still chatting.
    t.type_line("Say hello.");
    t.wait_for("the next answer", |s| prompts(s) == 3);
    assert!(!t.ended());
    // Ctrl-C at the prompt leaves, cleanly.
    t.tmux(&["send-keys", "-t", "chat", "C-c"]);
    assert_eq!(t.exit_status(), "0");
}
