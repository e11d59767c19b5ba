//! Measurements of the device, taken in the same run as the figures compared with them: the
//! buffer-copy bandwidth, the best streaming-read bandwidth of a plain WGSL kernel
//! (`read_bandwidth.wgsl` over a few workgroup shapes), and per-op GPU time from timestamp
//! queries where the device has them. Native only (wall clocks).

use super::kernels::read_bandwidth;
use super::{Gpu, Op};
use crate::{Error, Result};
use std::time::Instant;

/// Seconds of the fastest of `reps` runs of `f` (which submits work), after one warm-up run,
/// each timed to the end of the device's work.
pub fn time_best(gpu: &Gpu, reps: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for i in 0..=reps {
        let t = Instant::now();
        f();
        let _ = gpu.device.poll(wgpu::PollType::wait_indefinitely());
        if i > 0 {
            best = best.min(t.elapsed().as_secs_f64());
        }
    }
    best
}

/// GB/s copied by `copy_buffer_to_buffer` of `bytes` (256 MiB is more than any CPU cache, so it
/// measures memory): four copies per submission so submission latency counts little.
pub fn copy_gbps(gpu: &Gpu, bytes: u64) -> f64 {
    let bytes = bytes.min(gpu.limits.max_buffer_size) & !3;
    let (src, dst) = (gpu.storage_zeroed("copy src", bytes), gpu.storage_zeroed("copy dst", bytes));
    let t = time_best(gpu, 4, || {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        for _ in 0..4 {
            enc.copy_buffer_to_buffer(&src, 0, &dst, 0, bytes);
        }
        gpu.queue.submit([enc.finish()]);
    });
    4.0 * bytes as f64 / t / 1e9
}

/// The best streaming read: bandwidth and the kernel's shape.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ReadBound {
    pub gbps: f64,
    pub workgroup: u32,
    pub vec4s_per_workgroup: u32,
}

/// GB/s read by `read_bandwidth.wgsl` over `bytes` (in buffers of at most one binding, one op
/// each, all in one pass), the best of a few workgroup shapes.
pub fn read_gbps(gpu: &Gpu, bytes: u64) -> Result<ReadBound> {
    let per_buffer = gpu.max_binding_bytes().min(128 << 20) & !15;
    let n = bytes.div_ceil(per_buffer).max(1);
    let srcs: Vec<wgpu::Buffer> = (0..n).map(|_| gpu.storage_zeroed("read src", per_buffer)).collect();
    let vec4s = (per_buffer / 16) as u32;
    let mut best: Option<ReadBound> = None;
    for wg in [64u32, 128, 256] {
        for per_wg in [4 * wg * 16, 4 * wg * 64] {
            let outs: Vec<wgpu::Buffer> = (0..n)
                .map(|_| gpu.storage_zeroed("read out", u64::from(read_bandwidth::workgroups(vec4s, per_wg) * wg) * 4))
                .collect();
            let ops = srcs
                .iter()
                .zip(&outs)
                .map(|(s, o)| read_bandwidth::op(gpu, s, o, vec4s, per_wg, wg))
                .collect::<Result<Vec<Op>>>()?;
            let refs: Vec<&Op> = ops.iter().collect();
            let t = time_best(gpu, 3, || {
                super::submit(gpu, &refs);
            });
            let gbps = (n * per_buffer) as f64 / t / 1e9;
            if best.is_none_or(|b| gbps > b.gbps) {
                best = Some(ReadBound { gbps, workgroup: wg, vec4s_per_workgroup: per_wg });
            }
        }
    }
    best.ok_or_else(|| Error::Gpu("no read shape ran".into()))
}

/// GPU nanoseconds of each op of `ops`, each run in its own compute pass with timestamps at its
/// start and end, or `None` when the device has no TIMESTAMP_QUERY.
pub fn op_times(gpu: &Gpu, ops: &[&Op]) -> Result<Option<Vec<f64>>> {
    if !gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
        return Ok(None);
    }
    let period = f64::from(gpu.queue.get_timestamp_period());
    let mut times = Vec::with_capacity(ops.len());
    // A query set holds at most 4096 queries: 2048 ops per batch.
    for batch in ops.chunks(2048) {
        let count = 2 * batch.len() as u32;
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("op times"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let bytes = u64::from(count) * 8;
        let resolved = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("op times"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = gpu.readback_buffer("op times readback", bytes);
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        for (i, op) in batch.iter().enumerate() {
            let writes = wgpu::ComputePassTimestampWrites {
                query_set: &set,
                beginning_of_pass_write_index: Some(2 * i as u32),
                end_of_pass_write_index: Some(2 * i as u32 + 1),
            };
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(writes) });
            op.encode(&mut pass);
        }
        enc.resolve_query_set(&set, 0..count, &resolved, 0);
        enc.copy_buffer_to_buffer(&resolved, 0, &staging, 0, bytes);
        let index = gpu.queue.submit([enc.finish()]);
        let ticks: Vec<u64> = gpu.map_and_read(&staging, index)?;
        times.extend(ticks.chunks_exact(2).map(|t| t[1].saturating_sub(t[0]) as f64 * period));
    }
    Ok(Some(times))
}

/// Peak and current resident memory of this process, from /proc (Linux), in bytes.
pub fn host_rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}
