//! Tokenizer: a `tokenizers::Tokenizer`, the model's chat template (rendered with minijinja),
//! and a streaming detokenizer that emits text only once it is whole UTF-8.

pub mod gguf;
mod stream;

pub use stream::StreamDecoder;

use crate::{Error, Result};
use serde::Serialize;
use std::path::Path;

/// One chat message, as the OpenAI API and chat templates know it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message { role: role.into(), content: content.into() }
    }
}

/// A model's tokenizer with its special tokens and chat template.
pub struct Tokenizer {
    pub inner: tokenizers::Tokenizer,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Prepend BOS when encoding a prompt (`add_bos_token`).
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// `tokenizer.json` plus, when present, `tokenizer_config.json` (special tokens, template).
    pub fn from_hf_dir(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        let json = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let config_path = dir.join("tokenizer_config.json");
        let config = match config_path.exists() {
            true => Some(std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?),
            false => None,
        };
        Self::from_hf_json(&json, config.as_deref())
    }

    /// From the contents of `tokenizer.json` and optionally `tokenizer_config.json`.
    pub fn from_hf_json(tokenizer_json: &[u8], tokenizer_config: Option<&str>) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json is not a valid tokenizer: {e}")))?;
        let mut tok = Tokenizer { inner, bos_token: None, eos_token: None, add_bos: false, chat_template: None };
        if let Some(text) = tokenizer_config {
            let config: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| Error::Tokenizer(format!("tokenizer_config.json is not valid JSON: {e}")))?;
            // Special tokens are written either as strings or as {"content": ...} objects.
            let token = |key: &str| match config.get(key) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(v) => v.get("content").and_then(|c| c.as_str()).map(String::from),
                None => None,
            };
            tok.bos_token = token("bos_token");
            tok.eos_token = token("eos_token");
            tok.add_bos = config.get("add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false);
            tok.chat_template = match config.get("chat_template") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                // A list of named templates: take the default one.
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str().map(String::from)),
                Some(_) => return Err(Error::Tokenizer("tokenizer_config.json: chat_template is not a string".into())),
            };
        }
        Ok(tok)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_token.as_deref().and_then(|t| self.token_id(t))
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_token.as_deref().and_then(|t| self.token_id(t))
    }

    /// Encodes text. Special tokens written in the text (`<|im_start|>`) become their ids;
    /// `add_bos` prepends BOS when the tokenizer asks for it and the text does not start with it.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, false).map_err(tok_err)?;
        let mut ids = encoding.get_ids().to_vec();
        if add_bos && self.add_bos {
            if let Some(bos) = self.bos_id() {
                if ids.first() != Some(&bos) {
                    ids.insert(0, bos);
                }
            }
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// Renders the chat template for `messages`.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| Error::ChatTemplate("this model has no chat template".into()))?;
        let specials = ChatSpecials { bos_token: self.bos_token.as_deref(), eos_token: self.eos_token.as_deref() };
        render_chat_template(template, messages, add_generation_prompt, specials, &serde_json::Map::new())
    }
}

/// The special tokens a chat template may refer to; transformers leaves absent ones undefined.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChatSpecials<'a> {
    pub bos_token: Option<&'a str>,
    pub eos_token: Option<&'a str>,
}

/// Renders a Hugging Face chat template as transformers does: Jinja with trim_blocks and
/// lstrip_blocks, Python string methods, `raise_exception`, and the variables `messages`,
/// `add_generation_prompt`, the special tokens, and any `extra` keyword arguments (such as
/// Qwen3's `enable_thinking`).
pub fn render_chat_template(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    specials: ChatSpecials,
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    // transformers renders with trim_blocks and lstrip_blocks.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template).map_err(|e| Error::ChatTemplate(e.to_string()))?;
    let mut vars = extra.clone();
    vars.insert("messages".into(), serde_json::to_value(messages).expect("messages serialize"));
    vars.insert("add_generation_prompt".into(), add_generation_prompt.into());
    if let Some(bos) = specials.bos_token {
        vars.insert("bos_token".into(), bos.into());
    }
    if let Some(eos) = specials.eos_token {
        vars.insert("eos_token".into(), eos.into());
    }
    let ctx = minijinja::Value::from_serialize(&vars);
    env.get_template("chat").and_then(|t| t.render(ctx)).map_err(|e| Error::ChatTemplate(e.to_string()))
}
