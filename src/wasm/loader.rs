//! Loading a GGUF part by part (filled in below).
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
pub struct GgufLoader {}
