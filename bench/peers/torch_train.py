"""PyTorch eager peer for bench/train.ts: one RAR training step (MODEL.md "Forward
(training path)" + mean cross-entropy + backward + AdamW with the official two
parameter groups and grad-norm clip 1.0), timed on the CPU in float32.

Usage: python3 torch_train.py CONFIG_JSON   (prints one JSON line)
CONFIG_JSON: {"hidden": 128, "depth": 4, "heads": 4, "mlp": 512, "seq_len": 256,
              "vocab": 16, "classes": 10, "batch": 16, "steps": 5, "warmup": 2,
              "threads": 2, "dropout": 0.1, "seed": 0}
Only the benchmark uses this file (Debian's python3-torch); tests never need Python.
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, C, H, attn_drop, proj_drop):
        super().__init__()
        self.H, self.D = H, C // H
        self.qkv = nn.Linear(C, 3 * C)
        self.q_norm = nn.LayerNorm(self.D, eps=1e-6)
        self.k_norm = nn.LayerNorm(self.D, eps=1e-6)
        self.proj = nn.Linear(C, C)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.H, self.D).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.D))  # (B, H, T, T)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        att = self.attn_drop(att.masked_fill(~mask, float("-inf")).softmax(-1))
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.proj_drop(self.proj(y))


class Block(nn.Module):
    def __init__(self, C, H, I, p):
        super().__init__()
        self.norm1 = nn.LayerNorm(C, eps=1e-6)
        self.attn = Attention(C, H, p, p)
        self.norm2 = nn.LayerNorm(C, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(C, I), nn.GELU(), nn.Dropout(p), nn.Linear(I, C), nn.Dropout(p))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))

    def forward(self, x, c):
        s1, sc1, g1, s2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + g1 * self.attn(self.norm1(x) * (1 + sc1) + s1)
        return x + g2 * self.mlp(self.norm2(x) * (1 + sc2) + s2)


class RAR(nn.Module):
    def __init__(self, C, depth, H, I, N, V, K, p):
        super().__init__()
        self.N, self.V, self.K = N, V, K
        self.embeddings = nn.Embedding(V + 1 + K + 1, C)
        self.cls_token = nn.Parameter(torch.randn(1, 1, C) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, N + 1024, C) * 0.02)
        self.target_aware_pos_embed = nn.Parameter(torch.randn(1, N + 1024, C) * 0.02)
        self.timesteps_embeddings = nn.Parameter(torch.randn(1, N + 100, C) * 0.02)
        self.blocks = nn.ModuleList([Block(C, H, I, p) for _ in range(depth)])
        self.head_norm = nn.LayerNorm(C, eps=1e-6, elementwise_affine=False)
        self.adaln_before_head = nn.Sequential(nn.SiLU(), nn.Linear(C, 2 * C))
        self.lm_head = nn.Linear(C, V)

    def forward(self, ids, cond, orders):
        B, N = ids.shape
        bi = torch.arange(B)[:, None]
        tok = ids[bi, orders]  # labels too
        x = torch.cat([self.cls_token.expand(B, -1, -1), self.embeddings(cond)[:, None], self.embeddings(tok)], 1)
        pos = self.pos_embed[0]
        x = x + torch.cat([pos[None, :2].expand(B, -1, -1), pos[2 + orders]], 1)
        tape = self.target_aware_pos_embed[0][2 + orders]  # (B, N, C)
        zero = torch.zeros(B, 1, x.shape[-1])
        x = x + torch.cat([zero, tape, zero], 1)
        c = self.embeddings(cond)[:, None] + self.timesteps_embeddings[:, : N + 2]
        for blk in self.blocks:
            x = blk(x, c)
        scale, shift = self.adaln_before_head(c[:, 1:]).chunk(2, dim=-1)
        x = self.head_norm(x[:, 1:]) * (1 + scale) + shift
        logits = self.lm_head(x)
        return F.cross_entropy(logits[:, :N].reshape(-1, self.V), tok.reshape(-1))


def param_groups(model, wd):
    exclude = lambda n, p: p.ndim < 2 or any(s in n for s in ("ln", "bias", "embedding", "norm", "gamma", "embed", "latent_tokens", "mask_token"))
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": wd}]


def main():
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(int(cfg.get("threads", 2)))
    torch.manual_seed(int(cfg.get("seed", 0)))
    C, depth, H, I = cfg["hidden"], cfg["depth"], cfg["heads"], cfg["mlp"]
    N, V, K, B = cfg["seq_len"], cfg["vocab"], cfg["classes"], cfg["batch"]
    model = RAR(C, depth, H, I, N, V, K, float(cfg.get("dropout", 0.1))).train()
    opt = torch.optim.AdamW(param_groups(model, 0.03), lr=1e-4, betas=(0.9, 0.96))
    steps, warmup = int(cfg.get("steps", 5)), int(cfg.get("warmup", 2))
    times, losses = [], []
    for s in range(warmup + steps):
        ids = torch.randint(0, V, (B, N))
        cond = torch.randint(0, K, (B,)) + V + 1
        orders = torch.stack([torch.randperm(N) for _ in range(B)])
        t0 = time.perf_counter()
        loss = model(ids, cond, orders)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        if s >= warmup:
            times.append(dt)
            losses.append(loss.item())
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps({
        "impl": "pytorch-eager", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "step_s_median": med, "tokens_per_s": B * N / med, "loss_last": losses[-1],
    }))


if __name__ == "__main__":
    main()
