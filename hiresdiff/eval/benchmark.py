"""The Upsample Guidance reproduction benchmark on the embedded emoji model (issue 4).

Every method gets the same seeds, the same class labels and the same resolution-consistent noise
(drawn at the largest size, reduced with √k·D), and is compared with held-out real emoji at the
same size. Methods at each scale m: naive sampling at m×; the trained-size samples enlarged
(bicubic, nearest); UG over a θ sweep at η = 1, a few η at θ = 1, the linear weight schedule, ×2
guidance nested at power-of-two scales above 2, and the ablations of eq. 3 (without τ, without
1/√P, without both). Scales above 2× get fewer images (same pixel count as 2×).

Metrics: sliced Wasserstein distance on Laplacian-pyramid patches, Fréchet distance and KID in
the download-free random-conv feature space (and Inception-v3 FID when a weights file is given),
the fine-detail energy relative to real images (grain > 1, blur < 1), and the paired
cross-resolution consistency RMSE(D[m× sample], trained-size sample).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from hiresdiff.core.noise import lowres_noise
from hiresdiff.data import emoji
from hiresdiff.eval import metrics
from hiresdiff.integrations.pixel import initial_noise, load_pixel_model, sample, to_pil
from hiresdiff.methods.upsample_guidance import UpsampleGuidanceConfig, is_power_of_two, nested_levels


@dataclass(frozen=True)
class Method:
    """One way to get images at ``scale``× the trained size."""

    name: str
    scale: int
    kind: str  # "naive", "ug" or "enlarge"
    theta: float = 0.0
    eta: float = 1.0
    schedule: str = "step"
    adjust_time: bool = True
    adjust_power: bool = True
    nested: bool = False  # UG as ×2 guidance nested log2(scale) times instead of one factor-`scale` level
    resize: Optional[str] = None  # "bicubic" or "nearest" for kind == "enlarge"

    def ug_levels(self) -> list[UpsampleGuidanceConfig]:
        """The UG configs of this method, outermost first (one level unless ``nested``)."""
        config = dict(theta=self.theta, eta=self.eta, schedule=self.schedule, adjust_time=self.adjust_time,
                      adjust_power=self.adjust_power)
        return nested_levels(self.scale, **config) if self.nested else [UpsampleGuidanceConfig(factor=self.scale, **config)]


def methods_for(scale: int, thetas, etas, ablations: bool = True, linear_thetas=(1.0,)) -> list[Method]:
    """The comparison set at one scale (θ = 0 is naive, so the sweep starts above it).

    UG over ``thetas`` (step schedule, η = 1), θ = 1 at each η < 1 in ``etas``, the linear schedule at
    ``linear_thetas``, at power-of-two scales above 2 also ×2 guidance nested (θ = 1), and the ablations.
    """
    out = [Method(f"naive {scale}x", scale, "naive"),
           Method(f"bicubic 1x->{scale}x", scale, "enlarge", resize="bicubic"),
           Method(f"nearest 1x->{scale}x", scale, "enlarge", resize="nearest")]
    out += [Method(f"UG θ={t:g}", scale, "ug", theta=t) for t in thetas if t > 0]
    out += [Method(f"UG θ=1 η={e:g}", scale, "ug", theta=1.0, eta=e) for e in etas if e < 1]
    out += [Method(f"UG θ={t:g} linear", scale, "ug", theta=t, schedule="linear") for t in linear_thetas]
    if scale > 2 and is_power_of_two(scale):
        out += [Method("UG θ=1 ×2 nested", scale, "ug", theta=1.0, nested=True)]
    if ablations:
        out += [Method("UG θ=1 without τ", scale, "ug", theta=1.0, adjust_time=False),
                Method("UG θ=1 without 1/√P", scale, "ug", theta=1.0, adjust_power=False),
                Method("UG θ=1 without both", scale, "ug", theta=1.0, adjust_time=False, adjust_power=False)]
    return out


@dataclass
class Settings:
    model: Optional[str] = None
    data: Optional[str] = None
    num_images: int = 96
    steps: int = 20
    scheduler: str = "sde-dpm++"
    seed: int = 0
    scales: tuple = (2, 4)
    thetas: tuple = (0.25, 0.5, 1.0, 1.5, 2.0)
    thetas_4x: tuple = (0.5, 1.0, 1.5)
    etas: tuple = (0.6,)
    linear_thetas: tuple = (1.0,)
    batch_size: int = 8  # small batches stay in cache: 1.6x faster per image than 64 on this CPU
    grid_rows: int = 8
    inception: Optional[str] = None
    out_dir: str = "benchmarks/results"
    command: str = ""

    def images_at(self, scale: int) -> int:
        """Images per method at ``scale``×: ``num_images`` up to 2×, ``num_images·4/scale²`` above (same pixel count)."""
        return self.num_images if scale <= 2 else max(2, self.num_images * 4 // scale**2)

    @classmethod
    def quick(cls, **overrides) -> "Settings":
        """A smoke-test configuration: few images, 2 steps, one θ and η, 2× only."""
        return cls(**{"num_images": 8, "steps": 2, "scales": (2,), "thetas": (1.0,), "etas": (0.6,),
                      "grid_rows": 2, **overrides})


def sample_batched(unet, scheduler, noise, labels, method: Optional[Method], steps, batch_size, seed,
                   noise_size=None) -> torch.Tensor:
    """Samples from the given noise in batches (batch i seeded with ``seed + i`` for stochastic schedulers,
    whose per-step noise is drawn at ``noise_size`` and reduced, as the initial noise was)."""
    h, w = noise.shape[-2:]
    ug = method.ug_levels() if method is not None and method.kind == "ug" else None
    parts = []
    for i in range(0, len(noise), batch_size):
        lab = None if labels is None else labels[i:i + batch_size]
        parts.append(sample(unet, scheduler, height=h, width=w, num_images=len(noise[i:i + batch_size]), seed=seed + i,
                            steps=steps, ug=ug, class_labels=lab, noise=noise[i:i + batch_size], noise_size=noise_size,
                            progress=False))
    return torch.cat(parts)


def enlarge(images: torch.Tensor, scale: int, mode: str) -> torch.Tensor:
    kwargs = {"align_corners": False} if mode == "bicubic" else {}
    return F.interpolate(images, scale_factor=scale, mode=mode, **kwargs).clamp(-1, 1)


def score(images, real, trained, features, inception=None) -> dict:
    """All metrics of one image set against real images of its size and its trained-size partners."""
    feats_gen, feats_real = features(images), features(real)
    out = {f"SWD {k}": v for k, v in metrics.sliced_wasserstein(images, real).items()}
    out["FD rand"] = metrics.frechet_distance(feats_gen, feats_real)
    out["KID rand ×1e3"] = 1e3 * metrics.kernel_inception_distance(feats_gen, feats_real, subset_size=100, num_subsets=50).mean
    if inception is not None:
        out["FID"] = metrics.fid(images, real, inception)
    out["detail ×real"] = metrics.detail_energy_ratio(images, real)
    out["paired RMSE"] = metrics.median_paired_rmse(images, trained) if trained is not None else float("nan")
    return out


def run(settings: Settings, progress: bool = True) -> dict:
    """Sample every method, score it, and write the table, θ plot, grids and JSON to ``settings.out_dir``."""
    from tqdm.auto import tqdm

    from hiresdiff.generate import trained_size

    unet, scheduler = load_pixel_model(settings.model or _embedded(), settings.scheduler)
    h, w = trained_size(unet)
    if h != 32 or w != 32:
        raise ValueError(f"the benchmark compares with 32² emoji ground truth; the model's trained size is {h}x{w}")
    data_path = settings.data
    test = {r: emoji.load(r, "test", data_path) for r in (32, *[32 * s for s in settings.scales])}
    train = {r: emoji.load(r, "train", data_path) for r in test}
    n = min(settings.num_images, len(test[32].images))
    gen = torch.Generator().manual_seed(settings.seed)
    pick = torch.randperm(len(test[32].images), generator=gen)[:n]
    labels = test[32].labels[pick] if unet.config.num_class_embeds else None
    big = 32 * max(settings.scales)
    noise = initial_noise(n, 3, big, big, settings.seed)
    features = {r: metrics.RandomConvFeatures(resolution=r, seed=0) for r in test}
    inception = metrics.InceptionFeatures(settings.inception) if settings.inception else None

    results = {"settings": asdict(settings), "rows": {}, "timing": {}, "images": {}}
    floor_pick = torch.randperm(len(train[32].images), generator=gen)[:n]
    for r in test:  # real-vs-real floor: as many train images as each method has, against the held-out test images
        results["images"][str(r)] = count = min(n, settings.images_at(r // 32))
        results["rows"][f"{r}|real train vs test"] = score(train[r].images[floor_pick[:count]], test[r].images, None,
                                                            features[r], inception)

    start = time.time()
    trained = sample_batched(unet, scheduler, lowres_noise(noise, big // 32), labels, None, settings.steps, settings.batch_size,
                             settings.seed, (big, big))
    results["timing"]["32|trained 1x"] = (time.time() - start) / n
    results["rows"]["32|trained 1x"] = score(trained, test[32].images, None, features[32], inception)
    grids = {32: {"trained 1x": trained[:settings.grid_rows]}}
    jobs = [m for s in settings.scales for m in methods_for(s, settings.thetas if s == 2 else settings.thetas_4x, settings.etas,
                                                            ablations=s == 2, linear_thetas=settings.linear_thetas)]
    for method in tqdm(jobs, desc="benchmark", disable=not progress):
        res = 32 * method.scale
        count = results["images"][str(res)]  # the first `count` seeds of the 32² set
        start = time.time()
        if method.kind == "enlarge":
            images = enlarge(trained[:count], method.scale, method.resize)
        else:
            images = sample_batched(unet, scheduler, lowres_noise(noise[:count], big // res),
                                    None if labels is None else labels[:count], method,
                                    settings.steps, settings.batch_size, settings.seed, (big, big))
        key = f"{res}|{method.name}"
        results["timing"][key] = (time.time() - start) / count
        results["rows"][key] = {**score(images, test[res].images, trained[:count], features[res], inception),
                                "θ": method.theta if method.kind == "ug" else (0.0 if method.kind == "naive" else None)}
        grids.setdefault(res, {})[method.name] = images[:settings.grid_rows]
    write_outputs(results, grids, trained[:settings.grid_rows], Path(settings.out_dir))
    return results


def _embedded():
    from hiresdiff.models import EMBEDDED_MODEL_DIR

    return EMBEDDED_MODEL_DIR


def write_outputs(results: dict, grids: dict, trained, out_dir: Path) -> None:
    from hiresdiff.eval.report import markdown_table, theta_plot
    from hiresdiff.grid import labelled_grid, save_png

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ug_benchmark.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    (out_dir / "ug_benchmark.md").write_text(markdown_table(results))
    theta_plot(results, out_dir / "ug_theta_sweep.png")
    for res, columns in grids.items():
        if res == 32:
            continue
        names = ["trained 32²", *columns]
        images = [to_pil(trained), *[to_pil(c) for c in columns.values()]]
        save_png(labelled_grid(images, names, res if res > 64 else 96), out_dir / f"ug_grid_{res}.png", force=True)
