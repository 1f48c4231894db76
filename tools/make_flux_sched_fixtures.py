"""Fixtures for the FLUX sampler pieces and torch's CPU randn, made by the
real torch and diffusers:

  fixtures/flux-sched/randn.safetensors
      randn_<kind>_<seed>_<n>: torch.manual_seed(seed); torch.randn(n) (F32,
      CPU), for kind "avx2" (torch's AVX2 kernels, this machine's default)
      and "default" (ATEN_CPU_CAPABILITY=default: the libm kernels that
      AVX-512 and non-x86 builds also use; run in a subprocess).
      Sizes < 16, 16, not a multiple of 16, and one larger (20005);
      seeds incl. one >= 2^32 (torch keeps the low 32 bits).
      noise_*: FluxPipeline.prepare_latents(...) with
      torch.Generator("cpu").manual_seed(s) (and a list of generators),
      packed, plus its latent image ids.
  fixtures/flux-sched/sched.safetensors
      sigmas/timesteps of FlowMatchEulerDiscreteScheduler.set_timesteps as
      FluxPipeline calls it (sigmas = np.linspace(1, 1/N, N), mu =
      calculate_shift(image_seq_len, ...)), for a schnell-like config
      (shift 1.0, static), a static shift 3.0, and dev-like ones
      (use_dynamic_shifting, base/max shift 0.5/1.15, exponential; and a
      linear time shift); an Euler step (scheduler.step) on random F32
      data; _pack_latents / _unpack_latents / _prepare_latent_image_ids on
      a non-square latent.
  fixtures/flux-sched/*.json: the scheduler configs used.

Deterministic. Run: /work/venv/bin/python tools/make_flux_sched_fixtures.py
"""

import json
import os
import subprocess
import sys
import types

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "flux-sched")

RANDN_CASES = [(0, 1), (0, 5), (7, 15), (42, 16), (42, 17), (1, 100), (12345, 4096 + 3),
               (2**32 + 7, 40), (2**32 + 7, 7), (3, 20000 + 5)]


def randn_dump():
    # run in a subprocess with the wanted ATEN_CPU_CAPABILITY
    out = {}
    for seed, n in RANDN_CASES:
        torch.manual_seed(seed)
        out[f"{seed}_{n}"] = torch.randn(n).numpy().tolist()
    json.dump({"cap": torch.backends.cpu.get_cpu_capability(), "v": out}, sys.stdout)


def randn_for(cap):
    env = dict(os.environ, ATEN_CPU_CAPABILITY=cap)
    r = subprocess.run([sys.executable, __file__, "--dump"], env=env, capture_output=True,
                       check=True, text=True)
    return json.loads(r.stdout)


SCHNELL = {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256,
           "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
           "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}
DEV = dict(SCHNELL, shift=3.0, use_dynamic_shifting=True)
SHIFT3 = dict(SCHNELL, shift=3.0)
DEV_LINEAR = dict(DEV, time_shift_type="linear", base_shift=0.3, max_shift=1.7,
                  base_image_seq_len=64, max_image_seq_len=1024)


def main():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift
    from safetensors.torch import save_file

    os.makedirs(OUT, exist_ok=True)
    t = {}
    caps = {}
    for kind, cap in [("avx2", "avx2"), ("default", "default")]:
        d = randn_for(cap)
        caps[kind] = d["cap"]
        for key, v in d["v"].items():
            t[f"randn_{kind}_{key}"] = torch.tensor(v, dtype=torch.float32)
    assert caps["avx2"] == "AVX2", caps  # this machine must run the AVX2 kernels

    # FluxPipeline.prepare_latents: B 2, 16 channels, 208 x 144 px -> latents 26 x 18
    P = FluxPipeline
    fake = types.SimpleNamespace(vae_scale_factor=8, _pack_latents=P._pack_latents,
                                 _prepare_latent_image_ids=P._prepare_latent_image_ids)
    g = torch.Generator("cpu").manual_seed(1234)
    lat, ids = P.prepare_latents(fake, 2, 16, 208, 144, torch.float32, torch.device("cpu"), g)
    t["noise_single_1234"], t["noise_ids"] = lat, ids
    gl = [torch.Generator("cpu").manual_seed(s) for s in (5, 2**33 + 1)]
    lat2, _ = P.prepare_latents(fake, 2, 16, 208, 144, torch.float32, torch.device("cpu"), gl)
    t["noise_list_5_8589934593"] = lat2
    # BF16 pipelines: the same draw rounded to BF16 (checked here, stored as F32)
    g = torch.Generator("cpu").manual_seed(1234)
    lat_bf, _ = P.prepare_latents(fake, 2, 16, 208, 144, torch.bfloat16, torch.device("cpu"), g)
    assert torch.equal(lat_bf, lat.to(torch.bfloat16)), "bf16 prepare_latents != F32 draw rounded"

    # pack / unpack / ids on a non-square latent (B 2, C 3, h 6, w 10)
    x = torch.randn(2, 3, 6, 10, generator=torch.Generator().manual_seed(9))
    t["pack_in"] = x
    t["pack_out"] = P._pack_latents(x, 2, 3, 6, 10)
    t["unpack_out"] = P._unpack_latents(t["pack_out"], 48, 80, 8)
    t["ids_3x5"] = P._prepare_latent_image_ids(2, 3, 5, torch.device("cpu"), torch.float32)

    # schedules
    configs = {"schnell": SCHNELL, "shift3": SHIFT3, "dev": DEV, "devlinear": DEV_LINEAR}
    for name, cfg in configs.items():
        with open(os.path.join(OUT, f"scheduler_{name}.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        sched = FlowMatchEulerDiscreteScheduler.from_config(cfg)
        for N in (1, 2, 4, 7, 28, 50):
            for seq in (256, 600, 1024, 4096, 4352):
                sigmas = np.linspace(1.0, 1 / N, N)
                mu = calculate_shift(seq, cfg["base_image_seq_len"], cfg["max_image_seq_len"],
                                     cfg["base_shift"], cfg["max_shift"])
                sched.set_timesteps(N, sigmas=sigmas, mu=mu)
                t[f"sched_{name}_{N}_{seq}_sigmas"] = sched.sigmas.clone()
                t[f"sched_{name}_{N}_{seq}_timesteps"] = sched.timesteps.clone()

    # one Euler step (dev, 4 steps, seq 600, step index 1)
    sched = FlowMatchEulerDiscreteScheduler.from_config(DEV)
    sched.set_timesteps(4, sigmas=np.linspace(1.0, 0.25, 4), mu=calculate_shift(600))
    gen = torch.Generator().manual_seed(3)
    xs = torch.randn(2, 64, 64, generator=gen)
    v = torch.randn(2, 64, 64, generator=gen)
    t["step_x"], t["step_v"] = xs, v
    for i in range(2):
        xs_next = sched.step(v, sched.timesteps[i], xs if i == 0 else t["step_x1"],
                             return_dict=False)[0]
        t[f"step_x{i + 1}"] = xs_next
    t["step_sigmas"] = sched.sigmas.clone()

    t = {k: v.contiguous().float() for k, v in t.items()}
    save_file(t, os.path.join(OUT, "fixtures.safetensors"),
              metadata={"cap_avx2": caps["avx2"], "cap_default": caps["default"]})
    import diffusers

    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(f"Made by tools/make_flux_sched_fixtures.py (diffusers {diffusers.__version__}, "
                f"torch {torch.__version__}, numpy {np.__version__}); see its docstring.\n")


if __name__ == "__main__":
    if "--dump" in sys.argv:
        randn_dump()
    else:
        main()
