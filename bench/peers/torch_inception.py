#!/usr/bin/env python3
"""PyTorch peer for bench/fid.ts: the TF1-exact FID InceptionV3 (torch-fidelity's
FeatureExtractorInceptionV3: TF1 bilinear resize to 299 without half-pixel centres,
(x-128)/128, FID variants of the Inception blocks, BatchNorm eps 1e-3), in plain
PyTorch, timed on CPU with a given thread count. Same architecture and weights as
rargen's src/model/inception.cc.

  /usr/bin/python3 bench/peers/torch_inception.py --weights W.pth --threads 2 --batch 8 --iters 3
  /usr/bin/python3 bench/peers/torch_inception.py --formula --check test/fixtures/inception/inception.npz

--formula builds the test-fixture weights (test/fixtures/README.md, inception/) instead
of loading a file. Prints one JSON line. Needs torch (Debian: apt-get install python3-torch).
"""
import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Conv(nn.Module):  # conv (no bias) -> BN(eps 1e-3) -> ReLU
    def __init__(self, cin, cout, k, stride=1, pad=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def avg3(x):  # TF avg pool: padded zeros not counted
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class A(nn.Module):
    def __init__(self, cin, pool):
        super().__init__()
        self.branch1x1 = Conv(cin, 64, 1)
        self.branch5x5_1 = Conv(cin, 48, 1)
        self.branch5x5_2 = Conv(48, 64, 5, pad=2)
        self.branch3x3dbl_1 = Conv(cin, 64, 1)
        self.branch3x3dbl_2 = Conv(64, 96, 3, pad=1)
        self.branch3x3dbl_3 = Conv(96, 96, 3, pad=1)
        self.branch_pool = Conv(cin, pool, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(avg3(x))], 1)


class B(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = Conv(cin, 64, 1)
        self.branch3x3dbl_2 = Conv(64, 96, 3, pad=1)
        self.branch3x3dbl_3 = Conv(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2)], 1)


class C(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = Conv(cin, 192, 1)
        self.branch7x7_1 = Conv(cin, c7, 1)
        self.branch7x7_2 = Conv(c7, c7, (1, 7), pad=(0, 3))
        self.branch7x7_3 = Conv(c7, 192, (7, 1), pad=(3, 0))
        self.branch7x7dbl_1 = Conv(cin, c7, 1)
        self.branch7x7dbl_2 = Conv(c7, c7, (7, 1), pad=(3, 0))
        self.branch7x7dbl_3 = Conv(c7, c7, (1, 7), pad=(0, 3))
        self.branch7x7dbl_4 = Conv(c7, c7, (7, 1), pad=(3, 0))
        self.branch7x7dbl_5 = Conv(c7, 192, (1, 7), pad=(0, 3))
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        self.last_branch1x1 = b1
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for m in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = m(d)
        return torch.cat([b1, b7, d, self.branch_pool(avg3(x))], 1)


class D(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = Conv(cin, 192, 1)
        self.branch3x3_2 = Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = Conv(cin, 192, 1)
        self.branch7x7x3_2 = Conv(192, 192, (1, 7), pad=(0, 3))
        self.branch7x7x3_3 = Conv(192, 192, (7, 1), pad=(3, 0))
        self.branch7x7x3_4 = Conv(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = x
        for m in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = m(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class E(nn.Module):
    def __init__(self, cin, max_pool):
        super().__init__()
        self.max_pool = max_pool  # Mixed_7c: the TF graph max-pools here
        self.branch1x1 = Conv(cin, 320, 1)
        self.branch3x3_1 = Conv(cin, 384, 1)
        self.branch3x3_2a = Conv(384, 384, (1, 3), pad=(0, 1))
        self.branch3x3_2b = Conv(384, 384, (3, 1), pad=(1, 0))
        self.branch3x3dbl_1 = Conv(cin, 448, 1)
        self.branch3x3dbl_2 = Conv(448, 384, 3, pad=1)
        self.branch3x3dbl_3a = Conv(384, 384, (1, 3), pad=(0, 1))
        self.branch3x3dbl_3b = Conv(384, 384, (3, 1), pad=(1, 0))
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        p = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else avg3(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(p)], 1)


def tf1_resize(x, size=299):
    """tf.image.resize_bilinear (TF1, align_corners=False, no half-pixel centres), float32."""
    def grid(n_in):
        g = torch.arange(size, dtype=torch.float32) * torch.tensor(n_in / size, dtype=torch.float32)
        lo = g.long()
        return lo, (lo + 1).clamp_max(n_in - 1), g - lo.float()
    ylo, yhi, dy = grid(x.shape[2])
    xlo, xhi, dx = grid(x.shape[3])
    top, bot = x[:, :, ylo, :], x[:, :, yhi, :]
    t = top[:, :, :, xlo] + (top[:, :, :, xhi] - top[:, :, :, xlo]) * dx.view(1, 1, 1, -1)
    b = bot[:, :, :, xlo] + (bot[:, :, :, xhi] - bot[:, :, :, xlo]) * dx.view(1, 1, 1, -1)
    return t + (b - t) * dy.view(1, 1, -1, 1)


class InceptionV3(nn.Module):
    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = Conv(32, 64, 3, pad=1)
        self.Conv2d_3b_1x1 = Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = Conv(80, 192, 3)
        self.Mixed_5b = A(192, 32)
        self.Mixed_5c = A(256, 64)
        self.Mixed_5d = A(288, 64)
        self.Mixed_6a = B(288)
        self.Mixed_6b = C(768, 128)
        self.Mixed_6c = C(768, 160)
        self.Mixed_6d = C(768, 160)
        self.Mixed_6e = C(768, 192)
        self.Mixed_7a = D(768)
        self.Mixed_7b = E(1280, False)
        self.Mixed_7c = E(2048, True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, images):  # uint8 (B, H, W, 3)
        x = images.permute(0, 3, 1, 2).float()
        x = (tf1_resize(x) - 128) / 128
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for m in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                  self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = m(x)
        pool3 = x.mean((2, 3))
        spatial = self.Mixed_6d.last_branch1x1[:, :7].permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        logits = pool3 @ self.fc.weight.T
        return pool3, spatial, logits


def lowbias32_vec(x):  # x: uint64 array of values < 2^32
    m = np.uint64(0xFFFFFFFF)
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x7FEB352D)) & m
    x = x ^ (x >> np.uint64(15))
    x = (x * np.uint64(0x846CA68B)) & m
    x = x ^ (x >> np.uint64(16))
    return x


def formula_state_dict(model):
    """The fixture weights (test/fixtures/README.md, inception/)."""
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')}
    out = {}
    for k_idx, key in enumerate(sorted(sd)):
        shape = sd[key].shape
        n = int(np.prod(shape))
        i = np.arange(n, dtype=np.uint64)
        u = lowbias32_vec((i + np.uint64(k_idx) * np.uint64(0x9E3779B9)) & np.uint64(0xFFFFFFFF)).astype(np.float64) / 2.0**32
        if key.endswith('conv.weight'):
            v = (2 * u - 1) * math.sqrt(6 / (shape[1] * shape[2] * shape[3]))
        elif key.endswith('bn.weight'):
            v = 1 + 0.2 * (u - 0.5)
        elif key.endswith('bn.bias') or key.endswith('bn.running_mean'):
            v = 0.02 * (u - 0.5)
        elif key.endswith('bn.running_var'):
            v = 1 + 0.5 * u
        elif key == 'fc.weight':
            v = (2 * u - 1) * math.sqrt(3 / 2048) * 30
        elif key == 'fc.bias':
            v = (2 * u - 1) * 0.01
        else:
            raise KeyError(key)
        out[key] = torch.from_numpy(v.astype(np.float32).reshape(shape))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--weights', help='pt_inception-2015-12-05-6726825d.pth (or any state dict with its keys)')
    ap.add_argument('--formula', action='store_true', help='use the fixture formula weights')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--size', type=int, default=256, help='input image side (resized to 299)')
    ap.add_argument('--iters', type=int, default=3)
    ap.add_argument('--check', help='inception.npz fixture: print max relative errors instead of timing')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = InceptionV3().eval()
    if a.formula:
        model.load_state_dict(formula_state_dict(model), strict=False)
    elif a.weights:
        sd = torch.load(a.weights, map_location='cpu')
        model.load_state_dict(sd)
    else:
        ap.error('--weights or --formula')
    with torch.no_grad():
        if a.check:
            f = np.load(a.check)
            res = {}
            for s in ('256', '64'):
                p, sp, lg = model(torch.from_numpy(f['images' + s]))
                for name, got in (('pool3', p), ('spatial', sp), ('logits', lg)):
                    want = f[name + '_' + s]
                    res[name + '_' + s] = float(np.abs(got.numpy() - want).max() / np.abs(want).max())
            print(json.dumps(res))
            return
        rng = np.random.default_rng(0)
        imgs = torch.from_numpy(rng.integers(0, 256, (a.batch, a.size, a.size, 3), dtype=np.uint8))
        model(imgs)  # warm-up
        t0 = time.perf_counter()
        for _ in range(a.iters):
            model(imgs)
        dt = time.perf_counter() - t0
    print(json.dumps({'peer': 'torch', 'torch': torch.__version__, 'threads': a.threads, 'batch': a.batch,
                      'size': a.size, 'iters': a.iters, 'seconds': dt,
                      'images_per_s': a.batch * a.iters / dt}))


if __name__ == '__main__':
    main()
