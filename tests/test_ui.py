"""The web UI: its handlers without a browser, then the page in headless Chromium."""

import os
import re
import shutil
import socket
import time
from pathlib import Path

import pytest
from PIL import Image

gradio = pytest.importorskip("gradio", reason="the UI extra is not installed: pip install -e '.[ui]'")

from hiresdiff.ui import Handlers, build_app  # noqa: E402


def test_compare_streams_the_trained_preview_first_then_each_method(tiny_pixel_model_dir):
    handlers = Handlers(model=str(tiny_pixel_model_dir), max_side=64)
    updates = list(handlers.compare(["naive,ug"], 2, 0, 2, 2))
    statuses = [status for _, status, _ in updates]
    assert re.fullmatch(r"done: 8² trained \(1/3 columns\); the 2 methods will take about \d+ s", statuses[0])
    assert statuses[1:] == [
        "done: 16² naive (2/3 columns)",
        "done: 16² ug θ=1 (3/3 columns)",
        "finished 2 methods at 2× (seed 0)",
    ]
    assert [columns for _, _, columns in updates] == [1, 2, 3, 3]
    gallery = updates[-1][0]  # rows of one image per method: one column per method
    assert [caption for _, caption in gallery] == [
        "8² trained #1",
        "16² naive #1",
        "16² ug θ=1 #1",
        "8² trained #2",
        "16² naive #2",
        "16² ug θ=1 #2",
    ]
    assert gallery[0][0].size == (8, 8) and gallery[-1][0].size == (16, 16)


def test_the_estimate_counts_each_methods_unet_work():
    from hiresdiff.recipe import Recipe
    from hiresdiff.ui import relative_work

    assert relative_work(Recipe.naive(), (32, 32), (64, 64), 1.0) == 4.0  # 4× the pixels, every step
    assert relative_work(Recipe.upsample_guidance(), (32, 32), (64, 64), 1.0) == 4.0 * (1 + 1 / 4)  # + a 32² call
    assert relative_work(Recipe.upsample_guidance(), (32, 32), (64, 64), 0.6) == pytest.approx(4.0 * (1 + 0.6 / 4))
    assert relative_work(Recipe.self_cascade(), (32, 32), (64, 64), 1.0) == pytest.approx(4 * 0.7)  # stage 0 = preview


def test_messages_are_in_the_pages_words():
    from hiresdiff.ui import web_words

    assert web_words("--strength applies to cascades") == "“cascade strength” applies to cascades"
    assert web_words("--method needs at least one of naive") == "“methods” needs at least one of naive"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(methods=["naive", "magic"], scale=2), "'magic'"),
        (dict(methods=[], scale=2), "--method needs"),  # the page shows it as “methods” needs (web_words)
        (dict(methods=["naive"], scale=16), "above this server's cap of 64"),
        (dict(methods=["naive"], scale=2, strength=0.5), "--strength applies to"),
    ],
)
def test_compare_refuses_bad_input_before_any_work(tiny_pixel_model_dir, kwargs, message):
    handlers = Handlers(model=str(tiny_pixel_model_dir), max_side=64)
    with pytest.raises(ValueError, match=message):
        next(handlers.compare(kwargs.pop("methods"), kwargs.pop("scale"), 0, 2, 1, **kwargs))


def test_upscale_handler_on_the_embedded_model():
    handlers = Handlers(max_side=64)
    image = Image.new("RGB", (32, 32), (250, 200, 40))
    result, status = handlers.upscale(image, 2, "self-cascade", 0, 3, "2")
    assert result.size == (64, 64) and "32x32 → 64x64" in status
    with pytest.raises(ValueError, match="cap"):
        handlers.upscale(image, 4, "self-cascade", 0, 3)
    with pytest.raises(ValueError, match="image size"):
        handlers.upscale(image.resize((24, 24)), 2, "self-cascade", 0, 3)
    with pytest.raises(ValueError, match="upload"):
        handlers.upscale(None, 2, "self-cascade", 0, 3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def test_the_page_generates_a_comparison_and_shows_errors_in_a_real_browser(tiny_pixel_model_dir, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    screenshot = os.environ.get("HIRESDIFF_UI_SCREENSHOT")  # for the README: the embedded model, saved there
    app = build_app(
        Handlers(model=None if screenshot else str(tiny_pixel_model_dir), max_side=64 if screenshot else 32)
    )
    app.queue(default_concurrency_limit=1)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, show_error=False)
    try:
        start = time.perf_counter()
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 300)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#generate"))
        browser.find_element(By.CSS_SELECTOR, "#generate").click()
        status = lambda d: d.find_element(By.CSS_SELECTOR, "#status textarea").get_attribute("value")  # noqa: E731
        seen = []  # (status, images in the gallery) at each poll, in order: what the page showed as it streamed

        def observe(d):
            seen.append((status(d), len(d.find_elements(By.CSS_SELECTOR, "#gallery img"))))
            return seen[-1]

        wait.until(lambda d: observe(d)[1] > 0)
        first_image_seconds = time.perf_counter() - start  # a report (printed below), never asserted on
        wait.until(lambda d: observe(d)[0].startswith("finished"))
        finished_seconds = time.perf_counter() - start
        # the order of events, whatever the machine's speed: the page shows the columns as they finish, counting up,
        # then "finished" (which statuses a poll catches in between depends on the speed: not asserted)
        columns = [int(m.group(1)) for text, _ in seen if (m := re.search(r"\((\d+)/\d+ columns\)", text))]
        assert columns == sorted(columns) and seen[-1][0].startswith("finished") and seen[-1][1] > 0, seen
        print("statuses as the page showed them:", list(dict.fromkeys(text for text, _ in seen)))
        images = browser.find_elements(By.CSS_SELECTOR, "#gallery img")
        assert len(images) >= 4 and all(img.get_attribute("src") for img in images)
        shot = Path(screenshot or tmp_path / "ui.png")
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 0

        scale = browser.find_element(By.CSS_SELECTOR, "#scale input[type=number]")
        scale.send_keys(Keys.CONTROL, "a")
        scale.send_keys("8", Keys.TAB)
        browser.find_element(By.CSS_SELECTOR, "#generate").click()
        wait.until(lambda d: status(d).startswith("Error:"))
        assert "cap of" in status(browser) and "Traceback" not in browser.page_source
        assert browser.find_elements(By.CSS_SELECTOR, "#cancel")  # a running comparison can be cancelled
        print(f"from page load: first image {first_image_seconds:.1f} s, finished comparison {finished_seconds:.1f} s")
    finally:
        app.close()


def test_optional_number_fields():
    from hiresdiff.ui import optional_number

    assert optional_number("", "θ") is None and optional_number(" 1.5 ", "θ") == 1.5
    with pytest.raises(ValueError, match="θ must be a number"):
        optional_number("abc", "θ")


def test_handlers_on_a_pipeline_folder_use_the_prompt(tmp_path):
    from tiny_pipelines import load

    load("sd15").save_pretrained(tmp_path / "sd15")
    handlers = Handlers(model=str(tmp_path / "sd15"), max_side=64)
    assert handlers.is_pipeline and handlers.trained_size() == (16, 16)
    with pytest.raises(ValueError, match="prompt"):
        next(handlers.compare(["naive"], 2, 0, 2, 1))
    updates = list(handlers.compare(["naive,self-cascade"], 2, 0, 2, 1, prompt="a red cat"))
    statuses = [s for _, s, _ in updates]
    assert statuses[0].startswith("done: 16² trained (1/3 columns); the 2 methods will take about")
    assert statuses[1:3] == ["done: 32² naive (2/3 columns)", "done: 32² self-cascade (3/3 columns)"]
    assert updates[-1][0][-1][0].size == (32, 32)
    result, status = handlers.upscale(Image.new("RGB", (16, 16), "red"), 2, "freescale", 0, 2, prompt="a red cat")
    assert result.size == (32, 32) and "16x16 → 32x32" in status


def test_cancelling_a_stream_stops_the_sampling_thread_at_its_next_column():
    import threading

    from hiresdiff.ui import _streamed

    finished, stopped = threading.Event(), threading.Event()

    def run(on_column):
        try:
            for k in range(100):
                on_column(f"column {k}", [])
                time.sleep(0.01)
            finished.set()
        except KeyboardInterrupt:
            stopped.set()

    stop = threading.Event()
    stream = _streamed(run, stop)
    assert next(stream)[0] == "column 0"
    stream.close()  # what Gradio does to a cancelled event's generator
    assert stop.is_set() and stopped.wait(5) and not finished.is_set()


def test_without_a_model_the_page_offers_every_owned_model():
    import gradio as gr

    from hiresdiff.ui import OWNED_MODELS

    menu = {label: Handlers(model=name, max_side=64) for label, name in OWNED_MODELS.items()}
    assert [h.is_pipeline for h in menu.values()] == [False, True, True, True]
    app = build_app(menu)
    [dropdown] = [b for b in app.blocks.values() if isinstance(b, gr.Dropdown) and b.elem_id == "model"]
    assert [value for _, value in dropdown.choices] == list(OWNED_MODELS) and dropdown.visible
    single = build_app(Handlers(max_side=64))
    assert not [b for b in single.blocks.values() if isinstance(b, gr.Dropdown) and b.elem_id == "model"][0].visible


def test_a_video_pipeline_shows_each_column_as_an_animated_clip():
    handlers = Handlers(model="emoji-video", max_side=64)
    updates = list(handlers.compare(["naive"], 2, 0, 2, 1, prompt="cat face"))
    gallery = updates[-1][0]
    assert [caption for _, caption in gallery] == ["32² trained #1", "64² naive #1"]
    for (path, _), side in zip(gallery, (32, 64)):
        clip = Image.open(path)
        assert clip.format == "GIF" and clip.n_frames == 8 and clip.size == (side, side)
