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

/// One validated safetensors file.
struct File {
    name: String,
    bytes: Bytes,
    /// Start of the data section: 8 + header length.
    data_start: usize,
    metadata: Metadata,
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
        Ok(File { name, bytes, data_start: 8 + header_len, metadata })
    }

    fn raw(&self, name: &str) -> Option<(Dtype, &[usize], &[u8])> {
        let info = self.metadata.info(name)?;
        let (a, b) = info.data_offsets;
        Some((info.dtype, &info.shape, &self.bytes[self.data_start + a..self.data_start + b]))
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
        self.raw(name).map(|(_, shape, _)| shape.to_vec())
    }

    fn dtype(&self, name: &str) -> Option<DType> {
        self.raw(name).and_then(|(dtype, _, _)| dtype_of(dtype))
    }

    fn load_f32(&self, name: &str) -> Result<Tensor> {
        let (dtype, shape, bytes) = self.raw(name).ok_or_else(|| Error::MissingTensor(name.into()))?;
        let data = match dtype {
            Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => return Err(Error::tensor(name, format!("dtype {other:?} is not a float type flint reads"))),
        };
        Ok(Tensor::new(shape.to_vec(), data))
    }

    fn size_in_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes.len() as u64).sum()
    }
}
