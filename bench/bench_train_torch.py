"""PyTorch half of the training benchmark: the reference project's TopK step
(RE-N-Y/sae autoencoder.py semantics) stated in plain torch, as users run it:

    z     = relu(encoder(x - bias)); topk(k, sorted=False) scattered into zeros
    x_hat = decoder(z) + bias                         (dense decoder)
    loss  = ((x - x_hat) ** 2).sum(-1).mean()
    loss.backward(); clip_grad_norm_(params, 1.0); AdamW.step(); scheduler.step()

on 2 threads (torch.set_num_threads(2)). Prints one RESULT line per shape.
Usage: python bench/bench_train_torch.py [--threads 2] [--steps 5] [--shape d,n,k,B ...]
"""

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class TopkSAE(nn.Module):
    def __init__(self, features, pages, k):
        super().__init__()
        self.k = k
        self.encoder = nn.Linear(features, pages)
        self.decoder = nn.Linear(pages, features, bias=False)
        self.bias = nn.Parameter(torch.zeros(features))
        with torch.no_grad():
            self.encoder.bias.zero_()
            w = self.encoder.weight.data.T.clone()
            self.decoder.weight.data = w / w.norm(dim=0, keepdim=True)

    def encode(self, x):
        z = F.relu(self.encoder(x - self.bias))
        values, indices = torch.topk(z, self.k, dim=-1, sorted=False)
        return torch.zeros_like(z).scatter(-1, indices, values)

    def forward(self, x):
        return self.decoder(self.encode(x)) + self.bias


def run(d, n, k, B, steps):
    torch.manual_seed(0)
    sae = TopkSAE(d, n, k)
    opt = torch.optim.AdamW(sae.parameters(), lr=3e-4, betas=(0.9, 0.999), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)  # warmup 0: constant
    x = torch.randn(B, d)

    def step():
        x_hat = sae(x)
        loss = ((x - x_hat) ** 2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        sched.step()
        return loss

    step()  # warm-up (allocations, optimiser state)
    ts, cs = [], []
    for _ in range(steps):
        c0, t0 = time.process_time(), time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)  # CPU s, all threads
    best, med = min(ts), statistics.median(ts)
    print(f"torch {torch.__version__} d={d} n={n} k={k} B={B}: step best {best:.4f} s, "
          f"median {med:.4f} s -> {B / best:.1f} samples/s (best)", flush=True)
    print(f"RESULT d={d} n={n} k={k} B={B} samples_per_s={B / best:.3f} "
          f"median_samples_per_s={B / med:.3f} cpu_s_per_step={min(cs):.4f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--shape", action="append", default=[])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    shapes = [tuple(int(v) for v in s.split(",")) for s in a.shape] or [
        (1024, 4096, 32, 4096), (3072, 12288, 64, 1024)]
    for d, n, k, B in shapes:
        run(d, n, k, B, a.steps)


if __name__ == "__main__":
    main()
