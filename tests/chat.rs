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

/// A tmux server of its own holding one `flint chat` pane.
struct Terminal {
    socket: String,
}

impl Terminal {
    fn start(tag: &str, model: &Path, args: &[&str]) -> Terminal {
        let terminal = Terminal { socket: format!("flint-test-{}-{tag}", std::process::id()) };
        let mut command = format!("{} chat --model '{}'", env!("CARGO_BIN_EXE_flint"), model.display());
        for a in args {
            command.push_str(&format!(" '{a}'"));
        }
        let out = terminal.tmux(&["new-session", "-d", "-s", "chat", "-x", "200", "-y", "60", &command]);
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

    /// `(dead, exit status or signal)` of the pane. The pty closes (dead) a moment before tmux
    /// reaps the process (status), so a dead pane's status may still be empty.
    fn pane_status(&self) -> (bool, String) {
        let out =
            self.tmux(&["display-message", "-p", "-t", "chat", "#{pane_dead} #{pane_dead_status}#{pane_dead_signal}"]);
        let text = String::from_utf8(out.stdout).unwrap();
        let (dead, status) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
        (dead == "1", status.to_string())
    }
}

impl Terminal {
    /// Waits for the program to end; its exit status (or the signal that ended it).
    fn exit_status(&self) -> String {
        self.wait_for("the program to end", |_| {
            let (dead, status) = self.pane_status();
            dead && !status.is_empty()
        });
        self.pane_status().1
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
    let Some(model) = common::real_model() else { return };
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
    let Some(model) = common::real_model() else { return };
    let t = Terminal::start("ctrl-c", &model, &["--temperature", "0", "--max-tokens", "1500"]);
    t.wait_for("the first prompt", |s| prompts(s) == 1);
    t.type_line("Write a very long story about a dragon who learns to sing.");
    // Let the answer get going, then interrupt it.
    t.wait_for("some of the answer", |s| {
        s.lines().skip_while(|l| !l.starts_with("> Write")).skip(1).any(|l| l.len() > 20)
    });
    t.tmux(&["send-keys", "-t", "chat", "C-c"]);
    let screen = t.wait_for("the stopped answer and a new prompt", |s| s.contains("[stopped]") && prompts(s) == 2);
    assert!(!t.pane_status().0, "Ctrl-C ended the program:\n{screen}");
    // Still chatting.
    t.type_line("Say hello.");
    t.wait_for("the next answer", |s| prompts(s) == 3);
    assert!(!t.pane_status().0);
    // Ctrl-C at the prompt leaves, cleanly.
    t.tmux(&["send-keys", "-t", "chat", "C-c"]);
    assert_eq!(t.exit_status(), "0");
}
