//! The engine worker: one thread owns the [`Generator`] (the GPU engine holds one sequence)
//! and takes jobs from a FIFO queue, so requests run in arrival order. Each job streams its
//! text back through its own channel; when the client is gone the channel is closed, the next
//! piece fails to send, and generation stops there, freeing the engine for the next job.

use crate::engine::{generate, Completion, FinishReason, GenerateOptions, Generator};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::mpsc::UnboundedSender;

/// What a job sends back: text as it forms, then the outcome.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Done(Result<Completion, String>),
}

/// Counters shared by the handlers, the worker and `/health`.
#[derive(Default)]
pub struct Stats {
    /// Requests admitted and not yet finished (queued or running).
    pub active: AtomicUsize,
    pub completed: AtomicU64,
    /// Generations stopped (or never started) because their client went away.
    pub cancelled: AtomicU64,
}

impl Stats {
    /// Admits one more request when fewer than `max` are active.
    pub fn try_admit(self: &Arc<Self>, max: usize) -> Option<Slot> {
        self.active.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Slot(self.clone()))
    }
}

/// One admitted request; dropping it (when the worker is done with the job) frees the place.
pub struct Slot(Arc<Stats>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct Job {
    pub prompt: Vec<u32>,
    pub options: GenerateOptions,
    pub events: UnboundedSender<Event>,
    pub slot: Slot,
}

/// The queue into the worker thread.
#[derive(Clone)]
pub struct Engine {
    queue: mpsc::Sender<Job>,
}

impl Engine {
    /// Starts the worker thread; `make` builds the generator there (on the thread that will
    /// use it). Returns once the generator is ready, or with its construction error.
    pub fn start(
        make: impl FnOnce() -> Result<Box<dyn Generator>> + Send + 'static,
        tokenizer: Arc<Tokenizer>,
        stats: Arc<Stats>,
    ) -> Result<Engine> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel::<Result<()>>();
        std::thread::Builder::new()
            .name("flint-engine".into())
            .spawn(move || {
                let mut generator = match make() {
                    Ok(g) => {
                        let _ = ready_tx.send(Ok(()));
                        g
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for job in jobs {
                    run_job(generator.as_mut(), &tokenizer, &stats, job);
                }
            })
            .map_err(|e| Error::Service(format!("cannot start the engine thread: {e}")))?;
        ready.recv().map_err(|_| Error::Service("the engine thread stopped while starting".into()))??;
        Ok(Engine { queue })
    }

    /// Queues a job behind those already waiting.
    pub fn submit(&self, job: Job) -> Result<()> {
        self.queue.send(job).map_err(|_| Error::Service("the engine has stopped".into()))
    }
}

fn run_job(generator: &mut dyn Generator, tokenizer: &Tokenizer, stats: &Stats, job: Job) {
    let Job { prompt, options, events, slot } = job;
    if events.is_closed() {
        // The client left while the job waited in the queue.
        stats.cancelled.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let started = std::time::Instant::now();
    let result =
        generate(generator, tokenizer, &prompt, &options, |piece| match events.send(Event::Text(piece.into())) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        });
    match &result {
        Ok(c) if c.finish_reason == FinishReason::Cancelled => {
            stats.cancelled.fetch_add(1, Ordering::SeqCst);
            tracing::info!("client disconnected: stopped after {} tokens", c.tokens.len());
        }
        Ok(c) => {
            stats.completed.fetch_add(1, Ordering::SeqCst);
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                "{} prompt + {} generated tokens in {secs:.2} s ({:.1} tok/s), finish {:?}",
                c.prompt_tokens,
                c.tokens.len(),
                c.tokens.len() as f64 / secs.max(1e-9),
                c.finish_reason
            );
        }
        Err(e) => tracing::warn!("generation failed: {e}"),
    }
    let _ = events.send(Event::Done(result.map_err(|e| e.to_string())));
    drop(slot);
}
