//! Loading a model part by part (the browser's path: no file is ever whole in memory) gives the
//! same model as loading it whole, for GGUF files and safetensors folders (sharded, GPTQ), and
//! every misuse is an error that names the problem.

mod common;

use common::{fixture, relative_error, require_real_model, Reference};
use flint::engine::build::Capacity;
use flint::engine::streamed::StreamedModel;
use flint::gpu::kernels::KvFormat;
use flint::gpu::model::GpuModel;
use flint::gpu::{Backend, Gpu};
use flint::ModelFiles;
use std::path::Path;
use std::sync::Arc;

const CHUNK: u32 = 16;
const CTX: u32 = 64;
/// f32: the streamed model is compared with transformers at the f32 tolerance.
const KV: KvFormat = KvFormat::F32;

fn gpu() -> Arc<Gpu> {
    Arc::new(Gpu::new_blocking(Backend::Auto).expect("a GPU adapter (lavapipe in CI)"))
}

fn open_gguf(gpu: &Arc<Gpu>, bytes: &[u8], prefix: usize) -> flint::Result<StreamedModel> {
    StreamedModel::gguf(gpu.clone(), &bytes[..prefix.min(bytes.len())], bytes.len() as u64, |_| Capacity {
        chunk: CHUNK,
        ctx: CTX,
        kv: KV,
    })
}

/// A folder's safetensors files, each given by its header alone, as the browser reads them.
fn open_folder(gpu: &Arc<Gpu>, dir: &Path) -> (StreamedModel, Vec<Vec<u8>>) {
    let mut shards: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    shards.sort();
    let contents: Vec<Vec<u8>> = shards.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let headers = shards
        .iter()
        .zip(&contents)
        .map(|(p, c)| {
            let n = u64::from_le_bytes(c[..8].try_into().unwrap()) as usize;
            (p.file_name().unwrap().to_string_lossy().into_owned(), c[..8 + n].to_vec(), c.len() as u64)
        })
        .collect();
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    (
        StreamedModel::safetensors(gpu.clone(), &config, None, headers, |_| Capacity {
            chunk: CHUNK,
            ctx: CTX,
            kv: KV,
        })
        .unwrap(),
        contents,
    )
}

/// Feeds every part from `files` (the whole contents, indexed as the spans index them).
fn feed(mut s: StreamedModel, files: &[Vec<u8>]) -> GpuModel {
    for (i, spans) in s.spans().into_iter().enumerate() {
        let buffers = spans.iter().map(|&(f, a, b)| files[f][a as usize..b as usize].to_vec()).collect();
        s.add(i, buffers).expect("part loads");
    }
    s.finish().expect("every part added").0
}

#[test]
fn real_model_streamed_equals_whole() {
    let Some(path) = require_real_model() else { return };
    let gpu = gpu();
    let bytes = std::fs::read(&path).unwrap();
    let files = ModelFiles::open(&path).unwrap();
    let whole = GpuModel::new(gpu.clone(), &files.config, &files.load_weights().unwrap(), CHUNK, CTX, KV).unwrap();
    let parts = feed(open_gguf(&gpu, &bytes, 4 << 20).unwrap(), &[bytes]);
    let tokens = [1, 504, 3575, 282, 4649, 314];
    // Same bytes, same kernels, same order of operations: the logits are identical.
    assert_eq!(parts.forward(&tokens, 0).unwrap(), whole.forward(&tokens, 0).unwrap());
    assert_eq!(parts.weight_bytes, whole.weight_bytes);
}

/// GGUF (MoE, Q4_0), sharded bf16-free safetensors (qwen3_moe), GPTQ (mixtral), f16 (granite):
/// each against transformers. As in gpu_parity.rs: f32 kernels vs transformers' f32 on the same
/// weights (measured ~1e-6); 1e-3 is far below what a misplaced expert or layer gives.
#[test]
fn fixtures_streamed_match_transformers() {
    let gpu = gpu();
    for name in ["qwen2_moe-q4_0", "qwen3_moe", "mixtral-gptq", "granitemoe"] {
        let dir = fixture(name);
        let model = match name.ends_with("-q4_0") {
            true => {
                let bytes = std::fs::read(dir.join("model.gguf")).unwrap();
                feed(open_gguf(&gpu, &bytes, 1 << 20).unwrap(), &[bytes])
            }
            false => {
                let (s, contents) = open_folder(&gpu, &dir);
                feed(s, &contents)
            }
        };
        let reference = Reference::of(&dir);
        let error = relative_error(&model.forward(&reference.tokens, 0).unwrap(), &reference.logits);
        assert!(error < 1e-3, "{name}: {error}");
    }
}

#[test]
fn misuse_is_an_error_that_names_it() {
    let bytes = std::fs::read(fixture("llama-q4_0").join("model.gguf")).unwrap();
    let gpu = gpu();

    let short = open_gguf(&gpu, &bytes, 64).err().expect("64 bytes cannot hold the header").to_string();
    assert!(short.contains("truncated read"), "{short}");

    let mut s = open_gguf(&gpu, &bytes, bytes.len()).unwrap();
    let spans = s.spans();
    let piece = |i: usize| vec![bytes[spans[i][0].1 as usize..spans[i][0].2 as usize].to_vec()];
    let err = s.add(1, piece(1)).unwrap_err().to_string();
    assert!(err.contains("part 1 was given; part 0 comes next"), "{err}");
    let err = s.add(0, vec![vec![0; 3]]).unwrap_err().to_string();
    assert!(err.contains("but 3 bytes came"), "{err}");
    let err = s.add(0, vec![]).unwrap_err().to_string();
    assert!(err.contains("but 0 buffers came"), "{err}");
    let err = s.add(spans.len(), vec![]).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    s.add(0, piece(0)).unwrap();
    let err = s.finish().err().expect("unfinished").to_string();
    assert!(err.contains(&format!("1 of {} parts were added", spans.len())), "{err}");

    // A safetensors header that claims more bytes than the file has.
    let dir = fixture("llama");
    let file = std::fs::read(dir.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let headers = vec![("model.safetensors".to_string(), file[..8 + n].to_vec(), file.len() as u64 - 4)];
    let err = StreamedModel::safetensors(gpu.clone(), &config, None, headers, |_| Capacity {
        chunk: CHUNK,
        ctx: CTX,
        kv: KV,
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains("but the file has"), "{err}");
}
