"""The web page (`kinema serve`): a real server on a free loopback port, driven by headless
Chromium (Debian's chromium and chromium-driver, through selenium) and by 20 clients at once;
its limits, uploads, session folders and cleanup checked on their own.

KINEMA_SCREENSHOT=docs/serve.png saves the browser test's screenshot of the page there.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from kinema import cli
from kinema.errors import KinemaError
from kinema.serve import MODES, Limits, Outputs, StepProgress, read_upload
from kinema.video import read_video

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
PROMPT = "a red ball bounces on green grass"
SMALL = dict(width=96, height=64, seconds=1, fps=8, steps=4)  # 8 frames of 96x64: well under a second


@pytest.fixture(scope="module")
def pipe():
    from kinema.pipeline import Pipeline

    return Pipeline.from_pretrained("world")


# ---------------------------------------------------------------- files a user might upload


def bad_files(folder: Path) -> dict[str, Path]:
    """A corrupt mp4, an empty file, an audio-only file and a text file named as a video."""
    files = {"corrupt": folder / "corrupt.mp4", "empty": folder / "empty.mp4", "audio": folder / "voice.m4a",
             "wrong type": folder / "notes.webm"}  # fmt: skip
    files["corrupt"].write_bytes(np.random.default_rng(0).bytes(4096))
    files["empty"].write_bytes(b"")
    files["wrong type"].write_text("not a video\n")
    with av.open(str(files["audio"]), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return files


def test_bad_uploads_give_clear_messages_naming_the_file(tmp_path):
    expected = {"corrupt": "cannot decode", "empty": "is empty", "audio": "no video stream",
                "wrong type": "cannot decode"}  # fmt: skip
    for kind, path in bad_files(tmp_path).items():
        with pytest.raises(KinemaError) as e:
            read_upload(path, Limits())
        message = str(e.value)
        assert expected[kind] in message and message.startswith(path.name), message
        assert str(tmp_path) not in message  # the server's folders are not shown


def test_uploads_over_the_limits_are_refused_before_decoding(tmp_path):
    from kinema.video import write_video

    clip = write_video(tmp_path / "clip.mp4", np.zeros((40, 64, 64, 3), np.uint8), 8)
    assert read_upload(clip, Limits()).frames.shape == (40, 64, 64, 3)
    with pytest.raises(KinemaError, match="pixel-frames"):
        read_upload(clip, Limits(max_pixels_frames=64 * 64 * 39))
    with pytest.raises(KinemaError, match="at most 4 s"):
        read_upload(clip, Limits(max_seconds=4))
    with pytest.raises(KinemaError, match="larger than"):
        read_upload(clip, Limits(max_upload_mb=clip.stat().st_size / 2**20 / 2))
    with pytest.raises(KinemaError, match="upload the video first"):
        read_upload(None, Limits(), "video")


def test_limits_refuse_large_results_and_bad_settings():
    limits = Limits()
    limits.check(128, 128, 120, 15.0)  # the shipped model's size for 15 s at 8 fps
    with pytest.raises(KinemaError, match="--max-pixels-frames"):
        limits.check(1920, 1080, 16, 2.0)
    with pytest.raises(KinemaError, match="--max-seconds"):
        limits.check(64, 64, 8, 16.0)
    for bad in (dict(concurrency=0), dict(queue=-1), dict(max_seconds=0), dict(output_age=float("nan"))):
        with pytest.raises(KinemaError):
            Limits(**bad)


# ---------------------------------------------------------------- result files


def test_session_folders_are_hashed_and_separate(tmp_path):
    outputs = Outputs(tmp_path, age=60)
    a = outputs.new_file("session-a", "generate", ".mp4")
    a.write_bytes(b"a")
    outputs.new_file("../../etc", "generate", ".mp4").write_bytes(b"b")  # a session id is never a path
    assert all(p.parent.parent == tmp_path for p in tmp_path.rglob("*.mp4"))
    assert outputs.files("session-a") == [a]
    assert outputs.files("session-b") == []


def test_old_results_are_removed(tmp_path):
    outputs = Outputs(tmp_path, age=60)
    old, new = outputs.new_file("s", "generate", ".mp4"), outputs.new_file("s", "image", ".png")
    old.write_bytes(b"old")
    new.write_bytes(b"new")
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert outputs.remove_old() == 1
    assert not old.exists() and new.exists()
    assert outputs.remove_old(now=time.time() + 120) == 1
    assert list(tmp_path.iterdir()) == []  # the emptied session folder too
    outputs.start()  # the cleaner thread stops when asked
    outputs.stop()
    assert not any(t.name == "kinema-outputs-cleaner" for t in threading.enumerate())


# ---------------------------------------------------------------- the command


def test_cli_defaults_are_the_limits_defaults():
    from typer.main import get_command

    params = {p.name: p.default for p in get_command(cli.app).commands["serve"].params}
    assert (params["host"], params["port"]) == ("127.0.0.1", 7860)
    for name in ("concurrency", "queue", "max_pixels_frames", "max_seconds", "max_upload_mb", "output_age"):
        assert params[name] == getattr(Limits(), name), name


def test_every_mode_has_a_tab_and_an_endpoint(pipe, tmp_path):
    from kinema.serve import build_app

    keys = ["generate", "image", "animate", "extend", "loop", "connect", "edit", "long"]
    assert [m.key for m in MODES] == keys
    app = build_app(pipe, Limits(), Outputs(tmp_path, 60))
    public = [fn.api_name for fn in app.fns.values() if fn.api_visibility == "public"]
    assert public == keys  # the page's helpers (caption preview, upload check) are not endpoints


def test_serve_without_gradio_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    monkeypatch.delitem(sys.modules, "kinema.serve")
    monkeypatch.setattr(sys, "argv", ["kinema", "serve"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "pip install" in err and "[serve]" in err and "Traceback" not in err


def test_caption_preview_is_the_caption_the_pipeline_reads(pipe):
    for prompt, seed in ((PROMPT, 0), ("two blue squares slide left", 3)):
        assert pipe.read_prompt(prompt, seed, None)[0] == pipe.caption(prompt, seed)
    caption, notes = pipe.read_prompt("a red ball and a purple elephant", 0, None)
    assert caption == pipe.caption("a red ball and a purple elephant", 0)
    assert notes  # the expander says what it left out
    assert pipe.read_prompt(PROMPT, 0, False) == (PROMPT, ())


def test_progress_bar_is_fed_by_the_sampler_steps(pipe):
    shown = []
    progress = StepProgress(lambda value, desc=None, unit=None: shown.append((value, desc)))
    pipe.generate(PROMPT, 64, 64, 1, steps=3, progress=False, callback=progress)
    assert shown == [((1, 3), "sampling"), ((2, 3), "sampling"), ((3, 3), "sampling")]


# ---------------------------------------------------------------- the real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`kinema serve` in its own process on a free loopback port (concurrency 1, queue 8), stopped
    with Ctrl-C (SIGINT) at the end, killed if it does not stop."""
    folder = tmp_path_factory.mktemp("serve")
    port = free_port()
    log = (folder / "server.log").open("w")
    env = {**os.environ, "KINEMA_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "kinema.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--concurrency", "1", "--queue", "8", "--outputs", str(folder / "outputs")],
                            stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while not answers(url):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the server did not start:\n{(folder / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield dict(url=url, proc=proc, folder=folder)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def fetch(url: str, path: Path) -> Path:
    with urllib.request.urlopen(url, timeout=30) as r:
        path.write_bytes(r.read())
    return path


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them): "
                           "apt-get install chromium chromium-driver")  # fmt: skip
def test_page_in_a_real_browser(server, tmp_path):
    """Type a prompt, generate, play the video; a corrupt file to animate gives its message;
    extend the clip just made."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1300",
                 f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    wait = WebDriverWait(driver, 90)
    css = lambda selector: driver.find_element(By.CSS_SELECTOR, selector)  # noqa: E731

    def fill(selector: str, value) -> None:
        field = css(selector)
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(str(value))

    def form(mode: str, prompt: str, **values) -> None:
        wait.until(lambda d: css(f"#{mode}-prompt textarea").is_displayed())
        fill(f"#{mode}-prompt textarea", prompt)
        for name, value in values.items():
            fill(f"#{mode}-{name} input", value)

    def result(mode: str, name: str) -> Path:
        """Press generate; wait for the result's <video> and download the file it plays."""
        css(f"#{mode}-generate").click()
        src = wait.until(lambda d: (v := d.find_elements(By.CSS_SELECTOR, f"#{mode}-result video"))
                         and v[0].get_attribute("src"))  # fmt: skip
        return fetch(src, tmp_path / name)

    def tab(label: str) -> None:
        driver.find_element(By.XPATH, f"//button[@role='tab' and contains(., '{label}')]").click()

    try:
        driver.set_page_load_timeout(90)
        driver.get(server["url"])
        form("generate", PROMPT, width=96, height=64, seconds=1, steps=4)
        wait.until(lambda d: "red ball falls" in css("#generate-caption textarea").get_attribute("value"))  # before
        clip = result("generate", "clip.mp4")
        video = read_video(clip)
        assert tuple(video.frames.shape) == (8, 64, 96, 3) and video.fps == 8  # 1 s at 8 fps, 96x64
        assert "red ball" in css("#generate-caption textarea").get_attribute("value")  # after
        if os.environ.get("KINEMA_SCREENSHOT"):
            save_screenshot(driver.get_screenshot_as_png(), Path(os.environ["KINEMA_SCREENSHOT"]))

        tab("Animate an image")
        corrupt = bad_files(tmp_path)["corrupt"]
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#animate-image input[type=file]"))
        css("#animate-image input[type=file]").send_keys(str(corrupt))
        said = "corrupt.mp4: cannot decode"
        wait.until(lambda d: said in css("#animate-image-info textarea").get_attribute("value"))  # as it lands
        form("animate", "a red ball falls", steps=4)
        css("#animate-generate").click()
        wait.until(lambda d: said in d.find_element(By.TAG_NAME, "body").text)  # and when asked to use it

        tab("Extend")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#extend-video input[type=file]"))
        css("#extend-video input[type=file]").send_keys(str(clip))
        wait.until(lambda d: "8 frames" in css("#extend-video-info textarea").get_attribute("value"))
        form("extend", "a red ball bounces", seconds=1, steps=4)
        longer = read_video(result("extend", "longer.mp4"))
        assert tuple(longer.frames.shape) == (16, 64, 96, 3)  # the clip, then 1 s more at its 8 fps
    finally:
        driver.quit()
    assert server["proc"].poll() is None and answers(server["url"])


def save_screenshot(png: bytes, path: Path) -> None:
    """The page as a small PNG (a 256-colour palette keeps it to a few hundred KB)."""
    import io

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(path, optimize=True)


def test_notes_say_what_was_fitted_and_a_written_caption_is_used(server, request):
    from gradio_client import Client

    client = Client(server["url"], verbose=False)
    request.addfinalizer(client.close)
    path, _, notes, _ = client.predict(prompt="a red ball and a purple elephant", width=100, height=60, seconds=1,
                                       fps=8, steps=4, api_name="/generate")  # fmt: skip
    assert "elephant" in notes and "made on 112x64" in notes  # the expander's and the size fitting's notes
    assert tuple(read_video(path).frames.shape) == (8, 60, 100, 3)
    own = "A large blue star rolls right. The sky is grey and the ground is sand."
    _, caption, notes, _ = client.predict(prompt=PROMPT, caption=own, **SMALL, api_name="/generate")
    assert caption == own and "as written" in notes


@pytest.mark.slow
def test_twenty_requests_at_once_are_answered_or_refused(server, tmp_path, request):
    """20 clients (each its own session) ask at once; concurrency 1 and queue 8 take 9 of them
    at most: every request gets a result or the busy message, the results decode to the asked
    size, each session sees only its own file, and the server answers after."""
    from gradio_client import Client
    from gradio_client.utils import QueueError

    count = 20
    clients = [None] * count

    def connect(i):
        clients[i] = Client(server["url"], verbose=False, download_files=str(tmp_path / f"client{i}"))
        request.addfinalizer(clients[i].close)  # its heartbeat thread

    threads = [threading.Thread(target=connect, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(clients), "every client connects"

    outcome: list = [None] * count
    go = threading.Barrier(count)

    def ask(i):
        go.wait(timeout=60)
        try:
            job = clients[i].submit(prompt=PROMPT, width=128, height=64, seconds=1, fps=8, steps=12, seed=i,
                                    api_name="/generate")  # fmt: skip
            outcome[i] = ("result", job.result(timeout=240))
        except QueueError as e:
            outcome[i] = ("busy", str(e))
        except Exception as e:  # anything else is a failure of the test
            outcome[i] = ("error", repr(e))

    start = time.time()
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    seconds = time.time() - start

    results = [r for kind, r in outcome if kind == "result"]
    busy = [r for kind, r in outcome if kind == "busy"]
    figures = dict(requests=count, answered=len(results), refused=len(busy), seconds=round(seconds, 1))
    print(f"\nload test: {json.dumps(figures)}")
    (server["folder"] / "load.json").write_text(json.dumps(figures))
    assert len(results) + len(busy) == count, outcome  # every request answered: a result or busy
    assert results and busy, figures
    assert len(results) <= 1 + 8 + 1, figures  # one running and 8 waiting (one may finish as they arrive)
    assert all("try again" in message for message in busy)
    for path, caption, notes, history in results:
        assert tuple(read_video(path).frames.shape) == (8, 64, 128, 3)
        assert [Path(h).name for h in history] == [Path(path).name]  # a session lists only its own file
    assert server["proc"].poll() is None and answers(server["url"])
    path = clients[0].predict(prompt=PROMPT, **SMALL, api_name="/generate")[0]  # still serving
    assert tuple(read_video(path).frames.shape) == (8, 64, 96, 3)
