"""Loads checkpoints written by `flint quantize` into transformers and compares logits with flint's.

transformers' own GPTQ path needs GPU kernels, so this dequantizes the GPTQ tensors itself
with the format's documented formula (v1 checkpoint format, 4 bits):

    q[i, o]    = (qweight[i // 8, o] >> (4 * (i % 8))) & 15
    zero[g, o] = ((qzeros[g, o // 8] >> (4 * (o % 8))) & 15) + 1
    W[o, i]    = scales[g_idx[i], o] * (q[i, o] - zero[g_idx[i], o])

writes an unquantized copy (config.json without quantization_config), loads it with
AutoModelForCausalLM (float32, eager attention) and runs the tokens flint ran.

Usage: gptq_transformers.py CASES.json, a list of {"dir", "tokens", "logits"} (flint's logits).
Prints a JSON list of {"dir", "max_abs_diff", "max_abs_logit"}.
"""

import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM


def unpack_rows(packed: torch.Tensor) -> torch.Tensor:
    """[n / 8, m] int32 words -> [n, m] nibbles (element 8w + j in bits 4j..4j+3 of word w)."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    nibbles = (packed.unsqueeze(1) >> shifts.view(1, 8, 1)) & 15  # [n/8, 8, m]
    return nibbles.reshape(-1, packed.shape[1])


def dequantize(tensors: dict, base: str) -> torch.Tensor:
    qweight, qzeros = tensors.pop(base + ".qweight"), tensors.pop(base + ".qzeros")
    scales, g_idx = tensors.pop(base + ".scales").float(), tensors.pop(base + ".g_idx").long()
    q = unpack_rows(qweight).float()  # [in, out]
    zeros = unpack_rows(qzeros.T.contiguous()).T.float() + 1  # [groups, out]
    zeros = zeros[:, : scales.shape[1]]
    w = scales[g_idx] * (q - zeros[g_idx])  # [in, out]
    return w.T.contiguous()


def load_dequantized(folder: Path, scratch: Path):
    tensors = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(f))
    bases = [n[: -len(".qweight")] for n in tensors if n.endswith(".qweight")]
    out = {b + ".weight": dequantize(tensors, b) for b in bases}
    out.update({n: t.float() for n, t in tensors.items()})
    config = json.loads((folder / "config.json").read_text())
    del config["quantization_config"]
    config["dtype"] = "float32"
    (scratch / "config.json").write_text(json.dumps(config))
    save_file(out, str(scratch / "model.safetensors"), metadata={"format": "pt"})
    model = AutoModelForCausalLM.from_pretrained(scratch, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


def main():
    cases = json.loads(Path(sys.argv[1]).read_text())
    results = []
    for case in cases:
        with tempfile.TemporaryDirectory() as scratch:
            model = load_dequantized(Path(case["dir"]), Path(scratch))
            with torch.no_grad():
                logits = model(torch.tensor([case["tokens"]])).logits[0]
        flint = torch.tensor(case["logits"])
        results.append({
            "dir": case["dir"],
            "max_abs_diff": (logits - flint).abs().max().item(),
            "max_abs_logit": flint.abs().max().item(),
        })
    print(json.dumps(results))


if __name__ == "__main__":
    main()
