//! `flint info`: a model's shape and size, or the GPU's adapter and limits.

use crate::engine::ModelFiles;
use crate::gpu::{Backend, Gpu};
use crate::Result;

pub fn info(files: &ModelFiles, json: bool) -> Result<()> {
    let c = &files.config;
    let (total, active) = c.parameter_counts();
    let bytes = files.tensors.size_in_bytes();
    if json {
        let out = serde_json::json!({
            "family": c.family,
            "format": files.format,
            "layers": c.num_layers,
            "hidden_size": c.hidden_size,
            "heads": c.num_heads,
            "kv_heads": c.num_kv_heads,
            "head_dim": c.head_dim,
            "vocab_size": c.vocab_size,
            "experts": c.moe.as_ref().map(|m| serde_json::json!({
                "total": m.num_experts,
                "top_k": m.top_k,
                "shared": m.shared_expert_intermediate_size.is_some() as usize,
            })),
            "parameters_total": total,
            "parameters_active": active,
            "bytes_on_disk": bytes,
            "config": c,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("JSON values serialize"));
        return Ok(());
    }
    println!("model       {}", files.path.display());
    println!("family      {}", c.family.name());
    println!("format      {}", files.format);
    match &c.mla {
        None => println!(
            "layers      {} (hidden {}, heads {}/{} kv, head_dim {})",
            c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
        ),
        Some(m) => println!(
            "layers      {} (hidden {}, {} heads of latent attention: kv_lora {}, q/k {} + rope {}, v {}{})",
            c.num_layers,
            c.hidden_size,
            c.num_heads,
            m.kv_lora_rank,
            m.qk_nope_head_dim,
            m.qk_rope_head_dim,
            m.v_head_dim,
            m.q_lora_rank.map_or(String::new(), |q| format!(", q_lora {q}"))
        ),
    }
    match &c.moe {
        Some(m) => {
            let dense = c.layer_ffn.iter().filter(|k| **k == crate::config::FfnKind::Dense).count();
            println!(
                "experts     {} total, top-{} per token, {} shared{}",
                m.num_experts,
                m.top_k,
                m.shared_expert_intermediate_size.is_some() as usize,
                if dense > 0 { format!(", {dense} dense layers") } else { String::new() }
            );
        }
        None => println!("experts     dense (one always-selected FFN)"),
    }
    println!("vocabulary  {}", c.vocab_size);
    println!("context     {}", c.max_position_embeddings);
    println!("parameters  {} total, {} active per token", human(total), human(active));
    println!("on disk     {} bytes ({:.1} MiB)", bytes, bytes as f64 / (1 << 20) as f64);
    Ok(())
}

pub fn device_info(backend: Backend, json: bool) -> Result<()> {
    let gpu = Gpu::new_blocking(backend)?;
    let l = &gpu.limits;
    if json {
        let out = serde_json::json!({
            "name": gpu.info.name,
            "backend": format!("{:?}", gpu.info.backend),
            "device_type": format!("{:?}", gpu.info.device_type),
            "driver": gpu.info.driver,
            "driver_info": gpu.info.driver_info,
            "features": format!("{:?}", gpu.features),
            "max_buffer_size": l.max_buffer_size,
            "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
            "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
            "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
            "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("JSON values serialize"));
        return Ok(());
    }
    println!("adapter     {}", gpu.describe());
    println!("driver      {} {}", gpu.info.driver, gpu.info.driver_info);
    println!("features    {:?}", gpu.features);
    println!(
        "max buffer  {} MiB, max storage binding {} MiB",
        l.max_buffer_size >> 20,
        l.max_storage_buffer_binding_size >> 20
    );
    println!(
        "workgroup   {} invocations, {} KiB shared memory, {} storage buffers per stage",
        l.max_compute_invocations_per_workgroup,
        l.max_compute_workgroup_storage_size >> 10,
        l.max_storage_buffers_per_shader_stage
    );
    Ok(())
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}
