//! GGUF parser (versions 2 and 3, little-endian): metadata, tensor directory, tensor bytes.
//! The tensors as a `TensorSource` are in `weights::gguf`; `ModelConfig` from the metadata in
//! `config::gguf`.
//!
//! Layout: magic `GGUF`, version u32, tensor count u64, metadata count u64, the metadata
//! key/value pairs, the tensor infos (name, dimension count u32, dimensions u64 each with the
//! innermost first, ggml type u32, offset u64 into the data section), then padding up to
//! `general.alignment` (32 when absent), then the data section.
//!
//! Every count, length and offset is checked against the bytes that remain before it is used:
//! a truncated or lying file is an `Error::Gguf` (or `Error::Tensor`) naming the problem, never
//! a panic, an out-of-bounds read or an allocation sized by an unchecked count.

use crate::tensor::{ggml, Bytes, DType};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// The alignment of the data section and of every tensor in it when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a GGUF tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Arrays nested deeper than this are rejected (real files nest at most one level).
const MAX_ARRAY_DEPTH: usize = 8;

/// One metadata value. The variant order follows the GGUF value-type numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    /// The GGUF name of this value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "uint8",
            MetaValue::I8(_) => "int8",
            MetaValue::U16(_) => "uint16",
            MetaValue::I16(_) => "int16",
            MetaValue::U32(_) => "uint32",
            MetaValue::I32(_) => "int32",
            MetaValue::F32(_) => "float32",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::Array(_) => "array",
            MetaValue::U64(_) => "uint64",
            MetaValue::I64(_) => "int64",
            MetaValue::F64(_) => "float64",
        }
    }

    /// Any integer value as i128 (every GGUF integer fits).
    fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// A non-negative integer of any integer type.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_i128().and_then(|v| u64::try_from(v).ok())
    }

    /// An integer of any integer type that fits i64.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// A number: either float type, or any integer type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// Where one tensor lives and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<u64>,
    /// The ggml type number as written in the file.
    pub ggml_type: u32,
    pub dtype: DType,
    /// Offset from the start of the data section.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Row-major shape, outermost first: the GGUF dimensions reversed.
    pub fn shape(&self) -> Vec<usize> {
        // Every dimension was checked to fit usize when the file was parsed.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file: metadata, tensor directory, and the bytes behind them.
pub struct GgufFile {
    header: Arc<Header>,
    /// The file's bytes from `window_start` on: the whole file, or (loading part by part) the
    /// span of the tensors being loaded.
    bytes: Bytes,
    window_start: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.header.version)
            .field("alignment", &self.header.alignment)
            .field("data_offset", &self.header.data_offset)
            .field("metadata_keys", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

fn gguf_err(msg: impl Into<String>) -> Error {
    Error::Gguf(msg.into())
}

/// A bounds-checked little-endian cursor over the header.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(gguf_err(format!(
                "truncated: {what} needs {n} bytes at offset {}, but the file ends at {}",
                self.pos,
                self.buf.len()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: u64 length then that many bytes of UTF-8.
    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let len = self.u64(&format!("the length of {what}"))?;
        if len > self.remaining() as u64 {
            return Err(gguf_err(format!(
                "{what} at offset {at} claims {len} bytes, past the end of the file ({} bytes remain)",
                self.remaining()
            )));
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| gguf_err(format!("{what} at offset {at} is not valid UTF-8 ({e})")))
    }
}

/// The fewest bytes one value of GGUF type `ty` can take; `None` for an unknown type.
fn min_value_size(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,     // u64 length, possibly empty
        9 => 4 + 8, // element type + count, possibly empty
        10..=12 => 8,
        _ => return None,
    })
}

fn read_value(r: &mut Reader, ty: u32, key: &str, depth: usize) -> Result<MetaValue> {
    let what = format!("the value of `{key}`");
    Ok(match ty {
        0 => MetaValue::U8(r.array::<1>(&what)?[0]),
        1 => MetaValue::I8(r.array::<1>(&what)?[0] as i8),
        2 => MetaValue::U16(u16::from_le_bytes(r.array(&what)?)),
        3 => MetaValue::I16(i16::from_le_bytes(r.array(&what)?)),
        4 => MetaValue::U32(u32::from_le_bytes(r.array(&what)?)),
        5 => MetaValue::I32(i32::from_le_bytes(r.array(&what)?)),
        6 => MetaValue::F32(f32::from_le_bytes(r.array(&what)?)),
        7 => match r.array::<1>(&what)?[0] {
            0 => MetaValue::Bool(false),
            1 => MetaValue::Bool(true),
            b => return Err(gguf_err(format!("metadata `{key}`: bool byte {b} is neither 0 nor 1"))),
        },
        8 => MetaValue::String(r.string(&what)?),
        9 => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(gguf_err(format!("metadata `{key}`: arrays nested deeper than {MAX_ARRAY_DEPTH}")));
            }
            let elem_ty = r.u32(&format!("the array element type of `{key}`"))?;
            let elem_size = min_value_size(elem_ty)
                .ok_or_else(|| gguf_err(format!("metadata `{key}`: unknown array element value type {elem_ty}")))?;
            let count = r.u64(&format!("the array length of `{key}`"))?;
            // Each element takes at least `elem_size` bytes: a count the rest of the file cannot
            // hold is a lie, caught before anything is allocated for it.
            if count > (r.remaining() / elem_size) as u64 {
                return Err(gguf_err(format!(
                    "metadata `{key}`: array count {count} is impossible, only {} bytes remain",
                    r.remaining()
                )));
            }
            let mut items = Vec::with_capacity(count as usize);
            for _ in 0..count {
                items.push(read_value(r, elem_ty, key, depth + 1)?);
            }
            MetaValue::Array(items)
        }
        10 => MetaValue::U64(u64::from_le_bytes(r.array(&what)?)),
        11 => MetaValue::I64(i64::from_le_bytes(r.array(&what)?)),
        12 => MetaValue::F64(f64::from_le_bytes(r.array(&what)?)),
        other => return Err(gguf_err(format!("metadata `{key}`: unknown value type {other}"))),
    })
}

fn align_up(x: u64, alignment: u64) -> Option<u64> {
    x.checked_add(alignment - 1).map(|v| v / alignment * alignment)
}

impl GgufFile {
    /// Maps (natively) or reads (wasm32) the file and parses it.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let bytes = Bytes::open(path)?;
        GgufFile::from_bytes(bytes).map_err(|e| match e {
            Error::Gguf(msg) => Error::Gguf(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses a whole GGUF file held in memory.
    pub fn from_bytes(bytes: Bytes) -> Result<GgufFile> {
        let header = parse_header(&bytes, bytes.len() as u64)?;
        Ok(GgufFile { header: Arc::new(header), bytes, window_start: 0 })
    }

    /// Parses the header of a file of `file_len` bytes from a prefix of it (`prefix` may run
    /// into the data section). No tensor can be read until [`GgufFile::window`] supplies its
    /// bytes. A prefix that ends inside the header is an error that says "truncated".
    pub fn from_header(prefix: &[u8], file_len: u64) -> Result<GgufFile> {
        let header = parse_header(prefix, file_len).map_err(|e| match e {
            Error::Gguf(msg) if (prefix.len() as u64) < file_len => Error::Gguf(format!(
                "the first {} bytes do not hold the whole header (truncated read: {msg})",
                prefix.len()
            )),
            other => other,
        })?;
        Ok(GgufFile { header: Arc::new(header), bytes: Vec::new().into(), window_start: 0 })
    }

    /// The same file with the bytes `start..start + bytes.len()` in hand: the tensors inside
    /// that span can be read.
    pub fn window(&self, start: u64, bytes: Bytes) -> GgufFile {
        GgufFile { header: self.header.clone(), bytes, window_start: start }
    }

    /// The file span `[start, end)` holding the data of `names`.
    pub fn span_of(&self, names: &[String]) -> Result<(u64, u64)> {
        let mut span: Option<(u64, u64)> = None;
        for name in names {
            let info = self.tensor_info(name).ok_or_else(|| Error::MissingTensor(name.clone()))?;
            let start = self.header.data_offset + info.offset;
            let end = start + info.n_bytes;
            span = Some(span.map_or((start, end), |(a, b)| (a.min(start), b.max(end))));
        }
        span.ok_or_else(|| gguf_err("no tensors asked for"))
    }

    pub fn version(&self) -> u32 {
        self.header.version
    }

    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Where the data section starts in the file.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.header.metadata
    }

    /// One metadata value by its full key.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.header.metadata.get(key)
    }

    /// A string metadata value; `None` when absent or not a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetaValue::as_str)
    }

    /// `general.architecture`, when present and a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.header.index.get(name).map(|&i| &self.header.tensors[i])
    }

    /// The raw bytes of a tensor, exactly as stored, with its type: for lossless repacking.
    pub fn tensor_bytes(&self, name: &str) -> Result<(DType, &[u8])> {
        let info = self.tensor_info(name).ok_or_else(|| Error::MissingTensor(name.into()))?;
        // Checked at parse time to lie inside the file.
        let start = (self.header.data_offset + info.offset).checked_sub(self.window_start);
        let data = start
            .and_then(|s| self.bytes.get(s as usize..(s + info.n_bytes) as usize))
            .ok_or_else(|| Error::tensor(name, "its data is not among the bytes loaded"))?;
        Ok((info.dtype, data))
    }
}

struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
}

/// Parses the header at the start of `buf`, checking every tensor against a file of `file_len`
/// bytes (`buf` may be the whole file or only a prefix that holds the header).
fn parse_header(buf: &[u8], file_len: u64) -> Result<Header> {
    if buf.is_empty() {
        return Err(gguf_err("the file is empty"));
    }
    let mut r = Reader { buf, pos: 0 };
    let magic = r.array::<4>("the magic")?;
    if &magic != b"GGUF" {
        return Err(gguf_err(format!(
            "bad magic {:?} (expected \"GGUF\"): not a GGUF file",
            String::from_utf8_lossy(&magic)
        )));
    }
    let version = r.u32("the version")?;
    match version {
        2 | 3 => {}
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(gguf_err("big-endian GGUF files are not supported"));
        }
        v => return Err(gguf_err(format!("unsupported GGUF version {v} (supported: 2 and 3)"))),
    }
    let tensor_count = r.u64("the tensor count")?;
    let kv_count = r.u64("the metadata count")?;

    // A key/value takes at least 8 (key length) + 4 (type) + 1 (smallest value) bytes.
    if kv_count > (r.remaining() / 13) as u64 {
        return Err(gguf_err(format!(
            "metadata count {kv_count} is impossible: only {} bytes remain in the file (truncated or corrupt)",
            r.remaining()
        )));
    }
    let mut metadata = BTreeMap::new();
    for i in 0..kv_count {
        let key = r.string(&format!("metadata key #{i}"))?;
        let ty = r.u32(&format!("the value type of `{key}`"))?;
        let value = read_value(&mut r, ty, &key, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(gguf_err(format!("duplicate metadata key `{key}`")));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() => a,
            Some(a) => return Err(gguf_err(format!("general.alignment {a} is not a power of two"))),
            None => return Err(gguf_err(format!("general.alignment is a {}, not an unsigned integer", v.type_name()))),
        },
    };

    // A tensor info takes at least 8 (name length) + 4 + 8 (one dimension) + 4 + 8 bytes.
    if tensor_count > (r.remaining() / 32) as u64 {
        return Err(gguf_err(format!(
            "tensor count {tensor_count} is impossible: only {} bytes remain for the tensor infos (truncated or corrupt)",
            r.remaining()
        )));
    }
    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut index = HashMap::with_capacity(tensor_count as usize);
    for i in 0..tensor_count {
        let info = read_tensor_info(&mut r, i, alignment)?;
        if index.insert(info.name.clone(), tensors.len()).is_some() {
            return Err(Error::tensor(&info.name, "duplicate tensor name"));
        }
        tensors.push(info);
    }

    let data_offset = align_up(r.pos as u64, alignment).ok_or_else(|| gguf_err("the data section offset overflows"))?;
    for t in &tensors {
        let end = data_offset.checked_add(t.offset).and_then(|s| s.checked_add(t.n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(Error::tensor(
                    &t.name,
                    format!(
                        "data at offset {} (+{} bytes) runs past the end of the file ({} bytes of data section)",
                        t.offset,
                        t.n_bytes,
                        file_len.saturating_sub(data_offset)
                    ),
                ))
            }
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.offset + a.n_bytes > b.offset {
            return Err(Error::tensor(
                &b.name,
                format!(
                    "data at offset {} overlaps tensor `{}` (offset {}, {} bytes)",
                    b.offset, a.name, a.offset, a.n_bytes
                ),
            ));
        }
    }

    Ok(Header { version, alignment, data_offset, metadata, tensors, index })
}

fn read_tensor_info(r: &mut Reader, i: u64, alignment: u64) -> Result<TensorInfo> {
    let name = r.string(&format!("the name of tensor #{i}"))?;
    let n_dims = r.u32(&format!("the dimension count of tensor `{name}`"))?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(Error::tensor(&name, format!("{n_dims} dimensions (must be 1 to {MAX_DIMS})")));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        dims.push(r.u64(&format!("dimension {d} of tensor `{name}`"))?);
    }
    let ggml_type = r.u32(&format!("the type of tensor `{name}`"))?;
    let offset = r.u64(&format!("the offset of tensor `{name}`"))?;

    let dtype = ggml::dtype_from_ggml(ggml_type).ok_or_else(|| match ggml::ggml_type_name(ggml_type) {
        Some(known) => Error::tensor(
            &name,
            format!(
                "ggml type {ggml_type} ({known}) is not supported; the nearest llama.cpp mixture flint reads is {}",
                ggml::nearest_mixture(ggml_type)
            ),
        ),
        None => Error::tensor(&name, format!("unknown ggml type {ggml_type}")),
    })?;
    let overflow = || Error::tensor(&name, format!("dimensions {dims:?} overflow the element count"));
    let mut n_elements: u64 = 1;
    for &d in &dims {
        n_elements = n_elements.checked_mul(d).ok_or_else(overflow)?;
    }
    if n_elements > i64::MAX as u64 || usize::try_from(n_elements).is_err() {
        return Err(overflow());
    }
    let (per_block, _) =
        ggml::block_info(dtype).ok_or_else(|| Error::tensor(&name, format!("{dtype:?} is not a ggml type")))?;
    if !dims[0].is_multiple_of(per_block as u64) {
        return Err(Error::tensor(
            &name,
            format!("innermost dimension {} is not a multiple of the {dtype:?} block size {per_block}", dims[0]),
        ));
    }
    let n_bytes = ggml::byte_size(dtype, n_elements).ok_or_else(overflow)?;
    if !offset.is_multiple_of(alignment) {
        return Err(Error::tensor(&name, format!("offset {offset} is not aligned to {alignment} bytes")));
    }
    Ok(TensorInfo { name, dims, ggml_type, dtype, offset, n_elements, n_bytes })
}
