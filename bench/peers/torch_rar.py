"""PyTorch eager peer for bench/generate-cpu: a plain implementation of RAR as
../shared/MODEL.md describes it, with a concatenating KV cache like the official
code (bytedance/1d-tokenizer modeling/rar.py), and the MaskGIT-VQGAN decoder.

Usage: python3 torch_rar.py CONFIG_JSON   (prints one JSON line)
CONFIG_JSON: {"mode": "generate"|"vqdecode"|"check", "threads": 2, ...}
Only the benchmark uses this file; the project's tests never need Python.
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H, self.D = H, C // H
        self.qkv = nn.Linear(C, 3 * C)
        self.q_norm = nn.LayerNorm(self.D, eps=1e-6)
        self.k_norm = nn.LayerNorm(self.D, eps=1e-6)
        self.proj = nn.Linear(C, C)
        self.kv_cache = None

    def forward(self, x, use_cache=True):
        B, T, C = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.H, self.D).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, T, D)
        q, k = self.q_norm(q), self.k_norm(k)
        if use_cache:
            if self.kv_cache is not None:
                k = torch.cat([self.kv_cache[0], k], dim=2)
                v = torch.cat([self.kv_cache[1], v], dim=2)
            self.kv_cache = (k, v)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.D))  # (B, H, T, S)
        if T > 1:  # prefill / training: causal over the last T positions
            S = k.shape[2]
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            att = att.masked_fill(~mask, float("-inf"))
        x = att.softmax(dim=-1) @ v  # (B, H, T, D)
        return self.proj(x.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, C, H, I):
        super().__init__()
        self.norm1 = nn.LayerNorm(C, eps=1e-6)
        self.attn = Attention(C, H)
        self.norm2 = nn.LayerNorm(C, eps=1e-6)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(C, I)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(I, C)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))

    def forward(self, x, c, use_cache=True):
        s1, sc1, g1, s2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + g1 * self.attn(self.norm1(x) * (1 + sc1) + s1, use_cache)
        x = x + g2 * self.mlp(self.norm2(x) * (1 + sc2) + s2)
        return x


class FinalAdaLN(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.norm = nn.LayerNorm(C, eps=1e-6, elementwise_affine=False)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(C, 2 * C))

    def forward(self, x, c):
        scale, shift = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


class RAR(nn.Module):
    def __init__(self, C, depth, H, I, N=256, V=1024, K=1000):
        super().__init__()
        self.C, self.N, self.V, self.K = C, N, V, K
        self.embeddings = nn.Embedding(V + 1 + K + 1, C)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, N + 1024, C))
        self.target_aware_pos_embed = nn.Parameter(torch.zeros(1, N + 1024, C))
        self.timesteps_embeddings = nn.Parameter(torch.zeros(1, N + 100, C))
        self.blocks = nn.ModuleList([Block(C, H, I) for _ in range(depth)])
        self.adaln_before_head = FinalAdaLN(C)
        self.lm_head = nn.Linear(C, V)

    def clear_cache(self):
        for b in self.blocks:
            b.attn.kv_cache = None

    def step(self, ids, cond_idx, t):
        """Raster sampling step t: feeds what is new, returns the last position's logits."""
        B = cond_idx.shape[0]
        cemb = self.embeddings(cond_idx)[:, None]  # (B,1,C)
        if t == 0:
            x = torch.cat([self.cls_token.expand(B, -1, -1), cemb], 1)
            x = x + self.pos_embed[:, :2]
            x = x + torch.cat([torch.zeros_like(x[:, :1]), self.target_aware_pos_embed[:, 2:3].expand(B, -1, -1)], 1)
            c = cemb + self.timesteps_embeddings[:, :2]
        else:
            x = self.embeddings(ids[:, t - 1:t]) + self.pos_embed[:, 2 + t - 1:2 + t]
            x = x + self.target_aware_pos_embed[:, 2 + t:3 + t]
            c = cemb + self.timesteps_embeddings[:, t + 1:t + 2]
        for blk in self.blocks:
            x = blk(x, c, True)
        x = self.adaln_before_head(x[:, -1:], c[:, -1:])
        return self.lm_head(x)[:, 0]

    @torch.no_grad()
    def generate(self, classes, g, p, temperature, greedy=False, gen=None):
        B = classes.shape[0]
        cond = classes + self.V + 1
        if g != 0:
            cond = torch.cat([cond, torch.full_like(cond, self.V + self.K + 1)])
        ids = torch.zeros(B, self.N, dtype=torch.long)
        self.clear_cache()
        for t in range(self.N):
            both = torch.cat([ids, ids]) if g != 0 else ids
            logits = self.step(both, cond, t)
            if g != 0:
                s = (g - 1) * (1 - math.cos(math.pi * (t / self.N) ** p)) / 2 + 1
                c, u = logits[:B], logits[B:]
                logits = u + (c - u) * s
            logits = logits / temperature
            if greedy:
                tok = logits.argmax(-1)
            else:
                tok = torch.multinomial(F.softmax(logits, -1), 1, generator=gen)[:, 0]
            ids[:, t] = tok
        self.clear_cache()
        return ids


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1 = nn.GroupNorm(32, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(32, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(cout, cout, 1, bias=False) if cin != cout else None

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.nin_shortcut(h) if self.nin_shortcut is not None else x)


class Decoder(nn.Module):
    def __init__(self, hidden=128, mult=(1, 1, 2, 2, 4), nres=2, z=256):
        super().__init__()
        cin = hidden * mult[-1]
        self.conv_in = nn.Conv2d(z, cin, 3, padding=1)
        self.mid = nn.ModuleList([ResnetBlock(cin, cin), ResnetBlock(cin, cin)])
        self.levels = []
        ups = []
        for i in reversed(range(len(mult))):
            cout = hidden * mult[i]
            blocks = nn.ModuleList()
            for _ in range(nres):
                blocks.append(ResnetBlock(cin, cout))
                cin = cout
            level = nn.Module()
            level.block = blocks
            level.upsample_conv = nn.Conv2d(cout, cout, 3, padding=1) if i != 0 else None
            ups.append(level)
        self.up = nn.ModuleList(ups)
        self.norm_out = nn.GroupNorm(32, cin, eps=1e-6)
        self.conv_out = nn.Conv2d(cin, 3, 3, padding=1)

    @torch.no_grad()
    def forward(self, zq):
        h = self.conv_in(zq)
        for b in self.mid:
            h = b(h)
        for level in self.up:
            for b in level.block:
                h = b(h)
            if level.upsample_conv is not None:
                h = level.upsample_conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h))).clamp(0, 1)


PRESETS = {"rar-b": (768, 24, 16, 3072), "rar-l": (1024, 24, 16, 4096),
           "rar-xl": (1280, 32, 16, 5120), "rar-xxl": (1408, 40, 16, 6144)}


def main():
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(int(cfg.get("threads", torch.get_num_threads())))
    torch.manual_seed(int(cfg.get("seed", 0)))
    mode = cfg["mode"]
    if mode == "generate":
        C, depth, H, I = PRESETS[cfg.get("preset", "rar-b")]
        model = RAR(C, depth, H, I).eval()
        for prm in model.parameters():
            prm.data.normal_(0, 0.02)
        classes = torch.tensor(cfg.get("classes", [207, 360]))
        steps = int(cfg.get("steps", 256))
        model.N = steps
        gen = torch.Generator().manual_seed(0)
        # warm-up: a few steps
        model.N = min(4, steps)
        model.generate(classes, 16.0, 2.75, 1.0, gen=gen)
        model.N = steps
        t0 = time.perf_counter()
        model.generate(classes, float(cfg.get("guidance", 16.0)), 2.75, 1.0, gen=gen)
        dt = time.perf_counter() - t0
        print(json.dumps({"peer": "torch-eager", "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "seconds": dt, "steps": steps, "batch": len(classes), "ms_per_step": 1000 * dt / steps}))
    elif mode == "vqdecode":
        dec = Decoder().eval()
        for prm in dec.parameters():
            prm.data.normal_(0, 0.02)
        B = int(cfg.get("batch", 1))
        zq = torch.randn(B, 256, 16, 16)
        dec(zq[:1])  # warm-up
        reps = int(cfg.get("reps", 2))
        t0 = time.perf_counter()
        for _ in range(reps):
            dec(zq)
        dt = (time.perf_counter() - t0) / reps
        print(json.dumps({"peer": "torch-eager", "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "seconds_per_batch": dt, "batch": B, "seconds_per_image": dt / B,
                          "mkldnn": torch.backends.mkldnn.is_available()}))
    else:
        raise SystemExit("unknown mode " + mode)


if __name__ == "__main__":
    main()
