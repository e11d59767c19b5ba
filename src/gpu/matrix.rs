//! [`GpuMatrix`]: a [`PackedMatrix`] in GPU storage buffers, split by rows into chunks that each
//! fit one binding (128 MiB on lavapipe and many phones), as the matmul kernels read it.
//!
//! GPU layout of a chunk (rows `row0 .. row0 + rows` of the matrix):
//! - `qs`: the chunk's rows of `PackedMatrix::qs`, each row padded with zero words to a whole
//!   number of 16-byte vec4 units ([`GpuMatrix::row_vec4s`] of them), so a kernel reads rows with
//!   aligned `vec4<u32>` loads. Only Int4 rows of `16 (mod 32)` columns (group 16) and F32 rows
//!   of `cols % 4 != 0` need padding; other rows are uploaded as they are.
//! - `scales`: the chunk's rows of `PackedMatrix::scales`, unchanged ([`GpuMatrix::scale_stride`]
//!   u32 per row); F32 has none (a 4-byte placeholder buffer).
//!
//! Stacked experts (`rows = E * R`) are uploaded with `rows_per_unit = R`, so that a chunk
//! boundary never falls inside an expert.

use crate::gpu::Gpu;
use crate::quant::packed::{Format, PackedMatrix};
use crate::{Error, Result};

/// Rows `row0 .. row0 + rows` of a matrix in their own buffers.
pub struct MatrixChunk {
    pub row0: usize,
    pub rows: usize,
    pub qs: wgpu::Buffer,
    pub scales: wgpu::Buffer,
}

/// A weight matrix on the GPU, in one or more row chunks.
pub struct GpuMatrix {
    pub rows: usize,
    pub cols: usize,
    pub format: Format,
    /// Chunks hold whole multiples of this many rows (1, or rows per expert).
    pub rows_per_unit: usize,
    /// vec4<u32> units per row of `qs` (a row's words rounded up to a multiple of 4, divided by 4).
    pub row_vec4s: usize,
    /// u32 per row of `scales`.
    pub scale_stride: usize,
    pub chunks: Vec<MatrixChunk>,
}

impl GpuMatrix {
    /// Uploads `m`, split only where a binding requires it.
    pub fn upload(gpu: &Gpu, m: &PackedMatrix) -> Result<GpuMatrix> {
        Self::upload_with_limit(gpu, m, 1, gpu.max_binding_bytes())
    }

    /// Uploads a stack of experts (`m.rows = E * rows_per_expert`), split only between experts.
    pub fn upload_experts(gpu: &Gpu, m: &PackedMatrix, rows_per_expert: usize) -> Result<GpuMatrix> {
        Self::upload_with_limit(gpu, m, rows_per_expert, gpu.max_binding_bytes())
    }

    /// Uploads `m` in chunks of whole multiples of `rows_per_unit` rows whose `qs` and `scales`
    /// each take at most `max_bytes` (the chunks are as equal as the units allow). Errors when
    /// `m` is inconsistent, when `rows_per_unit` does not divide the rows, or when one unit alone
    /// exceeds `max_bytes`.
    pub fn upload_with_limit(gpu: &Gpu, m: &PackedMatrix, rows_per_unit: usize, max_bytes: u64) -> Result<GpuMatrix> {
        m.validate()?;
        let layout = MatrixLayout::new(m.rows, m.cols, m.format, rows_per_unit, max_bytes)?;
        let row_words = m.row_words();
        let (row_vec4s, scale_stride) = (layout.row_vec4s, layout.scale_stride);
        let chunks = layout
            .chunks
            .iter()
            .map(|&(row0, rows)| {
                let words = &m.qs[row0 * row_words..(row0 + rows) * row_words];
                let qs = if row_words == 4 * row_vec4s {
                    gpu.storage("matrix qs", words)
                } else {
                    let mut padded = vec![0u32; rows * 4 * row_vec4s];
                    for (dst, src) in padded.chunks_exact_mut(4 * row_vec4s).zip(words.chunks_exact(row_words)) {
                        dst[..row_words].copy_from_slice(src);
                    }
                    gpu.storage("matrix qs", &padded)
                };
                let scales = gpu.storage("matrix scales", &m.scales[row0 * scale_stride..(row0 + rows) * scale_stride]);
                MatrixChunk { row0, rows, qs, scales }
            })
            .collect();
        Ok(layout.with_chunks(chunks))
    }

    /// A zero-filled matrix of `layout`, for a kernel to write (generated weights).
    pub fn zeroed(gpu: &Gpu, layout: &MatrixLayout) -> GpuMatrix {
        let chunks = layout
            .chunks
            .iter()
            .map(|&(row0, rows)| {
                let (qs, scales) = layout.chunk_bytes(rows);
                MatrixChunk {
                    row0,
                    rows,
                    qs: gpu.storage_zeroed("matrix qs", qs),
                    scales: gpu.storage_zeroed("matrix scales", scales),
                }
            })
            .collect();
        layout.with_chunks(chunks)
    }

    /// Gate and up stacked as the SwiGLU epilogue of the matmul kernels reads them
    /// (`matmul::Out::SwiGlu`): for each of `units` FFNs (experts), its rows of `gate`, then its
    /// rows of `up`. See [`GpuMatrix::stack`].
    pub fn pair(gpu: &Gpu, gate: &GpuMatrix, up: &GpuMatrix, units: usize) -> Result<Option<GpuMatrix>> {
        match gate.rows == up.rows {
            true => Self::stack(gpu, &[gate, up], units),
            false => Ok(None),
        }
    }

    /// `parts` stacked by rows, unit by unit: for each of `units` blocks (experts; 1 for a dense
    /// matrix), its rows of each part in turn, in chunks of whole units. Copied on the GPU, so
    /// any feed's matrices stack (the caller frees the parts after). `None` when the parts
    /// differ in format or columns, or when a unit is too large for one binding: they then run
    /// as separate matmuls.
    pub fn stack(gpu: &Gpu, parts: &[&GpuMatrix], units: usize) -> Result<Option<GpuMatrix>> {
        let Some(first) = parts.first() else {
            return Ok(None);
        };
        let same = |m: &&GpuMatrix| {
            (m.cols, m.format, m.row_vec4s, m.scale_stride)
                == (first.cols, first.format, first.row_vec4s, first.scale_stride)
        };
        if units == 0 || !parts.iter().all(|m| same(m) && m.rows.is_multiple_of(units)) {
            return Ok(None);
        }
        let rows: usize = parts.iter().map(|m| m.rows).sum();
        let unit = rows / units;
        let Ok(layout) = MatrixLayout::new(rows, first.cols, first.format, unit, gpu.max_binding_bytes()) else {
            return Ok(None);
        };
        let stacked = GpuMatrix::zeroed(gpu, &layout);
        let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("stack") });
        let mut to = 0;
        for e in 0..units {
            for part in parts {
                let n = part.rows / units;
                stacked.copy_rows(&mut encoder, part, e * n, to, n)?;
                to += n;
            }
        }
        gpu.queue.submit([encoder.finish()]);
        Ok(Some(stacked))
    }

    /// Records copies of `n` rows of `src` from row `from` to row `to` of `self` (same layout).
    fn copy_rows(
        &self,
        enc: &mut wgpu::CommandEncoder,
        src: &GpuMatrix,
        from: usize,
        to: usize,
        n: usize,
    ) -> Result<()> {
        let (qs_row, scale_row) = (16 * self.row_vec4s as u64, 4 * self.scale_stride as u64);
        let mut done = 0;
        while done < n {
            let (s, d) = (src.chunk_of(from + done)?, self.chunk_of(to + done)?);
            let (s_row, d_row) = (from + done - s.row0, to + done - d.row0);
            let rows = (n - done).min(s.rows - s_row).min(d.rows - d_row);
            let r = rows as u64;
            enc.copy_buffer_to_buffer(&s.qs, s_row as u64 * qs_row, &d.qs, d_row as u64 * qs_row, r * qs_row);
            if scale_row > 0 {
                enc.copy_buffer_to_buffer(
                    &s.scales,
                    s_row as u64 * scale_row,
                    &d.scales,
                    d_row as u64 * scale_row,
                    r * scale_row,
                );
            }
            done += rows;
        }
        Ok(())
    }

    /// The chunk holding row `row`.
    fn chunk_of(&self, row: usize) -> Result<&MatrixChunk> {
        self.chunks
            .iter()
            .find(|c| (c.row0..c.row0 + c.rows).contains(&row))
            .ok_or_else(|| Error::Gpu(format!("row {row} is outside a matrix of {} rows", self.rows)))
    }

    /// Frees the matrix's buffers ([`Gpu::free`]).
    pub fn free(self, gpu: &Gpu) {
        for chunk in self.chunks {
            gpu.free(chunk.qs);
            gpu.free(chunk.scales);
        }
    }

    /// Bytes a pass over the whole matrix reads: values (padding included) and scales.
    pub fn bytes(&self) -> u64 {
        (4 * self.rows * (4 * self.row_vec4s + self.scale_stride)) as u64
    }
}

/// Where the rows of a matrix go on the GPU: the padded row length, and the row ranges of the
/// chunks (each a whole number of units, each fitting one binding). The one place that decides
/// it, so a memory plan counts exactly what an upload allocates.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixLayout {
    pub rows: usize,
    pub cols: usize,
    pub format: Format,
    pub rows_per_unit: usize,
    pub row_vec4s: usize,
    pub scale_stride: usize,
    /// `(row0, rows)` of each chunk.
    pub chunks: Vec<(usize, usize)>,
}

impl MatrixLayout {
    /// The layout of a `[rows, cols]` matrix of `format` in chunks of whole multiples of
    /// `rows_per_unit` rows whose values and scales each take at most `max_bytes`.
    pub fn new(rows: usize, cols: usize, format: Format, rows_per_unit: usize, max_bytes: u64) -> Result<Self> {
        format.check_shape(rows, cols).map_err(|p| Error::Gpu(format!("a [{rows}, {cols}] matrix: {p}")))?;
        if rows_per_unit == 0 || !rows.is_multiple_of(rows_per_unit) {
            return Err(Error::Gpu(format!("{rows} rows are not whole units of {rows_per_unit} rows")));
        }
        let row_vec4s = format.row_words(cols).div_ceil(4);
        let scale_stride = format.scale_words(cols);
        let unit_bytes = (4 * rows_per_unit * (4 * row_vec4s).max(scale_stride)) as u64;
        if unit_bytes > max_bytes {
            return Err(Error::Gpu(format!(
                "{rows_per_unit} rows of a {format:?} [{rows}, {cols}] matrix take {unit_bytes} bytes, more than one \
                 binding holds ({max_bytes})"
            )));
        }
        let units = rows / rows_per_unit;
        let per_chunk = if units == 0 { 1 } else { (max_bytes / unit_bytes) as usize };
        let n_chunks = units.div_ceil(per_chunk).max(1);
        let units_per_chunk = units.div_ceil(n_chunks).max(1);
        let mut chunks = Vec::with_capacity(n_chunks);
        let mut row0 = 0;
        while row0 < rows || chunks.is_empty() {
            let n = (units_per_chunk * rows_per_unit).min(rows - row0);
            chunks.push((row0, n));
            row0 += n;
        }
        Ok(MatrixLayout { rows, cols, format, rows_per_unit, row_vec4s, scale_stride, chunks })
    }

    /// Bytes of the `qs` and `scales` buffers of a chunk of `rows` rows, as [`Gpu`] allocates them
    /// (at least 4 bytes each: F32 has a placeholder for its absent scales).
    pub fn chunk_bytes(&self, rows: usize) -> (u64, u64) {
        ((16 * rows * self.row_vec4s).max(4) as u64, (4 * rows * self.scale_stride).max(4) as u64)
    }

    /// Bytes of every buffer of the matrix.
    pub fn allocated_bytes(&self) -> u64 {
        self.chunks.iter().map(|&(_, rows)| self.chunk_bytes(rows)).map(|(a, b)| a + b).sum()
    }

    fn with_chunks(&self, chunks: Vec<MatrixChunk>) -> GpuMatrix {
        GpuMatrix {
            rows: self.rows,
            cols: self.cols,
            format: self.format,
            rows_per_unit: self.rows_per_unit,
            row_vec4s: self.row_vec4s,
            scale_stride: self.scale_stride,
            chunks,
        }
    }
}
