"""KV bytes per request and concurrent requests on one 80 GB GPU, full KV against SpecKV (docs/scale-out.md).

Arithmetic only (no model runs): python results/cpu/scale-out/kv_budget.py > results/cpu/scale-out/kv_budget.json
Shapes from the models' config.json: Llama-3.1-8B (32 layers, 8 KV heads, head dim 128, 8.03e9 parameters) as
the target and Llama-3.2-1B (16 layers, 8 KV heads, head dim 64, 1.24e9 parameters) as the draft; bf16.
"""

import json

BF16 = 2
GB = 1e9


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int = BF16) -> int:
    return 2 * layers * kv_heads * head_dim * dtype_bytes  # keys and values


target = kv_bytes_per_token(32, 8, 128)
draft = kv_bytes_per_token(16, 8, 64)
prompt, budget, answer = 32768, 1024, 256
gpu, utilization, overhead_gb = 80 * GB, 0.90, 3.0  # vLLM's default --gpu-memory-utilization; activations etc.
weights_target, weights_draft = 8.03e9 * BF16, 1.24e9 * BF16

full_request = (prompt + answer) * target
speckv_request = (budget + answer) * target
pool = gpu * utilization - weights_target - overhead_gb * GB
pool_with_draft = pool - weights_draft
transient = prompt * target + prompt * draft  # one request in prefill holds its full KV and the draft's

out = {
    "assumptions": {
        "prompt_tokens": prompt, "speckv_budget": budget, "answer_tokens": answer, "gpu_bytes": gpu,
        "gpu_memory_utilization": utilization, "activation_and_runtime_overhead_gb": overhead_gb,
    },
    "target_kv_bytes_per_token": target,
    "draft_kv_bytes_per_token": draft,
    "target_kv_bytes_prompt_full": prompt * target,
    "target_kv_bytes_prompt_speckv": budget * target,
    "request_bytes_full": full_request,
    "request_bytes_speckv": speckv_request,
    "reduction_prompt_only": prompt / budget,
    "reduction_with_answer": full_request / speckv_request,
    "kv_pool_bytes_target_only": pool,
    "kv_pool_bytes_with_draft_weights": pool_with_draft,
    "concurrent_full": int(pool // full_request),
    "concurrent_speckv_steady": int(pool_with_draft // speckv_request),
    "concurrent_speckv_one_prefill_in_flight": int((pool_with_draft - transient) // speckv_request),
}
print(json.dumps(out, indent=2))
