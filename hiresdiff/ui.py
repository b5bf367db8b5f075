"""``hiresdiff ui``: a Gradio page to compare methods and upscale images (``pip install -e ".[ui]"``).

The handlers (:class:`Handlers`) are plain functions over the Python API, validated with the CLI's own
checks (:mod:`hiresdiff.options`, the recipes' stage plans) and a size cap, so they are tested without
a browser. :func:`build_app` lays them out in Gradio: an error becomes a line in the page's status box,
never a stack trace; requests are queued one at a time per process; the app listens on 127.0.0.1
unless told otherwise. Columns appear as they finish (the trained-size preview first).
"""

from __future__ import annotations

import queue
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from diffusers import AutoencoderKL, UNet2DModel

from hiresdiff.comparison import comparison, pipeline_comparison
from hiresdiff.defaults import DEFAULT_SCHEDULER
from hiresdiff.denoisers.registry import family_of, find_denoiser, trained_size
from hiresdiff.grid import save_video
from hiresdiff.image_upscale import image_tensor, target_size, upscale
from hiresdiff.loading.pipelines import load_pipeline, pipeline_config
from hiresdiff.loading.pixel_model import load_pixel_model
from hiresdiff.methods.family_defaults import DIFFUSION
from hiresdiff.methods.upsample_guidance import LATENT_ETA, PIXEL_ETA
from hiresdiff.models import EMBEDDED_MODEL_DIR, model_settings, resolve_model, shipped_upsamplers
from hiresdiff.options import COMPARISON_METHODS, MethodOptions, parse_methods, recipes_for
from hiresdiff.recipe import PRESETS

UI_METHODS = tuple(dict.fromkeys(COMPARISON_METHODS + PRESETS + ("freescale+ug",)))
OWNED_MODELS = {
    "emoji32 (pixel, the embedded model)": None,
    "emoji-latent (text-to-image pipeline)": "emoji-latent",
    "emoji-flux (FLUX-architecture pipeline)": "emoji-flux",
    "emoji-video (AnimateDiff clips)": "emoji-video",
}
CLIP_FRAMES = 8  # the frames a video pipeline's clips have on the page (emoji-video's trained length)
DEFAULT_MAX_SIDE = 256  # the embedded model's 8×; a request above it is refused before any work


@dataclass
class Handlers:
    """The page's actions on ``model``: a pixel ``UNet2DModel`` folder (default the embedded model) or a
    diffusers SD 1.x/2.x / SDXL pipeline folder, hub id or short name such as ``emoji-latent`` (then the prompt is
    used, one image per method)."""

    model: Optional[str] = None
    max_side: int = DEFAULT_MAX_SIDE

    def __post_init__(self):
        self.model = resolve_model(self.model)
        self._pipe = None
        self._clips: Optional[Path] = None  # where a video pipeline's clips are written for the page

    @property
    def is_pipeline(self) -> bool:
        return self.model is not None and not (Path(self.model) / "config.json").exists()

    def check_size(self, height: int, width: int) -> None:
        if max(height, width) > self.max_side:
            raise ValueError(
                f"size {height}x{width} is above this server's cap of {self.max_side} pixels per side "
                "(hiresdiff ui --max-side)"
            )

    def trained_size(self) -> tuple[int, int]:
        """The model's trained size in pixels, from its configs (no weights loaded)."""
        if self.is_pipeline:
            model_index, folder = pipeline_config(self.model), resolve_model(self.model)
            trained = model_settings(self.model).trained_size
            if trained is not None:  # what the pipeline cannot know (FLUX)
                return trained, trained
            denoiser = "unet" if "unet" in model_index else "transformer"
            size = trained_size(UNet2DModel.load_config(folder, subfolder=denoiser))[0]
            factor = 2 ** (len(AutoencoderKL.load_config(folder, subfolder="vae")["block_out_channels"]) - 1)
        else:
            size, factor = UNet2DModel.load_config(self.model or EMBEDDED_MODEL_DIR)["sample_size"], 1
        height, width = (size, size) if isinstance(size, int) else size
        return height * factor, width * factor

    def pipeline(self):
        """The pipeline and its :class:`~hiresdiff.models.ModelSettings`, loaded on first use and kept."""
        if self._pipe is None:
            self._pipe = load_pipeline(self.model, progress=False)
        return self._pipe

    def is_video(self) -> bool:
        """Whether the model is a video pipeline (AnimateDiff, Wan): its columns are clips."""
        return self.is_pipeline and family_of(find_denoiser(self.pipeline()[0])[0]).video

    def clip_file(self, frames: list, label: str) -> str:
        """A column's clip as an animated GIF the page shows (in a folder of this process's)."""
        if self._clips is None:
            self._clips = Path(tempfile.mkdtemp(prefix="hiresdiff-ui-"))
        path = self._clips / f"{re.sub(r'[^A-Za-z0-9]+', '-', label).strip('-')}-{time.monotonic_ns()}.gif"
        return str(save_video(frames, path, fps=CLIP_FRAMES))

    def compare(
        self, methods, scale, seed, steps, num_images, theta=None, strength=None, alpha=None, prompt=""
    ) -> Iterator[tuple[list, str, int]]:
        """Yield ``(gallery, status, columns)`` after each column: gallery items are ``(PIL image, caption)`` in rows
        of ``columns`` (one column per method, the trained-size preview first; a video pipeline's: one animated GIF
        per column, the path of its clip of ``CLIP_FRAMES`` frames); the status names the column,
        counts the columns done and, after the preview, says how long the rest will take (from the preview's
        own time and each method's UNet work relative to it)."""
        methods = parse_methods(methods or [""])
        scale, seed, steps, num_images = int(scale), int(seed), int(steps), int(num_images)
        height, width = self.trained_size()
        self.check_size(height * scale, width * scale)
        options = MethodOptions(theta=theta, strength=strength, alpha=alpha)

        recipes = recipes_for(methods, options, shipped_upsamplers(self.model))  # checked before any model loads
        if not 1 <= num_images <= 8:
            raise ValueError(f"images must be between 1 and 8; got {num_images}")
        if self.is_pipeline and not (prompt or "").strip():
            raise ValueError("prompt: this model is a text-to-image pipeline; write a prompt")
        done_columns: list = []
        video = self.is_video()
        if self.is_pipeline:
            pipe, settings = self.pipeline()
            columns = _streamed(
                lambda on_column: pipeline_comparison(
                    pipe,
                    prompt,
                    sizes=[(height * scale, width * scale)],
                    recipes=recipes,
                    seed=seed,
                    steps=steps,
                    num_frames=CLIP_FRAMES if video else None,
                    on_column=on_column,
                    **settings.arguments(pipe),
                ),
                threading.Event(),
            )
        else:
            columns = _streamed(
                lambda on_column: comparison(
                    self.model,
                    scales=[scale],
                    methods=methods,
                    options=options,
                    seed=seed,
                    num_images=num_images,
                    steps=steps,
                    progress=False,
                    on_column=on_column,
                ),
                threading.Event(),
            )
        start = time.perf_counter()
        for done, (label, images) in enumerate(columns, start=1):
            done_columns.append((label, [self.clip_file(images, label)] if video else images))
            status = f"done: {label} ({done}/{len(recipes) + 1} columns)"
            if done == 1:  # the preview's time, scaled by every method's work, before the methods start
                default_eta = LATENT_ETA if self.is_pipeline else PIXEL_ETA
                work = sum(
                    relative_work(recipe, (height, width), (height * scale, width * scale), default_eta)
                    for recipe in recipes.values()
                )
                status += f"; the {len(recipes)} methods will take about {work * (time.perf_counter() - start):.0f} s"
            yield row_major(done_columns), status, len(done_columns)
        yield row_major(done_columns), f"finished {len(methods)} methods at {scale}× (seed {seed})", len(done_columns)

    def upscale(self, image, scale, method, seed, steps, class_label=None, prompt="") -> tuple:
        """``(result, status)`` for an uploaded PIL image."""
        if image is None:
            raise ValueError("upload an image first")
        methods = parse_methods([method or ""])
        self.check_size(*target_size(image.height, image.width, float(scale)))
        recipe = recipes_for(methods, default_upsamplers=shipped_upsamplers(self.model))[methods[0]]
        if self.is_pipeline:
            out = upscale(
                self.pipeline()[0],
                image,
                scale=float(scale),
                recipe=recipe,
                prompt=prompt or "",
                steps=int(steps),
                seed=int(seed),
            )[0]
        else:
            unet, scheduler = load_pixel_model(self.model or EMBEDDED_MODEL_DIR, DEFAULT_SCHEDULER)
            labels = None
            if unet.config.num_class_embeds is not None and class_label not in (None, ""):
                labels = torch.tensor([int(class_label)])
            out = upscale(
                unet,
                image_tensor(image),
                scale=float(scale),
                recipe=recipe,
                scheduler=scheduler,
                steps=int(steps),
                seed=int(seed),
                class_labels=labels,
                progress=False,
            )[0]
        return out, f"upscaled {image.width}x{image.height} → {out.width}x{out.height} with {methods[0]}"


def row_major(columns: list) -> list:
    """Gallery items ``(image, caption)`` of ``columns`` ``[(label, images), …]`` in rows, one column per method."""
    rows = max(len(images) for _, images in columns)
    return [(images[i], f"{label} #{i + 1}") for i in range(rows) for label, images in columns if i < len(images)]


def relative_work(recipe, trained, target, default_eta: float) -> float:
    """A recipe's UNet work for ``target`` relative to sampling the ``trained`` size once: Σ over its stages of
    pixels × the share of the steps it runs × (1 + its UG calls' pixels × η, the share of steps they run; η
    ``default_eta`` where the recipe leaves it to the model family); a cascade's stage 0 is the preview."""
    stages = recipe.stages(tuple(trained), tuple(target))
    pixels0 = trained[0] * trained[1]
    work = 0.0
    for stage in stages:
        if stage.index == 0 and recipe.cascade is not None:
            continue  # the trained-size preview itself
        share = 1.0 if stage.index == 0 else recipe.cascade.for_family(DIFFUSION).strength
        guided = sum(
            (config.eta if config.eta is not None else default_eta) / 4 ** (level + 1)
            for level, config in enumerate(stage.ug_levels)
        )
        work += stage.size[0] * stage.size[1] / pixels0 * share * (1 + guided)
    return work


def _streamed(run, stop: threading.Event) -> Iterator[tuple[str, list]]:
    """Run ``run(on_column)`` in a thread and yield each ``(label, images)`` as it arrives; re-raise its error.
    Closing the generator (the page's Cancel) sets ``stop``: the thread ends at its next column."""
    items: queue.Queue = queue.Queue()
    done = object()

    def on_column(label, images):
        if stop.is_set():
            raise KeyboardInterrupt("cancelled")
        items.put((label, images))

    def target():
        try:
            run(on_column)
            items.put(done)
        except BaseException as error:  # handed to the caller's thread
            items.put(error)

    threading.Thread(target=target, daemon=True).start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


FIELDS = {
    "method": "methods",
    "strength": "cascade strength",
    "theta": "UG θ",
    "alpha": "detail α",
    "eta": "UG η",
    "steps": "steps",
    "scale": "scale",
    "num-images": "images",
    "upsamplers": "upsamplers",
    "max-side": "this server's size cap",
    "max-pixels": "this server's size cap",
}


def web_words(message: str) -> str:
    """A checker's message in the page's words: a command-line flag (``--strength``) becomes the field's label."""
    return re.sub(r"--([a-z-]+)", lambda m: f"“{FIELDS[m.group(1)]}”" if m.group(1) in FIELDS else m.group(0), message)


def optional_number(text, name: str) -> Optional[float]:
    """A text field's number, ``None`` when empty; ``ValueError`` naming the field otherwise."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number or empty; got {text!r}") from None


def build_app(handlers):
    """The Gradio Blocks page over ``handlers``: one :class:`Handlers`, or ``{menu label: Handlers}`` offered in a
    model menu (the prompt box shows for text-to-image pipelines, the class box for pixel models)."""
    import gradio as gr

    menu = handlers if isinstance(handlers, dict) else {"model": handlers}
    first = next(iter(menu))

    def compare(model, prompt, methods, scale, seed, steps, num_images, theta, strength, alpha):
        try:
            options = [optional_number(v, n) for v, n in ((theta, "θ"), (strength, "strength"), (alpha, "α"))]
            for items, status, columns in menu[model or first].compare(
                methods, scale, seed, steps, num_images, *options, prompt=prompt
            ):
                yield gr.Gallery(value=items, columns=columns), status  # one column per method
        except (ValueError, FileNotFoundError) as error:
            yield [], f"Error: {web_words(str(error))}"

    def upscale(model, prompt, image, scale, method, seed, steps, class_label):
        try:
            return menu[model or first].upscale(image, scale, method, seed, steps, class_label, prompt=prompt)
        except (ValueError, FileNotFoundError) as error:
            return None, f"Error: {web_words(str(error))}"

    with gr.Blocks(title="hiresdiff") as app:
        gr.Markdown(
            "# hiresdiff: generate above the trained resolution\nEvery column from one seed; the first "
            "is the model's trained-size sample."
        )
        model = gr.Dropdown(list(menu), value=first, label="model", visible=len(menu) > 1, elem_id="model")
        prompt = gr.Textbox(
            "", label="prompt (text-to-image pipelines)", visible=menu[first].is_pipeline, elem_id="prompt"
        )
        with gr.Tab("Compare methods"):
            methods = gr.CheckboxGroup(list(UI_METHODS), value=["naive", "ug", "self-cascade+ug"], label="methods")
            with gr.Row():
                scale = gr.Slider(2, 8, value=2, step=1, label="scale", elem_id="scale")
                seed = gr.Number(0, precision=0, label="seed")
                steps = gr.Slider(2, 50, value=20, step=1, label="steps", elem_id="steps")
                num_images = gr.Slider(1, 8, value=2, step=1, label="images")
            with gr.Row():  # empty: the preset's value; like the CLI's flags, a value needs a method with that part
                theta = gr.Textbox("", label="UG θ", placeholder="1.0")
                strength = gr.Textbox("", label="cascade strength", placeholder="0.7")
                alpha = gr.Textbox(
                    "", label="detail α (also adds detail control to Self-Cascade)", placeholder="2 for FreeScale"
                )
            with gr.Row():
                go = gr.Button("Generate", variant="primary", elem_id="generate")
                cancel = gr.Button("Cancel", elem_id="cancel")
            status = gr.Textbox(label="status", interactive=False, elem_id="status")
            gallery = gr.Gallery(label="results (a column per method)", columns=4, elem_id="gallery")
            running = go.click(
                compare,
                [model, prompt, methods, scale, seed, steps, num_images, theta, strength, alpha],
                [gallery, status],
            )
            cancel.click(lambda: "cancelled", None, status, cancels=[running])  # sampling stops at its next column
        with gr.Tab("Upscale an image"):
            image = gr.Image(type="pil", label="image (the model's trained size)")
            with gr.Row():
                up_scale = gr.Slider(2, 4, value=2, step=1, label="scale")
                up_method = gr.Dropdown(
                    [m for m in UI_METHODS if m not in ("naive", "ug")], value="self-cascade", label="method"
                )
                up_seed = gr.Number(0, precision=0, label="seed")
                up_steps = gr.Slider(2, 50, value=20, step=1, label="steps")
                up_class = gr.Textbox("", label="class (empty: most likely)", visible=not menu[first].is_pipeline)
            up_go = gr.Button("Upscale", variant="primary", elem_id="upscale")
            up_status = gr.Textbox(label="status", interactive=False, elem_id="upscale-status")
            result = gr.Image(type="pil", label="result", format="png")
            up_go.click(
                upscale, [model, prompt, image, up_scale, up_method, up_seed, up_steps, up_class], [result, up_status]
            )
        model.change(
            lambda name: (gr.update(visible=menu[name].is_pipeline), gr.update(visible=not menu[name].is_pipeline)),
            model,
            [prompt, up_class],
        )
    return app


def launch(
    model: Optional[str] = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_side: int = DEFAULT_MAX_SIDE,
    block: bool = True,
):
    """Build and serve the app, one request at a time: on ``model``, or without one a menu of the owned models
    (:data:`OWNED_MODELS`)."""
    menu = (
        {label: Handlers(model=name, max_side=max_side) for label, name in OWNED_MODELS.items()}
        if model is None
        else Handlers(model=model, max_side=max_side)
    )
    app = build_app(menu)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_error=False)
    return app
