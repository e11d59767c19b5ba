//! Opening a model: a Hugging Face folder (config.json + safetensors, optionally GPTQ) or a
//! `.gguf` file, giving its normalized config, its tensors and its tokenizer.

use crate::config::gguf::config_from_gguf;
use crate::config::{self, ModelConfig};
use crate::format::gguf::GgufFile;
use crate::tokenizer::Tokenizer;
use crate::weights::gptq::{GptqCheckpoint, GptqConfig};
use crate::weights::names::{Names, Scheme};
use crate::weights::safetensors::SafetensorsCheckpoint;
use crate::weights::TensorSource;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// A model's files, opened and checked: config, tensors (not yet loaded) and tokenizer.
pub struct ModelFiles {
    pub path: PathBuf,
    pub config: ModelConfig,
    pub tensors: Box<dyn TensorSource>,
    pub names: Names,
    /// `None` for a folder without `tokenizer.json` or a GGUF without an embedded vocabulary.
    pub tokenizer: Option<Tokenizer>,
    /// How the file stores its weights, in words (`"safetensors f32"`, `"GGUF Q4_1"`).
    pub format: String,
}

impl ModelFiles {
    pub fn open(path: &Path) -> Result<ModelFiles> {
        if path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            Self::open_gguf(path)
        } else if path.join("config.json").is_file() {
            Self::open_hf_dir(path)
        } else if !path.exists() {
            Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder")))
        } else {
            Err(Error::ModelPath(path.to_path_buf()))
        }
    }

    fn open_hf_dir(dir: &Path) -> Result<ModelFiles> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let tokenizer = match dir.join("tokenizer.json").is_file() {
            true => Some(Tokenizer::from_hf_dir(dir)?),
            false => None,
        };
        Self::from_hf_parts(dir, &text, SafetensorsCheckpoint::open_dir(dir)?, tokenizer)
    }

    pub(crate) fn from_hf_parts(
        dir: &Path,
        config_text: &str,
        checkpoint: SafetensorsCheckpoint,
        tokenizer: Option<Tokenizer>,
    ) -> Result<ModelFiles> {
        let json: serde_json::Value = serde_json::from_str(config_text)?;
        let obj = json.as_object().ok_or_else(|| Error::Config("top level is not a JSON object".into()))?;
        let config = config::hf::from_json(obj)?;
        let (tensors, format) = hf_tensors(&json, checkpoint)?;
        let names = Names { scheme: Scheme::HuggingFace, family: config.family };
        Ok(ModelFiles { path: dir.to_path_buf(), config, tensors, names, tokenizer, format })
    }

    fn open_gguf(path: &Path) -> Result<ModelFiles> {
        Self::from_gguf(path, GgufFile::open(path)?)
    }

    pub(crate) fn from_gguf(path: &Path, file: GgufFile) -> Result<ModelFiles> {
        let config = config_from_gguf(&file)?;
        let tokenizer = crate::tokenizer::gguf::from_gguf(&file)?.map(|g| Tokenizer {
            bos_token: g.bos_token_id.and_then(|id| g.tokenizer.id_to_token(id)),
            eos_token: g.eos_token_id.and_then(|id| g.tokenizer.id_to_token(id)),
            inner: g.tokenizer,
            add_bos: g.add_bos,
            chat_template: g.chat_template,
        });
        let format = format!("GGUF {}", dtype_summary(&file));
        let names = Names { scheme: Scheme::Gguf, family: config.family };
        Ok(ModelFiles { path: path.to_path_buf(), config, tensors: Box::new(file), names, tokenizer, format })
    }

    /// Loads every weight in the packed format the GPU reads.
    pub fn load_weights(&self) -> Result<crate::weights::model::ModelWeights> {
        crate::weights::model::ModelWeights::load(&self.config, self.tensors.as_ref(), &self.names)
    }

    /// Loads every weight into the CPU reference model.
    pub fn load_reference(&self) -> Result<crate::reference::ReferenceModel> {
        let weights = crate::reference::Weights::from_packed(&self.load_weights()?);
        Ok(crate::reference::ReferenceModel::new(self.config.clone(), weights))
    }

    /// The token ids that end generation: the config's, else the tokenizer's EOS.
    pub fn stop_token_ids(&self) -> Vec<u32> {
        let mut ids = self.config.eos_token_ids.clone();
        if let Some(eos) = self.tokenizer.as_ref().and_then(|t| t.eos_id()) {
            if !ids.contains(&eos) {
                ids.push(eos);
            }
        }
        ids
    }
}

/// A folder's tensors as the loader reads them: GPTQ-unpacked when config.json says so; and
/// their format in words.
pub(crate) fn hf_tensors(
    config: &serde_json::Value,
    checkpoint: SafetensorsCheckpoint,
) -> Result<(Box<dyn TensorSource>, String)> {
    Ok(match GptqConfig::from_config_json(config)? {
        Some(q) => {
            let format =
                format!("GPTQ {}-bit, group {}", q.bits, q.group_size.map_or("per-channel".into(), |g| g.to_string()));
            (Box::new(GptqCheckpoint::new(checkpoint, q)), format)
        }
        None => {
            let format = format!("safetensors {}", dtype_summary(&checkpoint));
            (Box::new(checkpoint), format)
        }
    })
}

/// The element types of a checkpoint's tensors by count, most common first ("Q4_1 (169), F32 (61)").
fn dtype_summary(src: &dyn TensorSource) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for name in src.names() {
        let dtype = src.dtype(&name).map_or("other".to_string(), |d| format!("{d:?}"));
        match counts.iter_mut().find(|(d, _)| *d == dtype) {
            Some((_, n)) => *n += 1,
            None => counts.push((dtype, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts.iter().map(|(d, n)| format!("{d} ({n})")).collect::<Vec<_>>().join(", ")
}
