"""`lfi viz --html`: the browsable page of interaction maps (`lfi.show.html`), built from the tiny trained run
and opened in a real headless browser (Chromium's --dump-dom: the DOM after the page's JavaScript ran).

The browser tests need a Chromium binary (Debian: `apt-get install -y chromium`; or set LFI_CHROMIUM to one)
and skip, saying so, where there is none."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

from lfi.cli.show import register
from lfi.show.html import Card, overlay, write_page
from lfi.show.viz import infer_label

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser() -> str | None:
    given = os.environ.get("LFI_CHROMIUM")
    if given:
        return given if Path(given).is_file() else shutil.which(given)
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class _Cards(HTMLParser):
    """The cards of a page: (name, hidden, data-classes), the count text and body's data-shown."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, str | bool | None]] = []
        self.count = ""
        self.shown: str | None = None
        self._in_count = False
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and "card" in (a.get("class") or ""):
            self.cards.append({"hidden": "hidden" in a, "classes": a.get("data-classes"), "name": None})
        elif tag == "h2" and self.cards:
            self._in_title = True
        elif tag == "span" and a.get("id") == "count":
            self._in_count = True
        elif tag == "body":
            self.shown = a.get("data-shown")

    def handle_endtag(self, tag: str) -> None:
        self._in_count = self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_count:
            self.count += data
        if self._in_title:
            self.cards[-1]["name"] = data


def parse(page: str) -> _Cards:
    p = _Cards()
    p.feed(page)
    return p


def dump_dom(browser: str, index: Path, query: str = "") -> str:
    """The DOM of file://index[?query] after its scripts ran, from headless Chromium."""
    url = index.resolve().as_uri() + query
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={index.parent / '.chromium-profile'}", "--dump-dom", url]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "<html" in done.stdout, done.stderr[-2000:]
    return done.stdout


def _png(path: Path, seed: int) -> Path:
    g = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8, generator=g).numpy()).save(path)
    return path


@pytest.fixture(scope="module")
def page(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page of 4 images (2 under a folder named 'circle', 1 under 'square', 1 with no class folder),
    made by `lfi viz --html` with the oracle teacher's C_VLM."""
    root = tmp_path_factory.mktemp("html")
    images = [
        _png(root / "data" / "circle" / "c1.png", 0),
        _png(root / "data" / "circle" / "c2.png", 1),
        _png(root / "data" / "square" / "s1.png", 2),
        _png(root / "data" / "loose <&>.png", 3),
    ]
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    boxes = ["0,0,24,20", "10,10,40,30", "5,5,20,20", "0,0,48,40"]
    argv = ["viz", str(trained_run), "--images", *map(str, images), "--teacher", "oracle", "--boxes", *boxes,
            "--html", str(root / "page")]  # fmt: skip
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return root / "page" / "index.html"


def test_page_is_self_contained_with_a_card_per_image(page: Path) -> None:
    text = page.read_text()
    cards = parse(text).cards
    assert [c["name"] for c in cards] == ["c1.png", "c2.png", "s1.png", "loose <&>.png"]
    assert not any(c["hidden"] for c in cards)
    # true labels from the class folders; the last image has none
    labels = re.findall(r'data-label="([^"]*)"', text)
    assert labels == ["circle", "circle", "square", "unknown"]
    predictions = re.findall(r'data-prediction="([^"]*)"', text)
    assert all(p in ("circle", "square", "triangle", "cross") for p in predictions)
    assert len(re.findall(r'class="probability">\d+\.\d%<', text)) == 4
    # per card: the image and 4 maps (C_VFM, C_VLM, C_AGT, C_F), all local PNGs that exist
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) == 4 * 5 and all((page.parent / s).is_file() for s in sources)
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", text)[:5]
    assert (
        captions[0] == "image" and captions[1] == "C_VFM" and captions[2].startswith("C_VLM (teacher: oracle")
    )
    assert captions[3:] == ["C_AGT", "C_F"]
    # offline: no address outside the folder, no external script or stylesheet
    assert not re.search(r"(src|href)=\"(https?:)?//", text) and "<script src" not in text


def test_overlay_and_page_from_cards(tmp_path: Path) -> None:
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    m = torch.zeros(2, 2)
    m[0, 0] = 1.0
    pixels = overlay(image, m, alpha=1.0)
    assert pixels.shape == (8, 8, 3) and pixels.dtype.name == "uint8"
    assert pixels[0, 0].tolist() != pixels[7, 7].tolist()  # peak (top-left) and zero (bottom-right) differ
    cards = [Card("a.jpg", image, {"C_AGT": m}, "dog", 0.5, "Dog"), Card("b.jpg", image, {}, "cat", 0.25)]
    index = write_page(cards, tmp_path / "p", title="t")
    parsed = parse(index.read_text())
    assert [c["classes"] for c in parsed.cards] == ["dog | dog", "cat"]
    text = index.read_text()
    # labels and predictions are compared as written ("Dog" is not "dog"); a card without a label is neither
    assert text.count('class="prediction wrong"') == 1 and 'class="prediction">cat' in text
    assert len(list((tmp_path / "p" / "img").glob("*.png"))) == 3


def test_infer_label_takes_the_nearest_class_folder() -> None:
    assert infer_label("data/dog/images/x.jpg", ["dog", "cat"]) == "dog"
    assert infer_label("cat/dog/x.jpg", ["dog", "cat"]) == "dog"
    assert infer_label("data/x.jpg", ["dog"]) is None


def test_viz_needs_an_output_and_one_label_per_image(trained_run: Path, tmp_path: Path) -> None:
    image = _png(tmp_path / "a.png", 0)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    base = ["viz", str(trained_run), "--images", str(image), "--teacher", "none"]
    labels = ["--html", str(tmp_path / "p"), "--labels", "a", "b"]
    for extra, error in (([], "--out .* --html"), (labels, "2 labels for 1 images")):
        args = parser.parse_args(base + extra)
        with pytest.raises(ValueError, match=error):
            args.func(args)


@pytest.fixture(scope="module")
def browser() -> str:
    found = find_browser()
    if found is None:
        pytest.skip(
            "no Chromium binary found (tried $LFI_CHROMIUM, " + ", ".join(BROWSERS) + "): install one, e.g. "
            "`apt-get install -y chromium` on Debian, to open the page in a headless browser"
        )
    return found


def test_page_in_a_headless_browser_filters_by_class(page: Path, browser: str) -> None:
    everything = parse(dump_dom(browser, page))
    assert len(everything.cards) == 4 and not any(c["hidden"] for c in everything.cards)
    assert everything.count == "4 of 4 images" and everything.shown == "4"  # the script ran
    # the filter, given in the address, goes through the text box's input handler
    circles = parse(dump_dom(browser, page, "?class=CIRC"))
    visible = [c for c in circles.cards if not c["hidden"]]
    assert all("circle" in str(c["classes"]) for c in visible) and 2 <= len(visible) < 4
    assert circles.count == f"{len(visible)} of 4 images" and circles.shown == str(len(visible))
    assert [c["name"] for c in visible][:2] == ["c1.png", "c2.png"]  # true label circle: always kept
    nothing = parse(dump_dom(browser, page, "?class=no-such-class"))
    assert all(c["hidden"] for c in nothing.cards) and nothing.count == "0 of 4 images"
