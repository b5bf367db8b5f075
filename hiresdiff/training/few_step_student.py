"""Training recipe of emoji-latent's few-step student (``hiresdiff/models/emoji_latent_lcm_lora``): latent consistency
distillation into a LoRA (Luo et al. 2023, LCM, Alg. 1; LCM-LoRA), our world's LCM-LoRA / Hyper-SD for the cascades'
later stages (``CascadeConfig(stage_lora=…, stage_scheduler=LCMScheduler…)``).

The teacher is the shipped emoji-latent UNet with classifier-free guidance at w (the scale its pipeline uses); the
student is the same UNet with a LoRA on its attention, feed-forward and convolution layers, the only trained weights.
For a training latent z₀ (an emoji's VAE posterior sample) and a step n of the 50-step DDIM grid t_n = 20n − 1
(k = 20 training steps apart):

    x_{t_{n+1}} = √ᾱ x₀ + √(1−ᾱ) ε                                         (the forward process)
    x̂_{t_n}    = DDIM(x_{t_{n+1}} → t_n; teacher's x₀ and ε under CFG at w)  (eq. 8: one ODE-solver step)
    f(x, t)     = c_skip(t)·x + c_out(t)·x̂₀(x, t)                          (eq. 5, LCMScheduler's boundary scalings)
    L           = pseudo-Huber(f_θ(x_{t_{n+1}}, t_{n+1}), sg f_θ(x̂_{t_n}, t_n)),  c = 0.001

the target being the student itself without gradient (LCM-LoRA's choice: no target EMA). The student then samples with
diffusers' ``LCMScheduler`` in 1–4 steps and no classifier-free guidance (``guidance_scale=1``): w is distilled in.
Resumable through the shared loop; the LoRA is saved as diffusers saves one (``load_lora_weights`` reads it).

    hiresdiff train-student --ship hiresdiff/models/emoji_latent_lcm_lora
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from hiresdiff.core.prediction import to_epsilon
from hiresdiff.data import emoji
from hiresdiff.models import EMOJI_LATENT_DIR
from hiresdiff.training.latent_model import encode_latents
from hiresdiff.training.loop import Phase, add_run_arguments, export_run, start_run

SOLVER_STEPS = 50  # the DDIM grid the distillation's ODE steps walk (LCM's skipping-step k = T / 50)
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
                "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"]  # fmt: skip
HUBER_C = 0.001


def boundary_scalings(t: torch.Tensor, sigma_data: float = 0.5, timestep_scaling: float = 10.0):
    """(c_skip, c_out) of the consistency function at ``t`` (LCM eq. 5, as ``LCMScheduler`` applies them): c_skip(0) =
    1, c_out(0) = 0."""
    scaled = t.float() * timestep_scaling
    return sigma_data**2 / (scaled**2 + sigma_data**2), scaled / (scaled**2 + sigma_data**2).sqrt()


def x0_and_eps(pred: torch.Tensor, x: torch.Tensor, alpha_bar: torch.Tensor, prediction: str):
    """(x₀, ε) of a prediction at x = √ᾱ x₀ + √(1−ᾱ) ε; a v-prediction's x₀ = √ᾱ x − √(1−ᾱ) v directly (stable where
    ᾱ → 0, at the cosine schedule's last steps)."""
    eps = to_epsilon(pred, x, alpha_bar, prediction)
    if prediction == "v_prediction":
        return alpha_bar.sqrt() * x - (1 - alpha_bar).sqrt() * pred, eps
    return (x - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt(), eps


def train(args) -> None:
    from peft import LoraConfig, get_peft_model_state_dict

    run_dir = start_run(args)
    pipe = StableDiffusionPipeline.from_pretrained(args.teacher, torch_dtype=torch.float32)
    teacher, text_encoder, tokenizer = pipe.unet.requires_grad_(False), pipe.text_encoder, pipe.tokenizer
    student = copy.deepcopy(teacher)
    student.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=LORA_TARGETS))
    phase = Phase("student", {"unet": student}, run_dir, args, args.steps, args.lr)
    generator = torch.Generator().manual_seed(args.seed + phase.step)

    train_split = emoji.load(32, "train", args.data)
    with torch.no_grad():
        mean, std = encode_latents(pipe.vae, train_split.images)
        ids = tokenizer(train_split.names * 2, padding="max_length", return_tensors="pt").input_ids
        embeddings = torch.cat([text_encoder(ids[i : i + 256])[0] for i in range(0, len(ids), 256)])
        empty = text_encoder(tokenizer([""], padding="max_length", return_tensors="pt").input_ids)[0]
    alphas = pipe.scheduler.alphas_cumprod.float()
    prediction = pipe.scheduler.config.prediction_type
    skip = pipe.scheduler.config.num_train_timesteps // SOLVER_STEPS

    def consistency(unet, x, t, condition):
        a = alphas[t].view(-1, 1, 1, 1)
        x0, _ = x0_and_eps(unet(x, t, encoder_hidden_states=condition).sample, x, a, prediction)
        c_skip, c_out = (c.view(-1, 1, 1, 1) for c in boundary_scalings(t))
        return c_skip * x + c_out * x0

    def loss() -> torch.Tensor:
        pick = torch.randint(len(mean), (args.batch_size,), generator=generator)
        z0 = mean[pick] + std[pick] * torch.randn(mean[pick].shape, generator=generator)
        n = torch.randint(1, SOLVER_STEPS, (args.batch_size,), generator=generator)
        t, s = n * skip + skip - 1, n * skip - 1  # t_{n+1} and t_n on the grid 20n − 1
        a_t, a_s = alphas[t].view(-1, 1, 1, 1), alphas[s].view(-1, 1, 1, 1)
        noise = torch.randn(z0.shape, generator=generator)
        x_t = a_t.sqrt() * z0 + (1 - a_t).sqrt() * noise
        condition = embeddings[pick]
        with torch.no_grad():
            both = teacher(
                torch.cat([x_t, x_t]),
                torch.cat([t, t]),
                encoder_hidden_states=torch.cat([condition, empty.expand_as(condition)]),
            ).sample
            cond, uncond = both.chunk(2)
            x0, eps = x0_and_eps(uncond + args.guidance * (cond - uncond), x_t, a_t, prediction)
            x_s = a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps  # one DDIM step of the guided teacher
            target = consistency(student, x_s, s, condition)
        online = consistency(student, x_t, t, condition)
        return (((online.float() - target.float()) ** 2 + HUBER_C**2).sqrt() - HUBER_C).mean()

    def export() -> None:
        ema = phase.ema_modules()["unet"]

        def save(folder: Path) -> None:
            StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(ema))

        info = {
            "teacher": "emoji-latent",
            "guidance_distilled": args.guidance,
            "command": f"hiresdiff train-student --steps {args.steps} --batch-size {args.batch_size} "
            f"--rank {args.rank} --guidance {args.guidance} --lr {args.lr} --seed {args.seed}",
        }
        export_run(args, run_dir, phase, save, info)

    phase.run(loss, args.save_every, args.log_every, export)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_run_arguments(p, "emoji_latent_lcm_lora")  # the shared options, with this recipe's defaults below
    p.add_argument("--teacher", default=str(EMOJI_LATENT_DIR), help="the pipeline folder distilled (emoji-latent)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--rank", type=int, default=16, help="the LoRA's rank")
    p.add_argument("--guidance", type=float, default=7.5, help="the teacher's CFG scale, distilled into the student")
    p.set_defaults(lr=1e-4, warmup=100, batch_size=32, ema_decay=0.99)
    return p
