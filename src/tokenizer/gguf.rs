//! The tokenizer embedded in a GGUF file's metadata, rebuilt as a `tokenizers::Tokenizer`.
//!
//! Supported: `tokenizer.ggml.model = "gpt2"`, byte-level BPE. The file holds the vocabulary
//! (`tokenizer.ggml.tokens`, id = position), the merges (`"left right"` strings, by rank), the
//! token types (`tokenizer.ggml.token_type`: 3 = control, 4 = user-defined) and the name of the
//! pre-tokenizer its vocabulary was trained with (`tokenizer.ggml.pre`, llama.cpp's names).
//!
//! What is built: a BPE model without unk token or byte fallback; a pre-tokenizer that splits
//! the text as llama.cpp does for that `pre` name and then maps bytes to GPT-2's byte-level
//! alphabet; the byte-level decoder; control tokens as special added tokens (matched whole in
//! text, so `<|im_start|>` is one id) and user-defined tokens as plain added tokens.

use crate::format::gguf::{GgufFile, MetaValue};
use crate::{Error, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

/// A tokenizer read from GGUF metadata, with the facts a runtime needs alongside it.
pub struct GgufTokenizer {
    pub tokenizer: tokenizers::Tokenizer,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` (false when absent): prepend BOS to a prompt.
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const TEKKEN_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

const GPT4O_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

/// How the text is cut before byte-level BPE, by `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreSplit {
    /// GPT-2's regex alone (what `ByteLevel(use_regex = true)` applies by itself).
    Gpt2,
    /// Every `\p{N}` split off on its own first, then GPT-2's regex (StarCoder, SmolLM, Granite).
    DigitsThenGpt2,
    /// One regex that replaces GPT-2's.
    Regex(&'static str),
}

/// llama.cpp's `tokenizer.ggml.pre` names, grouped by the split each one applies.
fn pre_split(pre: &str) -> Option<PreSplit> {
    Some(match pre {
        "default" | "gpt-2" | "gpt2" | "phi-2" | "olmo" | "mpt" | "jais" | "jina-es" | "jina-de" | "jina-v1-en"
        | "jina-v2-es" | "jina-v2-de" | "gigachat" | "trillion" | "granite-docling" => PreSplit::Gpt2,
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            PreSplit::DigitsThenGpt2
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" | "dbrx"
        | "smaug-bpe" => PreSplit::Regex(LLAMA3_SPLIT),
        "qwen2" | "deepseek-r1-qwen" | "megrez" | "stablelm2" => PreSplit::Regex(QWEN2_SPLIT),
        "tekken" => PreSplit::Regex(TEKKEN_SPLIT),
        "gpt-4o" | "llama4" | "minimax-m2" => PreSplit::Regex(GPT4O_SPLIT),
        _ => return None,
    })
}

fn tok_err(msg: impl Into<String>) -> Error {
    Error::Tokenizer(msg.into())
}

fn pre_tokenizer(split: PreSplit) -> Result<PreTokenizerWrapper> {
    let byte_level = |use_regex: bool| -> PreTokenizerWrapper { ByteLevel::new(false, true, use_regex).into() };
    Ok(match split {
        PreSplit::Gpt2 => byte_level(true),
        PreSplit::DigitsThenGpt2 => Sequence::new(vec![Digits::new(true).into(), byte_level(true)]).into(),
        PreSplit::Regex(regex) => {
            let split = Split::new(SplitPattern::Regex(regex.into()), SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| tok_err(format!("pre-tokenizer regex does not compile: {e}")))?;
            Sequence::new(vec![split.into(), byte_level(false)]).into()
        }
    })
}

/// Whether byte `b` stands for itself in GPT-2's byte-level alphabet (printable Latin-1).
fn byte_is_printable(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// GPT-2's byte-to-character table: printable Latin-1 bytes map to themselves, the other 68 to
/// U+0100..=U+0143 in byte order.
fn byte_level_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 0x100u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let code = if byte_is_printable(b as u8) {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).unwrap_or('\0');
    }
    table
}

/// Whether `c` is one of the 256 characters of GPT-2's byte-level alphabet.
fn in_byte_level_alphabet(c: char) -> bool {
    let c = c as u32;
    (0x100..=0x143).contains(&c) || u8::try_from(c).is_ok_and(byte_is_printable)
}

/// A string array from metadata, with a clear error when it is something else.
fn string_array<'a>(file: &'a GgufFile, key: &str) -> Result<Option<Vec<&'a str>>> {
    let Some(value) = file.get(key) else { return Ok(None) };
    let items = value
        .as_array()
        .ok_or_else(|| tok_err(format!("`{key}` is a {}, not an array of strings", value.type_name())))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| v.as_str().ok_or_else(|| tok_err(format!("`{key}`[{i}] is a {}, not a string", v.type_name()))))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn token_id(file: &GgufFile, key: &str, vocab_len: usize) -> Result<Option<u32>> {
    let Some(v) = file.get(key) else { return Ok(None) };
    match v.as_u64() {
        Some(id) if (id as usize) < vocab_len => Ok(Some(id as u32)),
        Some(id) => Err(tok_err(format!("`{key}` {id} is outside the vocabulary of {vocab_len} tokens"))),
        None => Err(tok_err(format!("`{key}` is a {}, not a token id", v.type_name()))),
    }
}

/// The tokenizer a GGUF file describes; `Ok(None)` when it has no `tokenizer.ggml.model`.
pub fn from_gguf(file: &GgufFile) -> Result<Option<GgufTokenizer>> {
    let model = match file.get("tokenizer.ggml.model") {
        None => return Ok(None),
        Some(v) => {
            v.as_str().ok_or_else(|| tok_err(format!("`tokenizer.ggml.model` is a {}, not a string", v.type_name())))?
        }
    };
    if model != "gpt2" {
        let what = match model {
            "llama" => " (SentencePiece)",
            "bert" => " (WordPiece)",
            "t5" => " (Unigram)",
            "rwkv" => " (RWKV)",
            _ => "",
        };
        return Err(tok_err(format!(
            "GGUF tokenizer model `{model}`{what} is not supported (only `gpt2`, byte-level BPE)"
        )));
    }

    let tokens = string_array(file, "tokenizer.ggml.tokens")?
        .ok_or_else(|| tok_err("GGUF file has `tokenizer.ggml.model` but no `tokenizer.ggml.tokens`"))?;
    if tokens.is_empty() || tokens.len() > u32::MAX as usize {
        return Err(tok_err(format!("`tokenizer.ggml.tokens` has {} entries", tokens.len())));
    }
    let merges = string_array(file, "tokenizer.ggml.merges")?
        .ok_or_else(|| tok_err("a `gpt2` GGUF tokenizer needs `tokenizer.ggml.merges`"))?;
    let token_types: Vec<i64> = match file.get("tokenizer.ggml.token_type") {
        None => vec![1; tokens.len()],
        Some(MetaValue::Array(items)) if items.len() == tokens.len() => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_i64().ok_or_else(|| tok_err(format!("`tokenizer.ggml.token_type`[{i}] is not an integer")))
            })
            .collect::<Result<_>>()?,
        Some(v) => {
            return Err(tok_err(format!(
                "`tokenizer.ggml.token_type` must be an integer array of {} entries, found {}{}",
                tokens.len(),
                v.type_name(),
                v.as_array().map(|a| format!(" of {}", a.len())).unwrap_or_default()
            )))
        }
    };
    let pre = match file.get("tokenizer.ggml.pre") {
        None => "default",
        Some(v) => {
            v.as_str().ok_or_else(|| tok_err(format!("`tokenizer.ggml.pre` is a {}, not a string", v.type_name())))?
        }
    };
    let split = pre_split(pre)
        .ok_or_else(|| tok_err(format!("GGUF pre-tokenizer `{pre}` (tokenizer.ggml.pre) is not supported")))?;

    // The vocabulary as the merges spell it. llama.cpp writes byte-level spellings; a normal
    // token whose text has characters outside that alphabet is respelled from its UTF-8 bytes.
    // Control and user-defined tokens keep their text: they are matched whole in the input.
    let alphabet = byte_level_alphabet();
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (id, (&text, &ty)) in tokens.iter().zip(&token_types).enumerate() {
        let whole = ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED;
        let key = if whole || text.chars().all(in_byte_level_alphabet) {
            text.to_string()
        } else {
            text.bytes().map(|b| alphabet[b as usize]).collect()
        };
        vocab.insert(key, id as u32);
    }
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => Ok((a.to_string(), b.to_string())),
            _ => Err(tok_err(format!("`tokenizer.ggml.merges`[{i}] `{m}` is not two tokens separated by a space"))),
        })
        .collect::<Result<Vec<_>>>()?;

    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| tok_err(format!("GGUF BPE vocabulary and merges do not fit together: {e}")))?;
    let mut tokenizer = tokenizers::Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer(split)?));
    tokenizer.with_decoder(Some(ByteLevelDecoder::new(false, false, true)));
    tokenizer.with_post_processor(Some(PostProcessorWrapper::ByteLevel(ByteLevel::new(false, false, true))));

    let added = |wanted: i64, special: bool| -> Vec<AddedToken> {
        tokens
            .iter()
            .zip(&token_types)
            .filter(|(t, &ty)| ty == wanted && !t.is_empty())
            .map(|(&t, _)| AddedToken::from(t, special).normalized(false))
            .collect()
    };
    let control = added(TOKEN_TYPE_CONTROL, true);
    if !control.is_empty() {
        tokenizer.add_special_tokens(&control);
    }
    let user = added(TOKEN_TYPE_USER_DEFINED, false);
    if !user.is_empty() {
        tokenizer.add_tokens(&user);
    }
    // Added tokens must keep the ids the file gave them.
    for (id, (&text, &ty)) in tokens.iter().zip(&token_types).enumerate() {
        let whole = ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED;
        if whole && !text.is_empty() && tokenizer.token_to_id(text) != Some(id as u32) {
            return Err(tok_err(format!("GGUF token `{text}` (id {id}) appears twice in the vocabulary")));
        }
    }

    let add_bos = match file.get("tokenizer.ggml.add_bos_token") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| tok_err(format!("`tokenizer.ggml.add_bos_token` is a {}, not a bool", v.type_name())))?,
    };
    let chat_template = match file.get("tokenizer.chat_template") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .ok_or_else(|| tok_err(format!("`tokenizer.chat_template` is a {}, not a string", v.type_name())))?
                .to_string(),
        ),
    };
    Ok(Some(GgufTokenizer {
        tokenizer,
        bos_token_id: token_id(file, "tokenizer.ggml.bos_token_id", tokens.len())?,
        eos_token_id: token_id(file, "tokenizer.ggml.eos_token_id", tokens.len())?,
        add_bos,
        chat_template,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_matches_gpt2() {
        let a = byte_level_alphabet();
        assert_eq!(a[b' ' as usize], 'Ġ');
        assert_eq!(a[b'\n' as usize], 'Ċ');
        assert_eq!(a[b'A' as usize], 'A');
        assert_eq!(a[0], 'Ā');
        assert_eq!(a[0xAD], 'Ń');
        let distinct: std::collections::HashSet<char> = a.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        for c in (0..0x200).filter_map(char::from_u32) {
            assert_eq!(in_byte_level_alphabet(c), distinct.contains(&c), "{c:?}");
        }
    }

    #[test]
    fn regexes_compile() {
        for pre in ["gpt2", "smollm", "llama-bpe", "qwen2", "tekken", "gpt-4o"] {
            pre_tokenizer(pre_split(pre).unwrap()).unwrap();
        }
        assert_eq!(pre_split("nonsense"), None);
    }
}
