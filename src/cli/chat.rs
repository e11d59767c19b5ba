//! `flint chat`: an interactive conversation in the terminal. The history goes through the
//! model's chat template each turn; answers stream as they form. Ctrl-C during an answer stops
//! that answer (the partial answer stays in the history); at the prompt it leaves.

use super::{model_path, EngineArgs};
use crate::engine::ModelFiles;
use crate::engine::{generate, GenerateOptions};
use crate::sampler::clock_seed;
use crate::sampler::SamplingParams;
use crate::tokenizer::Message;
use crate::{Error, Result};
use clap::Args;
use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

pub const EXAMPLES: &str = "Examples:
  flint chat
  flint chat --model ./my-model --system \"You are a terse assistant.\" --temperature 0.7

In the chat: /reset forgets the conversation, /exit (or Ctrl-D) leaves, Ctrl-C stops an answer.";

#[derive(Args)]
pub struct ChatArgs {
    /// A Hugging Face model folder, a .gguf file, or a Hub repo id (default: SmolLM2-135M-Instruct from the cache).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A system message that opens the conversation.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    #[arg(long)]
    seed: Option<u64>,
    /// Engine and KV cache (old turns are dropped to fit the context).
    #[command(flatten)]
    engine: EngineArgs,
}

/// What the main loop waits for at the prompt.
enum Input {
    Line(String),
    Eof,
    Interrupt,
}

pub fn run(args: ChatArgs) -> Result<()> {
    SamplingParams { temperature: args.temperature, top_p: args.top_p, ..Default::default() }.check()?;
    let path = model_path(args.model)?;
    let files = ModelFiles::open(&path)?;
    let tokenizer =
        files.tokenizer.as_ref().ok_or_else(|| Error::Tokenizer(format!("{} has no tokenizer", path.display())))?;
    let mut generator = args.engine.generator(&files)?;
    let context = generator.context_len();

    // Lines and Ctrl-C at the prompt arrive on one channel, so the main thread is the one that
    // ends the program (dropping the GPU engine in order). Ctrl-C while answering only sets a flag.
    let (input, inputs) = mpsc::channel::<Input>();
    let answering = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let (answering, interrupted, input) = (answering.clone(), interrupted.clone(), input.clone());
        ctrlc::set_handler(move || match answering.load(Ordering::SeqCst) {
            true => interrupted.store(true, Ordering::SeqCst),
            false => {
                let _ = input.send(Input::Interrupt);
            }
        })
        .map_err(|e| Error::Service(format!("cannot handle Ctrl-C: {e}")))?;
    }
    std::thread::spawn(move || loop {
        let mut line = String::new();
        let read = std::io::stdin().lock().read_line(&mut line);
        let message = match read {
            Ok(0) | Err(_) => Input::Eof,
            Ok(_) => Input::Line(line),
        };
        let end = matches!(message, Input::Eof);
        if input.send(message).is_err() || end {
            return;
        }
    });

    let mut history: Vec<Message> = args.system.iter().map(|s| Message::new("system", s)).collect();
    let first_turn = history.len();
    let mut seed = args.seed.unwrap_or_else(clock_seed);
    let mut stdout = std::io::stdout();
    eprintln!("flint chat: {} (/reset, /exit, Ctrl-C stops an answer)", path.display());
    loop {
        print!("> ");
        let _ = stdout.flush();
        let line = match inputs.recv() {
            Ok(Input::Line(line)) => line,
            Ok(Input::Eof | Input::Interrupt) | Err(_) => {
                println!();
                return Ok(());
            }
        };
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/reset" => {
                history.truncate(first_turn);
                println!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        history.push(Message::new("user", line));
        // Drop the oldest turns until the prompt leaves room for an answer.
        let ids = loop {
            let ids = tokenizer.encode(&tokenizer.apply_chat_template(&history, true)?, true)?;
            if ids.len() + args.max_tokens.min(context / 2) < context || history.len() <= first_turn + 1 {
                break ids;
            }
            history.remove(first_turn);
        };
        let options = GenerateOptions {
            max_tokens: args.max_tokens,
            sampling: SamplingParams { temperature: args.temperature, top_k: 0, top_p: args.top_p, seed },
            stop: vec![],
            stop_token_ids: files.stop_token_ids(),
        };
        seed = seed.wrapping_add(1);
        interrupted.store(false, Ordering::SeqCst);
        answering.store(true, Ordering::SeqCst);
        let result = generate(generator.as_mut(), tokenizer, &ids, &options, |piece| {
            print!("{piece}");
            let _ = stdout.flush();
            match interrupted.load(Ordering::SeqCst) {
                true => ControlFlow::Break(()),
                false => ControlFlow::Continue(()),
            }
        });
        answering.store(false, Ordering::SeqCst);
        let completion = match result {
            Ok(c) => c,
            Err(e) => {
                println!();
                eprintln!("error: {e}");
                history.pop();
                continue;
            }
        };
        if interrupted.load(Ordering::SeqCst) {
            print!(" [stopped]");
        }
        println!();
        history.push(Message::new("assistant", &completion.text));
    }
}
