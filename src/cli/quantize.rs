//! `flint quantize`: a Hugging Face folder to an INT4 GPTQ checkpoint (see
//! `weights::gptq_writer`), with a progress bar and an optional JSON summary.

use super::hub;
use crate::engine::ModelFiles;
use crate::weights::gptq_writer;
use crate::{Error, Result};
use clap::Args;
use std::path::PathBuf;

pub const EXAMPLES: &str = "Examples:
  flint quantize --model ./Mixtral-tiny --out ./Mixtral-tiny-gptq
  flint quantize --model ./my-model --out ./my-model-int4 --group 64 --json

The output loads in flint (`flint run --model OUT`) and, as a GPTQ checkpoint
(4 bits, asymmetric, desc_act false), in transformers and vLLM.";

#[derive(Args)]
pub struct QuantizeArgs {
    /// A Hugging Face model folder (config.json + safetensors in f32, f16 or bf16) or a Hub repo id.
    #[arg(long)]
    model: PathBuf,
    /// The folder to write (created; must not hold files already).
    #[arg(long)]
    out: PathBuf,
    /// Inputs per quantization group.
    #[arg(long, default_value_t = 128, value_parser = parse_group)]
    group: usize,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

fn parse_group(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(g) if crate::quant::quantize::INT4_GROUP_SIZES.contains(&g) => Ok(g),
        _ => Err(format!("`{text}` is not a supported group size (32, 64 or 128)")),
    }
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    let path = hub::resolve(&args.model)?;
    let files = ModelFiles::open(&path)?;
    if files.format.starts_with("GPTQ") {
        return Err(Error::Request(format!("{} is already quantized ({})", path.display(), files.format)));
    }
    if !path.is_dir() || !files.format.starts_with("safetensors") {
        return Err(Error::Request(format!(
            "{} is {}: flint quantize reads Hugging Face folders with float safetensors",
            path.display(),
            files.format
        )));
    }
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tensors {msg}").expect("the template is valid"),
    );
    let started = std::time::Instant::now();
    let summary = gptq_writer::write(&path, &files.config, &args.out, args.group, |done, total, name| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(name.to_string());
    })?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let out = serde_json::json!({
            "out": args.out, "group": args.group, "seconds": seconds,
            "quantized_linears": summary.quantized, "copied_tensors": summary.copied,
            "bytes_in": summary.bytes_in, "bytes_out": summary.bytes_out,
        });
        println!("{out}");
    } else {
        println!(
            "wrote {} ({} linears quantized to INT4, group {}; {} tensors copied; {:.1} MiB -> {:.1} MiB in {seconds:.1} s)",
            args.out.display(),
            summary.quantized,
            args.group,
            summary.copied,
            summary.bytes_in as f64 / (1 << 20) as f64,
            summary.bytes_out as f64 / (1 << 20) as f64,
        );
    }
    Ok(())
}
