"""PyTorch GPU peer for bench/gpu.sh: RAR raster-order sampling with classifier-free
guidance as ../shared/MODEL.md describes it, with a concatenating KV cache like the
official code (bytedance/1d-tokenizer modeling/rar.py), then the MaskGIT-VQGAN
decoder, on random weights, on one CUDA device. Plain eager PyTorch: no CUDA graphs,
no torch.compile, no fused attention (the official code's math), weights and
activations in the chosen dtype.

Usage: python3 torch_gpu.py --preset rar-b --batches 128,256 [--dtype bf16|fp32] [--steps 256]
Prints one JSON line per batch: {"preset", "batch", "dtype", "gen_s", "vq_s", "images_per_s", ...}.
Only the benchmark uses this file; the project's tests never need Python.
"""
import argparse
import contextlib
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# The layers are bench/peers/torch_rar.py's (the CPU peer checked against the fixtures).
from torch_rar import Attention, Block, Decoder as BaseDecoder  # noqa: E402


class RAR(nn.Module):
    def __init__(self, C, depth, H, I, N=256, V=1024, K=1000):
        super().__init__()
        self.C, self.N, self.V, self.K = C, N, V, K
        self.embeddings = nn.Embedding(V + 1 + K + 1, C)
        self.cls_token = nn.Parameter(torch.randn(1, 1, C) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, N + 1024, C) * 0.02)
        self.target_aware_pos_embed = nn.Parameter(torch.randn(1, N + 1024, C) * 0.02)
        self.timesteps_embeddings = nn.Parameter(torch.randn(1, N + 100, C) * 0.02)
        self.blocks = nn.ModuleList([Block(C, H, I) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(C, eps=1e-6, elementwise_affine=False)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(C, 2 * C))
        self.lm_head = nn.Linear(C, V)

    def step(self, prev, cemb, t):
        R = cemb.shape[0]
        if t == 0:  # positions 0 (cls) and 1 (class)
            x = torch.cat([self.cls_token.expand(R, -1, -1), cemb], 1) + self.pos_embed[:, :2]
            x = x + torch.cat([torch.zeros_like(x[:, :1]), self.target_aware_pos_embed[:, 2:3].expand(R, -1, -1)], 1)
            c = cemb + self.timesteps_embeddings[:, :2]
        else:  # position t+1 holds the token sampled at step t-1
            x = self.embeddings(prev)[:, None] + self.pos_embed[:, t + 1:t + 2] + self.target_aware_pos_embed[:, t + 2:t + 3]
            c = cemb + self.timesteps_embeddings[:, t + 1:t + 2]
        for blk in self.blocks:
            x = blk(x, c)
        scale, shift = self.final_ada(c[:, -1:]).chunk(2, dim=-1)
        x = self.final_norm(x[:, -1:]) * (1 + scale) + shift
        return self.lm_head(x)[:, 0].float()

    @torch.no_grad()
    def generate(self, classes, g, p, temperature, steps=None):
        B, dev = classes.shape[0], classes.device
        cond = classes + self.V + 1
        if g != 0:
            cond = torch.cat([cond, torch.full_like(cond, self.V + self.K + 1)])
        cemb = self.embeddings(cond)[:, None]
        for b in self.blocks:
            b.attn.kv_cache = None
        ids = torch.zeros(B, self.N, dtype=torch.long, device=dev)
        prev = None
        for t in range(steps or self.N):
            logits = self.step(prev, cemb, t)
            if g != 0:
                s = (g - 1) * (1 - math.cos(math.pi * (t / self.N) ** p)) / 2 + 1
                c, u = logits[:B], logits[B:]
                logits = u + (c - u) * s
            tok = torch.multinomial(F.softmax(logits / temperature, -1), 1)[:, 0]
            ids[:, t] = tok
            prev = torch.cat([tok, tok]) if g != 0 else tok
        for b in self.blocks:
            b.attn.kv_cache = None
        return ids


class Decoder(BaseDecoder):
    """MaskGIT-VQGAN decoder (torch_rar.py's), codebook lookup included."""

    def __init__(self, hidden=128, mult=(1, 1, 2, 2, 4), nres=2, z=256, codebook=1024):
        super().__init__(hidden, mult, nres, z)
        self.codebook = nn.Embedding(codebook, z)

    @torch.no_grad()
    def forward(self, tokens):
        B, n = tokens.shape
        g = int(math.isqrt(n))
        return super().forward(self.codebook(tokens).reshape(B, g, g, -1).permute(0, 3, 1, 2).contiguous())


PRESETS = {  # C, depth, heads, MLP, guidance, pow, temperature
    "tiny": (64, 2, 4, 256, 4.0, 1.0, 1.0),  # bench/gpu.sh --dry-run (CPU smoke test)
    "rar-b": (768, 24, 16, 3072, 16.0, 2.75, 1.0),
    "rar-l": (1024, 24, 16, 4096, 15.5, 2.5, 1.02),
    "rar-xl": (1280, 32, 16, 5120, 6.9, 1.5, 1.02),
    "rar-xxl": (1408, 40, 16, 6144, 8.0, 1.2, 1.02),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="rar-b", choices=sorted(PRESETS))
    ap.add_argument("--batches", default="128", help="comma-separated batch sizes, timed one after the other")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--vq-chunk", type=int, default=64, help="images per decoder call")
    ap.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (a smoke test)")
    ap.add_argument("--vq-hidden", type=int, default=0, help="decoder base channels (default 128; preset tiny: 32)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    dt = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    C, depth, H, I, g, p, temp = PRESETS[a.preset]
    # initialise on the device (fast for 1.5B parameters; torch >= 2.0)
    ctx = dev if hasattr(dev, "__enter__") else contextlib.nullcontext()
    with ctx:
        model = RAR(C, depth, H, I)
        vq = Decoder(hidden=a.vq_hidden or (32 if a.preset == "tiny" else 128))
    with torch.no_grad():  # small adaLN outputs keep deep random stacks finite
        for blk in model.blocks:
            blk.adaLN_modulation[1].weight.mul_(0.1)
    model = model.to(dev, dt).eval()
    vq = vq.to(dev, dt).eval()
    batches = [int(b) for b in a.batches.split(",")]

    # warm-up: cuBLAS / cuDNN plans, allocator
    warm = min(8, max(batches))
    classes = torch.arange(warm, device=dev) % 1000
    model.generate(classes, g, p, temp, steps=4)
    vq(torch.zeros(warm, 256, dtype=torch.long, device=dev))
    sync()

    for B in batches:
        classes = torch.arange(B, device=dev) * 7 % 1000
        t0 = time.perf_counter()
        ids = model.generate(classes, g, p, temp, steps=a.steps)
        sync()
        t1 = time.perf_counter()
        for i in range(0, B, a.vq_chunk):
            img = vq(ids[i:i + a.vq_chunk])
            (img * 255).to(torch.uint8)
        sync()
        t2 = time.perf_counter()
        gen_s, vq_s = t1 - t0, t2 - t1
        print(json.dumps({
            "impl": "torch", "preset": a.preset, "batch": B, "dtype": a.dtype, "steps": a.steps,
            "gen_s": round(gen_s, 4), "vq_s": round(vq_s, 4),
            "images_per_s": round(B / (gen_s + vq_s), 2),
            "gen_images_per_s": round(B / gen_s, 2),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None,
            "torch": torch.__version__, "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        }), flush=True)


if __name__ == "__main__":
    main()
