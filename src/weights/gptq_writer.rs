//! Writing a GPTQ checkpoint from a Hugging Face folder: every decoder linear (attention,
//! dense and per-expert FFNs, shared experts) quantized on the GPTQ grid
//! ([`GptqMatrix`]), everything else (embeddings, output head, norms, routers, gates) copied
//! byte for byte in its source dtype, as GPTQ checkpoints keep them. The folder is what
//! transformers and vLLM read as GPTQ (`quantization_config` in config.json, v1
//! `checkpoint_format`, `desc_act: false`, `sym: false`) and what flint loads directly.

use super::names::{ExpertLayout, Names, Scheme};
use super::safetensors::SafetensorsCheckpoint;
use super::TensorSource;
use crate::config::{FfnKind, ModelConfig};
use crate::quant::gptq_grid::GptqMatrix;
use crate::{Error, Result};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::BTreeSet;
use std::path::Path;

/// Base names (without `.weight`) of the linears that a GPTQ checkpoint quantizes, those the
/// checkpoint holds. The same set as [`crate::weights::model::ModelWeights::quantize_gptq`]
/// quantizes: a fused or stacked expert tensor has no GPTQ form and is an error.
pub fn quantized_linears(config: &ModelConfig, src: &dyn TensorSource) -> Result<BTreeSet<String>> {
    let names = Names { scheme: Scheme::HuggingFace, family: config.family };
    let mut bases = BTreeSet::new();
    for (l, kind) in config.layer_ffn.iter().enumerate() {
        let n = names.layer(l);
        let mut candidates = vec![n.q, n.k, n.v, n.o];
        match (kind, &config.moe) {
            (FfnKind::Moe, Some(m)) => {
                candidates.extend([n.shared_gate, n.shared_up, n.shared_down]);
                let layouts = names.expert_layouts(l, m.num_experts);
                match layouts.iter().find(|layout| match layout {
                    ExpertLayout::PerExpert { gate, .. } => src.contains(&format!("{}.weight", gate[0])),
                    _ => false,
                }) {
                    Some(ExpertLayout::PerExpert { gate, up, down }) => {
                        candidates.extend(gate.iter().chain(up).chain(down).cloned())
                    }
                    _ => {
                        return Err(Error::Request(format!(
                            "layer {l} stores its experts fused or stacked; a GPTQ checkpoint needs one linear per \
                             expert (save the model with per-expert tensors first)"
                        )))
                    }
                }
            }
            _ => candidates.extend([n.gate, n.up, n.down]),
        }
        bases.extend(candidates.into_iter().filter(|b| src.contains(&format!("{b}.weight"))));
    }
    Ok(bases)
}

/// One output tensor, owned.
struct Out {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn words(values: impl IntoIterator<Item = u32>) -> Vec<u8> {
    values.into_iter().flat_map(u32::to_le_bytes).collect()
}

/// The four GPTQ tensors of one linear (v1: `qzeros` holds `z - 1`).
fn gptq_tensors(base: &str, m: &GptqMatrix) -> Vec<Out> {
    let (out_dim, in_dim, group) = (m.rows, m.cols, m.group);
    let (in_words, groups) = (in_dim / 8, in_dim / group);
    // qweight [in/8, out]: word (w, o) is row o's word w (same nibble order along the input).
    let qweight = words((0..in_words * out_dim).map(|i| m.qs[(i % out_dim) * in_words + i / out_dim]));
    let zero_words = out_dim.div_ceil(8);
    let mut qzeros = vec![0u32; groups * zero_words];
    for o in 0..out_dim {
        for g in 0..groups {
            let stored = u32::from(m.zeros[o * groups + g] - 1);
            qzeros[g * zero_words + o / 8] |= stored << (4 * (o % 8));
        }
    }
    let scales: Vec<u8> =
        (0..groups * out_dim).flat_map(|i| m.scales[(i % out_dim) * groups + i / out_dim].to_le_bytes()).collect();
    let g_idx = words((0..in_dim).map(|i| (i / group) as u32));
    vec![
        Out { name: format!("{base}.qweight"), dtype: Dtype::I32, shape: vec![in_words, out_dim], data: qweight },
        Out { name: format!("{base}.qzeros"), dtype: Dtype::I32, shape: vec![groups, zero_words], data: words(qzeros) },
        Out { name: format!("{base}.scales"), dtype: Dtype::F16, shape: vec![groups, out_dim], data: scales },
        Out { name: format!("{base}.g_idx"), dtype: Dtype::I32, shape: vec![in_dim], data: g_idx },
    ]
}

/// What [`write`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub quantized: usize,
    pub copied: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Quantizes the folder `src_dir` (config.json + safetensors) into `out_dir` with groups of
/// `group`; `progress(done, total, name)` is called as each tensor is written.
pub fn write(
    src_dir: &Path,
    config: &ModelConfig,
    out_dir: &Path,
    group: usize,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<Summary> {
    let config_path = src_dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let mut config_json: serde_json::Value = serde_json::from_str(&text)?;
    if config_json.get("quantization_config").is_some_and(|q| !q.is_null()) {
        return Err(Error::Request(format!(
            "{} is already quantized (config.json has quantization_config)",
            src_dir.display()
        )));
    }
    let src = SafetensorsCheckpoint::open_dir(src_dir)?;
    let linears = quantized_linears(config, &src)?;
    if out_dir.exists() && out_dir.read_dir().map_err(|e| Error::io(out_dir, e))?.next().is_some() {
        return Err(Error::io(
            out_dir,
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "the output folder exists and is not empty"),
        ));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;

    let names = src.names();
    let mut tensors = Vec::new();
    let mut summary = Summary { quantized: 0, copied: 0, bytes_in: src.size_in_bytes(), bytes_out: 0 };
    for (i, name) in names.iter().enumerate() {
        progress(i, names.len(), name);
        match name.strip_suffix(".weight").filter(|b| linears.contains(*b)) {
            Some(base) => {
                let t = src.load_f32(name)?;
                let [rows, cols] = t.shape[..] else {
                    return Err(Error::tensor(name, format!("a linear must be a matrix, found shape {:?}", t.shape)));
                };
                let m = GptqMatrix::quantize(rows, cols, &t.data, group)
                    .map_err(|e| crate::quant::packed::rename(e, name))?;
                tensors.extend(gptq_tensors(base, &m));
                summary.quantized += 1;
            }
            None => {
                let (dtype, shape, bytes) = src.raw(name).ok_or_else(|| Error::MissingTensor(name.clone()))?;
                tensors.push(Out { name: name.clone(), dtype, shape: shape.to_vec(), data: bytes.to_vec() });
                summary.copied += 1;
            }
        }
    }
    progress(names.len(), names.len(), "model.safetensors");
    let views = tensors
        .iter()
        .map(|t| {
            let view = TensorView::new(t.dtype, t.shape.clone(), &t.data)
                .map_err(|e| Error::tensor(&t.name, format!("cannot serialize: {e}")))?;
            Ok((t.name.as_str(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = Some(std::collections::HashMap::from([("format".to_string(), "pt".to_string())]));
    let model_path = out_dir.join("model.safetensors");
    safetensors::serialize_to_file(views, metadata, &model_path)
        .map_err(|e| Error::Safetensors { file: model_path.display().to_string(), problem: e.to_string() })?;
    summary.bytes_out = std::fs::metadata(&model_path).map_err(|e| Error::io(&model_path, e))?.len();

    let quantization = serde_json::json!({
        "quant_method": "gptq",
        "bits": 4,
        "group_size": group,
        "desc_act": false,
        "sym": false,
        "checkpoint_format": "gptq",
    });
    config_json["quantization_config"] = quantization.clone();
    write_json(&out_dir.join("config.json"), &config_json)?;
    // AutoGPTQ-era tools read the same settings from quantize_config.json.
    write_json(&out_dir.join("quantize_config.json"), &quantization)?;
    copy_side_files(src_dir, out_dir)?;
    Ok(summary)
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialize");
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

/// Tokenizer, generation config, chat template and the like: every top-level file that is not
/// a weight file or config.json.
fn copy_side_files(src_dir: &Path, out_dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(src_dir).map_err(|e| Error::io(src_dir, e))? {
        let entry = entry.map_err(|e| Error::io(src_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let weights = name.ends_with(".safetensors") || name == "model.safetensors.index.json";
        let ours = ["config.json", "quantize_config.json", "reference.json"].contains(&name.as_str());
        let side = [".json", ".jinja", ".txt", ".model", ".md"].iter().any(|e| name.ends_with(e));
        if entry.path().is_file() && side && !weights && !ours {
            std::fs::copy(entry.path(), out_dir.join(&name)).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}
