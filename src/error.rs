//! The crate's one error type. Every bad input maps to a variant that names the problem.

use std::path::PathBuf;

/// Everything that can go wrong in flint, by cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("config.json: {0}")]
    Config(String),

    #[error("config.json is not valid JSON: {0}")]
    ConfigJson(#[from] serde_json::Error),

    #[error("unknown model architecture `{0}` (supported: llama, mixtral, qwen2_moe, qwen3_moe, olmoe, granitemoe)")]
    UnknownArchitecture(String),

    #[error("config field `{field}`: {problem}")]
    ConfigField { field: String, problem: String },

    #[error("safetensors file {file}: {problem}")]
    Safetensors { file: String, problem: String },

    #[error("GGUF file: {0}")]
    Gguf(String),

    #[error("tensor `{name}`: {problem}")]
    Tensor { name: String, problem: String },

    #[error("missing tensor `{0}` in the checkpoint")]
    MissingTensor(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}")]
    ChatTemplate(String),

    #[error("model path {0} is neither a .gguf file nor a folder with config.json")]
    ModelPath(PathBuf),

    #[error("GPU: {0}")]
    Gpu(String),

    #[error("invalid request: {0}")]
    Request(String),

    #[error("Hugging Face Hub: {0}")]
    Hub(String),

    /// The server or terminal machinery (listening, threads, signals), not a request.
    #[error("{0}")]
    Service(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub(crate) fn field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::ConfigField { field: field.into(), problem: problem.into() }
    }
    pub(crate) fn tensor(name: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Tensor { name: name.into(), problem: problem.into() }
    }
}
