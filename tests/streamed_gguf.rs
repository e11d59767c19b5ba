//! Loading a GGUF part by part (the browser's path: the file is never whole in memory) gives the
//! same model as loading it whole, and every misuse is an error that names the problem.

mod common;

use common::{fixture, real_model, relative_error, Reference};
use flint::gpu::model::GpuModel;
use flint::gpu::streamed::StreamedGguf;
use flint::gpu::{Backend, Gpu};
use flint::ModelFiles;
use std::sync::Arc;

const CHUNK: u32 = 16;
const CTX: u32 = 64;

fn streamed(gpu: &Arc<Gpu>, bytes: &[u8], prefix: usize) -> flint::Result<StreamedGguf> {
    StreamedGguf::open(gpu.clone(), &bytes[..prefix.min(bytes.len())], bytes.len() as u64, |_| (CHUNK, CTX))
}

fn load_streamed(gpu: &Arc<Gpu>, bytes: &[u8]) -> GpuModel {
    let mut s = streamed(gpu, bytes, 4 << 20).expect("the header fits in 4 MiB");
    for (i, (a, b)) in s.spans().into_iter().enumerate() {
        s.add(i, bytes[a as usize..b as usize].to_vec()).expect("part loads");
    }
    s.finish().expect("every part added").0
}

#[test]
fn real_model_streamed_equals_whole() {
    let Some(path) = real_model() else { return };
    let gpu = Arc::new(Gpu::new_blocking(Backend::Auto).expect("a GPU adapter (lavapipe in CI)"));
    let bytes = std::fs::read(&path).unwrap();
    let files = ModelFiles::open(&path).unwrap();
    let whole = GpuModel::new(gpu.clone(), &files.config, &files.load_weights().unwrap(), CHUNK, CTX).unwrap();
    let parts = load_streamed(&gpu, &bytes);
    let tokens = [1, 504, 3575, 282, 4649, 314];
    // Same bytes, same kernels, same order of operations: the logits are identical.
    assert_eq!(parts.forward(&tokens, 0).unwrap(), whole.forward(&tokens, 0).unwrap());
    assert_eq!(parts.weight_bytes, whole.weight_bytes);
}

#[test]
fn moe_fixture_streamed_matches_transformers() {
    let dir = fixture("qwen2_moe-q4_0");
    let gpu = Arc::new(Gpu::new_blocking(Backend::Auto).unwrap());
    let model = load_streamed(&gpu, &std::fs::read(dir.join("model.gguf")).unwrap());
    let reference = Reference::of(&dir);
    let logits = model.forward(&reference.tokens, 0).unwrap();
    // As in gpu_parity.rs: f32 kernels vs transformers' f32 on the same snapped weights
    // (measured ~1e-6); 1e-3 is far below what a misplaced expert or layer gives.
    assert!(relative_error(&logits, &reference.logits) < 1e-3);
}

#[test]
fn misuse_is_an_error_that_names_it() {
    let dir = fixture("llama-q4_0");
    let bytes = std::fs::read(dir.join("model.gguf")).unwrap();
    let gpu = Arc::new(Gpu::new_blocking(Backend::Auto).unwrap());

    let short = streamed(&gpu, &bytes, 64).err().expect("64 bytes cannot hold the header").to_string();
    assert!(short.contains("truncated read"), "{short}");

    let mut s = streamed(&gpu, &bytes, bytes.len()).unwrap();
    let spans = s.spans();
    let (a, b) = spans[1];
    let err = s.add(1, bytes[a as usize..b as usize].to_vec()).unwrap_err().to_string();
    assert!(err.contains("part 1 was given; part 0 comes next"), "{err}");
    let err = s.add(0, vec![0; 3]).unwrap_err().to_string();
    assert!(err.contains("but 3 bytes came"), "{err}");
    let err = s.add(spans.len(), vec![]).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    let (a, b) = spans[0];
    s.add(0, bytes[a as usize..b as usize].to_vec()).unwrap();
    let err = s.finish().err().expect("unfinished").to_string();
    assert!(err.contains(&format!("1 of {} parts were added", spans.len())), "{err}");
}
