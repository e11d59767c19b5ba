//! Models named by a Hugging Face repo id (`owner/name`), fetched into the standard hub cache
//! (`$HF_HOME/hub`, else `~/.cache/huggingface/hub`) so other tools share the download.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Files a model folder needs besides its safetensors.
const FOLDER_FILES: [&str; 4] = ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"];

/// `model` itself when it exists on disk; else, when it reads as a repo id, the downloaded
/// snapshot folder. A name that is neither is an error saying both were tried.
pub fn resolve(model: &Path) -> Result<PathBuf> {
    if model.exists() {
        return Ok(model.to_path_buf());
    }
    let text = model.to_string_lossy();
    let parts: Vec<&str> = text.split('/').collect();
    let repo_like = parts.len() == 2
        && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        && !text.starts_with('.');
    if !repo_like {
        return Err(Error::io(model, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder")));
    }
    download(&text)
}

fn download(repo_id: &str) -> Result<PathBuf> {
    let hub_error = |e: hf_hub::api::sync::ApiError| {
        Error::Hub(format!(
            "`{repo_id}` is not a local path, and downloading it from huggingface.co failed: {e} \
             (without network access, pass a local model folder or .gguf file)"
        ))
    };
    tracing::info!("downloading {repo_id} from huggingface.co");
    let api = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true).build().map_err(hub_error)?;
    let repo = api.model(repo_id.to_string());
    let info = repo.info().map_err(hub_error)?;
    let names: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let config = match names.contains(&"config.json") {
        true => repo.get("config.json").map_err(hub_error)?,
        false => {
            // A GGUF repo: take its first .gguf file.
            let gguf = names
                .iter()
                .find(|n| n.ends_with(".gguf"))
                .ok_or_else(|| Error::Hub(format!("{repo_id} has neither config.json nor a .gguf file")))?;
            return repo.get(gguf).map_err(hub_error);
        }
    };
    for name in names.iter().filter(|n| n.ends_with(".safetensors") || n.ends_with(".safetensors.index.json")) {
        repo.get(name).map_err(hub_error)?;
    }
    for name in FOLDER_FILES.iter().filter(|n| names.contains(n)) {
        repo.get(name).map_err(hub_error)?;
    }
    Ok(config.parent().expect("a downloaded file lies in its snapshot folder").to_path_buf())
}
