//! Generation on the GPU: the sampler runs on the device and writes the next token id where
//! the next step's embedding reads it, so the host can submit step n+1 before it has read
//! step n's id. Only 4-byte token ids come back, through a small ring of readback buffers.
//!
//! With `DEPTH` steps in flight, a caller that stops (end token, stop string) leaves up to
//! `DEPTH - 1` steps computed past the stop: their tokens are never read, and the next request
//! starts over at position 0, so nothing of them survives.

use super::kernels::sample::{self, SamplerBuffers};
use super::model::{GpuModel, Logits};
use super::Op;
use crate::sampler::SamplingParams;
use crate::{Error, Result};
use std::collections::VecDeque;

/// Decode steps submitted ahead of the one being read.
const DEPTH: usize = 2;
/// Readback buffers: one per step in flight, plus the one being read.
const SLOTS: usize = DEPTH + 1;

pub struct GpuGenerator {
    pub model: GpuModel,
    sampler: SamplerBuffers,
    sample_op: Op,
    staging: Vec<wgpu::Buffer>,
    /// Submitted steps not yet read: (readback slot, submission).
    in_flight: VecDeque<(usize, wgpu::SubmissionIndex)>,
    /// Positions whose keys and values are (or will be, once submitted work runs) in the cache.
    position: usize,
    /// Tokens sampled by submitted work, and tokens the caller may still ask for.
    submitted: usize,
    limit: usize,
}

impl GpuGenerator {
    pub fn new(model: GpuModel) -> Result<Self> {
        let gpu = &model.gpu;
        let sampler = SamplerBuffers::new(gpu, SLOTS as u32);
        let sample_op = sample::op(
            gpu,
            &model.step.buffer,
            &sampler,
            &model.logits,
            &model.token_ids,
            model.config.vocab_size as u32,
            // Decode and a prompt's last chunk both leave the row to sample in row 0.
            false,
        )?;
        let staging = (0..SLOTS).map(|_| gpu.readback_buffer("token readback", 4)).collect();
        Ok(GpuGenerator {
            model,
            sampler,
            sample_op,
            staging,
            in_flight: VecDeque::new(),
            position: 0,
            submitted: 0,
            limit: 0,
        })
    }

    /// Submits one chunk's forward plus the sampler, and the copy of the sampled id to its slot.
    fn submit_sampled(&mut self, tokens: Option<&[u32]>) -> Result<()> {
        let model = &self.model;
        let gpu = &model.gpu;
        let n_tokens = match tokens {
            // The prompt's last chunk: ids from the host.
            Some(ids) => {
                gpu.queue.write_buffer(&model.token_ids, 0, bytemuck::cast_slice(ids));
                ids.len()
            }
            // A decode step: its one id is already in token_ids[0], written by the last sampler.
            None => 1,
        };
        if self.position + n_tokens > model.max_ctx as usize {
            return Err(Error::Request(format!("the context of {} positions is full", model.max_ctx)));
        }
        model.step.set(gpu, n_tokens as u32, self.position as u32);
        let slot = self.submitted % SLOTS;
        let ring_offset = (self.submitted % self.sampler.ring_len as usize) as u64 * 4;
        let mut ops: Vec<&Op> = model.ops_for(n_tokens, Logits::Last);
        ops.push(&self.sample_op);
        let (ring, staging) = (&self.sampler.ring, &self.staging[slot]);
        let index =
            super::submit_then(gpu, &ops, |encoder| encoder.copy_buffer_to_buffer(ring, ring_offset, staging, 0, 4));
        self.in_flight.push_back((slot, index));
        self.position += n_tokens;
        self.submitted += 1;
        Ok(())
    }
}

impl GpuGenerator {
    /// The next token; in the browser this must be awaited (the readback completes on the
    /// event loop), natively it may also be blocked on.
    pub async fn next_token_async(&mut self) -> Result<u32> {
        // Keep DEPTH steps ahead of the reader, never past the limit.
        while self.submitted < self.limit && self.in_flight.len() < DEPTH {
            self.submit_sampled(None)?;
        }
        let (slot, index) =
            self.in_flight.pop_front().ok_or_else(|| Error::Request("no more tokens were asked for".into()))?;
        let ids: Vec<u32> = self.model.gpu.map_and_read_async(&self.staging[slot], index).await?;
        Ok(ids[0])
    }
}

impl GpuGenerator {
    /// Starts a sequence: the prompt's chunks are submitted (not waited on) and, unless
    /// `max_tokens` is 0, the sampling of the first token.
    pub fn start(&mut self, prompt: &[u32], sampling: &SamplingParams, max_tokens: usize) -> Result<()> {
        let model = &self.model;
        if prompt.is_empty() {
            return Err(Error::Request("the prompt is empty".into()));
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= model.config.vocab_size) {
            return Err(Error::Request(format!(
                "token id {bad} is outside the vocabulary of {}",
                model.config.vocab_size
            )));
        }
        // Whatever an earlier request left in flight is finished and forgotten.
        if let Some((_, index)) = self.in_flight.pop_back() {
            let _ = model.gpu.device.poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None });
        }
        self.in_flight.clear();
        sample::start(&model.gpu, &self.sampler, sampling, model.config.vocab_size);
        self.position = 0;
        self.submitted = 0;
        self.limit = max_tokens;
        let chunk = model.max_tokens as usize;
        let (head, last) = prompt.split_at((prompt.len() - 1) / chunk * chunk);
        for piece in head.chunks(chunk) {
            // Only the prompt's last position is sampled: earlier chunks need no head.
            self.model.run_chunk(piece, self.position, Logits::None)?;
            self.position += piece.len();
        }
        if max_tokens > 0 {
            self.submit_sampled(Some(last))?;
        }
        Ok(())
    }
}
