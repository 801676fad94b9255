"""The pages in a real browser: headless Debian chromium against a live uvicorn server.

The server runs `create_app` in a thread on a free loopback port, on the test database and
a SeaweedFS prefix of its own; the dataset it shows is committed (not a rolled-back
transaction, which another thread could not see) and deleted afterwards. Screenshots go to
/tmp/screens/ for a person to look at.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

import tests.factories as factories
from app.deps import get_storage
from app.main import create_app
from app.settings import Settings
from app.storage import S3Storage
from app.tables import Dataset, Metric, Pipeline
from tests.fixtures_storage import make_s3_storage
from tests.ports import free_port
from tests.s3server import SeaweedServer

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENS = Path("/tmp/screens")
TITLE = "Browser test retinas"
COUNT = 30


def phantom_pair(rng: np.random.Generator, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    from models.phantom import make_phantom  # numpy + PIL only; gives fundus-looking pictures

    pair = make_phantom(int(rng.integers(0, 2**31)), resolution)
    return pair.image, (pair.mask * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def live_storage(s3_server: SeaweedServer, s3_bucket: str) -> Iterator[S3Storage]:
    storage = make_s3_storage(s3_server, s3_bucket, prefix=f"live-{uuid.uuid4().hex}")
    yield storage
    storage.delete_prefix("")


@pytest.fixture(scope="module")
def live_dataset(engine: Engine, live_storage: S3Storage) -> Iterator[Dataset]:
    """One published dataset, committed for real, with plots and a private metric."""
    with pytest.MonkeyPatch.context() as mp, Session(engine, expire_on_commit=False) as session:
        mp.setattr(factories, "fake_pair", phantom_pair)
        dataset = factories.make_published_dataset(
            session,
            live_storage,
            title=TITLE,
            count=COUNT,
            resolution=128,
            description="Phantom-trained synthetic fundus photographs for the browser test.",
            metrics={"tstr_f1_synthetic": 0.8877, "tstr_f1_real": 0.8988, "kl_real_syn": 0.021},
            pipeline_config={"stage2": {"appearance": True}},
        )
        for metric in dataset.metrics:
            if metric.name == "tstr_f1_synthetic":
                metric.details = {
                    **factories.tstr_details(steps=4000, seeds=3, n_train=COUNT),
                    "std": 0.006,
                    "plot": {
                        "kind": "bars",
                        "title": "Vessel segmentation F1 on real test images",
                        "labels": ["trained on real", "trained on synthetic"],
                        "values": [0.8988, 0.8877],
                        "errors": [0.004, 0.006],
                        "y_label": "F1",
                    },
                }
            if metric.name == "kl_real_syn":
                edges = np.linspace(0, 256, 33)
                centres = (edges[:-1] + edges[1:]) / 2
                real = np.exp(-(((centres - 120) / 40) ** 2))
                syn = np.exp(-(((centres - 112) / 44) ** 2))
                metric.details = {
                    "plot": {
                        "kind": "histogram",
                        "title": "Green-channel intensity",
                        "x_label": "intensity",
                        "y_label": "density",
                        "edges": edges.tolist(),
                        "series": {
                            "real": (real / real.sum()).tolist(),
                            "synthetic": (syn / syn.sum()).tolist(),
                        },
                    }
                }
        session.add(
            Metric(
                dataset_id=dataset.id,
                name="memorisation_nearest_secret",
                value=0.4242,
                details={"nearest": "21_training.tif"},
                private=True,
            )
        )
        session.commit()
        pipeline_id = dataset.pipeline_id
    try:
        yield dataset
    finally:
        with Session(engine) as session:
            session.execute(delete(Dataset).where(Dataset.id == dataset.id))
            session.execute(delete(Pipeline).where(Pipeline.id == pipeline_id))
            session.commit()


@dataclass
class Live:
    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def live(
    pg_url: str,
    live_storage: S3Storage,
    live_dataset: Dataset,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    port = free_port()
    settings = Settings(
        database_url=pg_url,
        storage_url=f"file://{tmp_path_factory.mktemp('live-objects')}",
        broker_url="memory://",
        rate_limit_per_minute=0,
        site_url=f"http://127.0.0.1:{port}",
    )
    app = create_app(settings)
    app.dependency_overrides[get_storage] = lambda: live_storage
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    try:
        yield Live(url=f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(live: Live) -> Iterator[playwright_api.Browser]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium not installed at /usr/bin/chromium")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Tab:
    page: playwright_api.Page
    errors: list[str]
    requests: list[str]


@pytest.fixture
def tab(browser: playwright_api.Browser, live: Live) -> Iterator[Tab]:
    yield from open_tab(browser, live, width=1280, height=900)


@pytest.fixture
def phone(browser: playwright_api.Browser, live: Live) -> Iterator[Tab]:
    yield from open_tab(browser, live, width=390, height=844)


@pytest.fixture
def no_js(browser: playwright_api.Browser, live: Live) -> Iterator[Tab]:
    yield from open_tab(browser, live, width=1280, height=900, java_script_enabled=False)


def open_tab(
    browser: playwright_api.Browser,
    live: Live,
    *,
    width: int,
    height: int,
    java_script_enabled: bool = True,
) -> Iterator[Tab]:
    context = browser.new_context(
        viewport={"width": width, "height": height}, java_script_enabled=java_script_enabled
    )
    page = context.new_page()
    tab = Tab(page=page, errors=[], requests=[])
    page.on("console", lambda msg: tab.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: tab.errors.append(str(exc)))

    def guard(route: playwright_api.Route) -> None:
        tab.requests.append(route.request.url)
        if route.request.url.startswith(live.url + "/"):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", guard)
    yield tab
    context.close()
    outside = [u for u in tab.requests if not u.startswith(live.url + "/")]
    assert outside == [], f"requests left the server: {outside}"
    assert tab.errors == [], f"console errors: {tab.errors}"


def shoot(page: playwright_api.Page, name: str) -> None:
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / name), full_page=True)


def all_images_loaded(page: playwright_api.Page, selector: str) -> None:
    # Lazy images load once near the viewport: scroll through the page first.
    page.evaluate(
        """async () => {
            for (let y = 0; y < document.body.scrollHeight; y += 400) {
                window.scrollTo(0, y); await new Promise(r => setTimeout(r, 30));
            }
            window.scrollTo(0, 0);
        }"""
    )
    page.wait_for_function(
        """sel => {
            const imgs = [...document.querySelectorAll(sel)];
            return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=selector,
        timeout=15_000,
    )


class TestBrowser:
    def test_home_lists_the_dataset(self, tab: Tab, live: Live, live_dataset: Dataset) -> None:
        page = tab.page
        page.goto(live.url + "/")
        assert page.locator("html").get_attribute("lang") == "en"
        card = page.locator(".card", has_text=TITLE)
        playwright_api.expect(card).to_be_visible()
        all_images_loaded(page, ".card-thumbs img")
        shoot(page, "home-desktop.png")

    def test_gallery_filter_form(self, tab: Tab, live: Live, live_dataset: Dataset) -> None:
        page = tab.page
        page.goto(live.url + "/gallery")
        page.get_by_label("Search").fill("browser test")
        page.get_by_label("Resolution").select_option("128")
        page.get_by_label("Minimum TSTR F1").fill("0.85")
        page.get_by_role("button", name="Apply").click()
        page.wait_for_url("**/gallery?*")
        assert "q=browser+test" in page.url and "resolution=128" in page.url
        playwright_api.expect(page.locator(".card", has_text=TITLE)).to_be_visible()
        all_images_loaded(page, ".card-thumbs img")
        shoot(page, "gallery-desktop.png")

        page.get_by_label("Minimum TSTR F1").fill("0.95")
        page.get_by_role("button", name="Apply").click()
        page.wait_for_url("**min_f1=0.95**")
        count = page.locator(".result-count")
        playwright_api.expect(count).to_have_text("No datasets match these filters")
        playwright_api.expect(page.locator(".card", has_text=TITLE)).to_have_count(0)

    def test_dataset_page_thumbnails_load(
        self, tab: Tab, live: Live, live_dataset: Dataset
    ) -> None:
        page = tab.page
        page.goto(f"{live.url}/gallery/{live_dataset.slug}")
        thumbs = page.locator(".sample-grid img")
        playwright_api.expect(thumbs).to_have_count(24)
        all_images_loaded(page, ".sample-grid img")
        assert page.locator("svg.plot").count() == 2
        assert "0.4242" not in page.content()
        playwright_api.expect(page.locator("#tstr-protocol")).to_contain_text(
            "trained for 4,000 steps; mean ± std over 3 seeds"
        )
        playwright_api.expect(page.locator("#kl-caveat")).to_contain_text("by construction")
        shoot(page, "dataset-desktop.png")

    def test_card_without_tstr_is_not_clipped(
        self, tab: Tab, live: Live, engine: Engine, live_storage: S3Storage
    ) -> None:
        # Facts do not wrap; "not measured" once ran past a card's edge, cut to "not measure".
        with Session(engine, expire_on_commit=False) as session:
            untested = factories.make_published_dataset(
                session, live_storage, title="Untested retinas", count=2, resolution=32
            )
            session.commit()
        try:
            page = tab.page
            page.goto(live.url + "/gallery")
            card = page.locator(".card", has_text="Untested retinas")
            playwright_api.expect(card.locator("dd.unmeasured")).to_have_text("not measured")
            clipped = card.locator(".facts dd").evaluate_all(
                "dds => dds.filter(d => d.scrollWidth > d.clientWidth).map(d => d.textContent)"
            )
            assert clipped == []
        finally:
            with Session(engine) as session:
                session.execute(delete(Dataset).where(Dataset.id == untested.id))
                session.execute(delete(Pipeline).where(Pipeline.id == untested.pipeline_id))
                session.commit()

    def test_dataset_page_on_a_phone(self, phone: Tab, live: Live, live_dataset: Dataset) -> None:
        page = phone.page
        page.goto(f"{live.url}/gallery/{live_dataset.slug}")
        all_images_loaded(page, ".sample-grid img")
        # One column of content: nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shoot(page, "dataset-phone.png")

    def test_gallery_on_a_phone(self, phone: Tab, live: Live, live_dataset: Dataset) -> None:
        page = phone.page
        page.goto(f"{live.url}/gallery")
        all_images_loaded(page, ".card-thumbs img")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shoot(page, "gallery-phone.png")

    def test_overlay_toggle(self, tab: Tab, live: Live, live_dataset: Dataset) -> None:
        page = tab.page
        page.goto(f"{live.url}/gallery/{live_dataset.slug}/3")
        all_images_loaded(page, ".pair img")
        tint = page.locator(".stack .tint")

        def visibility() -> str:
            return tint.evaluate("el => getComputedStyle(el).visibility")

        assert visibility() == "hidden"
        shoot(page, "sample-desktop.png")
        page.get_by_label("Overlay the vessel mask on the image").check()
        page.wait_for_function(
            "() => getComputedStyle(document.querySelector('.stack .tint')).opacity === '1'"
        )
        assert visibility() == "visible"
        shoot(page, "sample-overlay-desktop.png")
        page.get_by_label("Overlay the vessel mask on the image").uncheck()
        assert visibility() == "hidden"

    def test_sample_page_without_javascript(
        self, no_js: Tab, live: Live, live_dataset: Dataset
    ) -> None:
        page = no_js.page
        base = f"{live.url}/gallery/{live_dataset.slug}"
        page.goto(f"{base}/2")
        # Both pictures side by side, and the overlay checkbox still works (CSS only).
        playwright_api.expect(page.locator(".pair img.base")).to_be_visible()
        playwright_api.expect(page.locator(".pair img.mask")).to_be_visible()
        tint = page.locator(".stack .tint")
        assert tint.evaluate("el => getComputedStyle(el).visibility") == "hidden"
        page.get_by_label("Overlay the vessel mask on the image").check()
        assert tint.evaluate("el => getComputedStyle(el).visibility") == "visible"
        page.locator('.sample-nav a[rel="next"]').click()
        page.wait_for_url(f"{base}/3")
        # No copy buttons without a script to make them work.
        page.goto(base)
        assert page.locator("button.copy").first.is_hidden()

    def test_arrow_keys_navigate(self, tab: Tab, live: Live, live_dataset: Dataset) -> None:
        page = tab.page
        base = f"{live.url}/gallery/{live_dataset.slug}"
        page.goto(f"{base}/1")
        page.keyboard.press("ArrowRight")
        page.wait_for_url(f"{base}/2")
        playwright_api.expect(page.locator("h1")).to_contain_text("Sample 2")
        page.keyboard.press("ArrowLeft")
        page.wait_for_url(f"{base}/1")
        # The links are reachable by keyboard too.
        next_link = page.locator('.sample-nav a[rel="next"]')
        next_link.focus()
        assert page.evaluate("document.activeElement.getAttribute('rel')") == "next"
        page.keyboard.press("Enter")
        page.wait_for_url(f"{base}/2")

    def test_skip_link_and_404(self, tab: Tab, live: Live) -> None:
        page = tab.page
        response = page.goto(f"{live.url}/gallery/no-such-dataset")
        assert response is not None and response.status == 404
        playwright_api.expect(page.locator("h1")).to_have_text("We could not find that page")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip-link"
        shoot(page, "404-desktop.png")
        # The browser logs the 404 status itself as a console error; that one is expected.
        tab.errors[:] = [e for e in tab.errors if "404" not in e]
