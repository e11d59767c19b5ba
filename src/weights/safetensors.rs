//! safetensors checkpoints: one file, or shards listed by `model.safetensors.index.json`.
//!
//! Headers are parsed and validated by the `safetensors` crate (offsets contiguous, sizes
//! matching dtype x shape, header inside the file); each tensor's bytes are borrowed from the
//! memory map only after that.

use super::{Bytes, DType, Tensor, TensorSource};
use crate::{Error, Result};
use safetensors::tensor::{Dtype, Metadata, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// One validated safetensors file.
struct File {
    name: String,
    /// The file's bytes from `window_start` on: the whole file, or (loading part by part) the
    /// span of the tensors being loaded.
    bytes: Bytes,
    window_start: usize,
    /// Start of the data section: 8 + header length.
    data_start: usize,
    file_len: u64,
    metadata: Arc<Metadata>,
}

impl File {
    fn open(path: &Path) -> Result<File> {
        let bytes = Bytes::open(path)?;
        Self::from_bytes(path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()), bytes)
    }

    fn from_bytes(name: String, bytes: Bytes) -> Result<File> {
        let problem = |p: String| Error::Safetensors { file: name.clone(), problem: p };
        let (header_len, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| problem(e.to_string()))?;
        // read_metadata checked that the tensors tile the data section exactly.
        let file_len = bytes.len() as u64;
        Ok(File { name, bytes, window_start: 0, data_start: 8 + header_len, file_len, metadata: Arc::new(metadata) })
    }

    /// The header alone, from a prefix of a file of `file_len` bytes, checked as
    /// `from_bytes` checks a whole file. No tensor can be read until a window supplies it.
    fn from_header(name: String, prefix: &[u8], file_len: u64) -> Result<File> {
        let problem = |p: String| Error::Safetensors { file: name.clone(), problem: p };
        let n = prefix.get(..8).ok_or_else(|| problem("shorter than its 8-byte header length".into()))?;
        let n = u64::from_le_bytes(n.try_into().expect("8 bytes"));
        let header = usize::try_from(n)
            .ok()
            .and_then(|n| prefix.get(8..8 + n))
            .ok_or_else(|| problem(format!("the header of {n} bytes is not within the {} bytes read", prefix.len())))?;
        let text = std::str::from_utf8(header).map_err(|e| problem(format!("the header is not UTF-8: {e}")))?;
        // Deserializing checks that the tensors tile the data section; then it must end the file.
        let metadata: Metadata = serde_json::from_str(text).map_err(|e| problem(format!("bad header: {e}")))?;
        if 8 + n + metadata.data_len() as u64 != file_len {
            return Err(problem(format!(
                "the tensors end at byte {} but the file has {file_len}",
                8 + n + metadata.data_len() as u64
            )));
        }
        let data_start = 8 + n as usize;
        Ok(File { name, bytes: Vec::new().into(), window_start: 0, data_start, file_len, metadata: Arc::new(metadata) })
    }

    /// The same file with bytes `start..start + bytes.len()` in hand.
    fn window(&self, start: u64, bytes: Bytes) -> File {
        File {
            name: self.name.clone(),
            bytes,
            window_start: start as usize,
            data_start: self.data_start,
            file_len: self.file_len,
            metadata: self.metadata.clone(),
        }
    }

    /// The file span `[start, end)` of a tensor's data.
    fn span(&self, name: &str) -> Option<(u64, u64)> {
        let (a, b) = self.metadata.info(name)?.data_offsets;
        Some(((self.data_start + a) as u64, (self.data_start + b) as u64))
    }

    /// Dtype, shape and bytes; `None` when absent or (part by part) not among the bytes loaded.
    fn raw(&self, name: &str) -> Option<(Dtype, &[usize], &[u8])> {
        let info = self.metadata.info(name)?;
        let (a, b) = info.data_offsets;
        let (a, b) = (
            (self.data_start + a).checked_sub(self.window_start)?,
            (self.data_start + b).checked_sub(self.window_start)?,
        );
        Some((info.dtype, &info.shape, self.bytes.get(a..b)?))
    }
}

/// A safetensors checkpoint, possibly sharded.
pub struct SafetensorsCheckpoint {
    files: Vec<File>,
    /// Tensor name -> index into `files`, in sorted order.
    index: BTreeMap<String, usize>,
}

impl SafetensorsCheckpoint {
    /// Opens `model.safetensors`, or the shards named by `model.safetensors.index.json`, in `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let shards = shard_names(&text)?;
            let mut files = Vec::new();
            let mut position = HashMap::new();
            for shard in shards.values() {
                if !position.contains_key(shard) {
                    position.insert(shard.clone(), files.len());
                    files.push(File::open(&dir.join(shard))?);
                }
            }
            let checkpoint = Self::from_files(files)?;
            for (tensor, shard) in &shards {
                match checkpoint.index.get(tensor) {
                    Some(&i) if i == position[shard] => {}
                    _ => {
                        return Err(Error::Safetensors {
                            file: "model.safetensors.index.json".into(),
                            problem: format!("tensor `{tensor}` is not in shard {shard}"),
                        })
                    }
                }
            }
            Ok(checkpoint)
        } else {
            Self::from_files(vec![File::open(&dir.join("model.safetensors"))?])
        }
    }

    /// A checkpoint from in-memory file contents (the browser path, and tests).
    pub fn from_bytes(files: Vec<(String, Bytes)>) -> Result<Self> {
        let files = files.into_iter().map(|(n, b)| File::from_bytes(n, b)).collect::<Result<_>>()?;
        Self::from_files(files)
    }

    fn from_files(files: Vec<File>) -> Result<Self> {
        let mut index = BTreeMap::new();
        for (i, file) in files.iter().enumerate() {
            for name in file.metadata.tensors().into_keys() {
                if let Some(j) = index.insert(name.clone(), i) {
                    return Err(Error::Safetensors {
                        file: file.name.clone(),
                        problem: format!("tensor `{name}` also appears in {}", files[j].name),
                    });
                }
            }
        }
        Ok(SafetensorsCheckpoint { files, index })
    }

    /// The raw dtype, shape and bytes of a tensor (GPTQ integer tensors are read this way).
    pub fn raw(&self, name: &str) -> Option<(Dtype, &[usize], &[u8])> {
        self.files[*self.index.get(name)?].raw(name)
    }

    /// A checkpoint of headers only: `(file name, a prefix holding its header, file length)` per
    /// file. Loading part by part lends each part's bytes to it with [`Self::window`].
    pub fn from_headers(headers: Vec<(String, Vec<u8>, u64)>) -> Result<Self> {
        let files =
            headers.into_iter().map(|(n, prefix, len)| File::from_header(n, &prefix, len)).collect::<Result<_>>()?;
        Self::from_files(files)
    }

    /// The same checkpoint with some bytes in hand: `(file index, start, bytes)` spans.
    pub fn window(&self, spans: Vec<(usize, u64, Bytes)>) -> Result<Self> {
        let mut files: Vec<File> = self.files.iter().map(|f| f.window(0, Vec::new().into())).collect();
        for (i, start, bytes) in spans {
            let file = files.get_mut(i).ok_or_else(|| Error::Request(format!("file #{i} is not in the checkpoint")))?;
            *file = self.files[i].window(start, bytes);
        }
        Ok(SafetensorsCheckpoint { files, index: self.index.clone() })
    }

    /// File names, in the order `window` and `spans_of` number them.
    pub fn file_names(&self) -> Vec<String> {
        self.files.iter().map(|f| f.name.clone()).collect()
    }

    /// Per file holding any of `names`: `(file index, start, end)` covering their data.
    pub fn spans_of(&self, names: &[String]) -> Result<Vec<(usize, u64, u64)>> {
        let mut spans: Vec<(usize, u64, u64)> = Vec::new();
        for name in names {
            let i = *self.index.get(name).ok_or_else(|| Error::MissingTensor(name.clone()))?;
            let (a, b) = self.files[i].span(name).expect("indexed names are in their file");
            match spans.iter_mut().find(|s| s.0 == i) {
                Some(s) => (s.1, s.2) = (s.1.min(a), s.2.max(b)),
                None => spans.push((i, a, b)),
            }
        }
        Ok(spans)
    }
}

impl SafetensorsCheckpoint {
    fn info(&self, name: &str) -> Option<&safetensors::tensor::TensorInfo> {
        self.files[*self.index.get(name)?].metadata.info(name)
    }
}

/// `weight_map` of an index file: tensor name -> shard file name.
fn shard_names(text: &str) -> Result<BTreeMap<String, String>> {
    let problem = |p: &str| Error::Safetensors { file: "model.safetensors.index.json".into(), problem: p.into() };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| problem(&e.to_string()))?;
    let map = value.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| problem("no `weight_map` object"))?;
    let mut shards = BTreeMap::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| problem(&format!("shard of `{tensor}` is not a string")))?;
        // A shard is a file beside the index, never a path elsewhere.
        if file.contains('/') || file.contains('\\') || file == ".." || file.is_empty() {
            return Err(problem(&format!("shard name `{file}` is not a plain file name")));
        }
        shards.insert(tensor.clone(), file.to_string());
    }
    Ok(shards)
}

fn dtype_of(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        _ => return None,
    })
}

impl TensorSource for SafetensorsCheckpoint {
    fn names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        Some(self.info(name)?.shape.clone())
    }

    fn dtype(&self, name: &str) -> Option<DType> {
        dtype_of(self.info(name)?.dtype)
    }

    fn load_f32(&self, name: &str) -> Result<Tensor> {
        if self.info(name).is_none() {
            return Err(Error::MissingTensor(name.into()));
        }
        let (dtype, shape, bytes) =
            self.raw(name).ok_or_else(|| Error::tensor(name, "its data is not among the bytes loaded"))?;
        let data = match dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => return Err(Error::tensor(name, format!("dtype {other:?} is not a float type flint reads"))),
        };
        Ok(Tensor::new(shape.to_vec(), data))
    }

    fn size_in_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.file_len).sum()
    }
}
