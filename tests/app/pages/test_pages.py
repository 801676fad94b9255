"""The HTML pages through TestClient, on real Postgres and SeaweedFS."""

from __future__ import annotations

import html as html_lib
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.storage import Storage
from app.tables import Dataset, Metric
from tests.factories import make_dataset, make_published_dataset, tstr_details

HIST = {
    "kind": "histogram",
    "x_label": "green intensity",
    "edges": [0, 64, 128, 192, 256],
    "series": {"real": [0.1, 0.4, 0.3, 0.2], "synthetic": [0.15, 0.35, 0.3, 0.2]},
}
BARS = {
    "kind": "bars",
    "labels": ["real", "synthetic"],
    "values": [0.9, 0.88],
    "errors": [0.01, 0.02],
}
SECRET_NAME = "21_training_secret.tif"


def publish(
    session: Session,
    storage: Storage,
    *,
    title: str,
    f1: float | None = None,
    count: int = 4,
    resolution: int = 32,
    description: str = "",
) -> Dataset:
    metrics = {} if f1 is None else {"tstr_f1_synthetic": f1, "tstr_f1_real": 0.8988}
    return make_published_dataset(
        session,
        storage,
        title=title,
        count=count,
        resolution=resolution,
        description=description,
        metrics=metrics,
    )


@pytest.fixture
def published(session: Session, s3_storage: Storage) -> Dataset:
    dataset = publish(
        session,
        s3_storage,
        title="Dawn vessels",
        f1=0.8877,
        count=30,
        description="Sharp synthetic fundus images.",
    )
    for metric in dataset.metrics:
        if metric.name == "tstr_f1_synthetic":
            metric.details = {"std": 0.004, "plot": BARS, "split": {"a": [SECRET_NAME]}}
    session.add(
        Metric(dataset_id=dataset.id, name="kl_real_syn", value=0.012, details={"plot": HIST})
    )
    session.add(
        Metric(
            dataset_id=dataset.id,
            name="memorisation_nearest_secret",
            value=0.4242,
            details={"nearest": SECRET_NAME},
            private=True,
        )
    )
    dataset.pipeline.checkpoint_key = f"private/pipelines/{dataset.pipeline.id}/checkpoint.pt"
    session.flush()
    session.refresh(dataset)
    return dataset


def visible_text(html: str) -> str:
    return html_lib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


class TestHome:
    def test_lists_published_datasets(self, client: TestClient, published: Dataset) -> None:
        response = client.get("/")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        html = response.text
        assert '<html lang="en">' in html
        assert 'href="#main"' in html  # skip link
        assert "Dawn vessels" in html
        assert f'href="/gallery/{published.slug}"' in html
        assert f"/datasets/{published.slug}/samples/0/thumb.webp" in html
        assert "How to cite" in html and "@misc{synthmed_" in html

    def test_empty_repository(self, client: TestClient) -> None:
        response = client.get("/")
        assert response.status_code == 200
        assert "No dataset has been published yet" in response.text or "Latest" in response.text


class TestGallery:
    def test_cards(self, client: TestClient, published: Dataset) -> None:
        html = client.get("/gallery").text
        assert "Dawn vessels" in html
        card = html[html.index("Dawn vessels") - 1500 : html.index("Dawn vessels") + 1200]
        assert "0.8877" in card and "CC-BY-4.0" in card and "32" in card and "30" in card
        assert 'loading="lazy"' in card

    def test_form_controls_are_labelled(self, client: TestClient, published: Dataset) -> None:
        html = client.get("/gallery").text
        for name in ("q", "resolution", "licence", "min_f1", "sort", "order"):
            match = re.search(rf'<(?:input|select) id="([^"]+)" name="{name}"', html)
            assert match, name
            assert f'<label for="{match.group(1)}"' in html

    def test_filters(self, client: TestClient, session: Session, s3_storage: Storage) -> None:
        publish(session, s3_storage, title="Alpha small", f1=0.70, resolution=32)
        publish(session, s3_storage, title="Beta large", f1=0.90, resolution=64, count=6)

        def titles(query: str) -> list[str]:
            html = client.get("/gallery" + query).text
            return [t for t in ("Alpha small", "Beta large") if t in html]

        assert titles("") == ["Alpha small", "Beta large"]
        assert titles("?resolution=64") == ["Beta large"]
        assert titles("?min_f1=0.8") == ["Beta large"]
        assert titles("?q=alpha") == ["Alpha small"]
        assert titles("?licence=CC0-1.0") == []
        # Sorting by size: Beta (6 pairs) before Alpha (4 pairs); ascending flips it.
        html = client.get("/gallery?sort=size").text
        assert html.index("Beta large") < html.index("Alpha small")
        html = client.get("/gallery?sort=size&order=asc").text
        assert html.index("Alpha small") < html.index("Beta large")
        # Empty form fields (what a browser sends) and junk never error.
        for junk in (
            "?resolution=&licence=&min_f1=&sort=date&q=",
            "?resolution=abc&min_f1=x&page=-3",
        ):
            assert client.get("/gallery" + junk).status_code == 200

    def test_an_empty_result_says_why(
        self, client: TestClient, session: Session, s3_storage: Storage
    ) -> None:
        html = client.get("/gallery").text
        assert "No dataset has been published yet" in html
        assert "these filters" not in html and "fewer filters" not in html  # none set
        publish(session, s3_storage, title="Alpha small", f1=0.70, resolution=32)
        html = client.get("/gallery?min_f1=0.9").text
        assert "No datasets match these filters" in html
        assert '<a href="/gallery">show every dataset</a>' in html

    def test_paging(self, client: TestClient, session: Session, s3_storage: Storage) -> None:
        for i in range(13):
            publish(session, s3_storage, title=f"Paged set {i:02d}", count=1, resolution=16)
        first = client.get("/gallery?resolution=16").text
        assert "Page 1 of 2" in first
        assert 'href="/gallery?resolution=16&amp;page=2" rel="next"' in first
        second = client.get("/gallery?resolution=16&page=2").text
        assert "Showing 13–13 of 13" in visible_text(second)
        beyond = client.get("/gallery?resolution=16&page=99")
        assert beyond.status_code == 200 and "Page 2 of 2" in beyond.text


class TestDatasetPage:
    def test_card(self, client: TestClient, published: Dataset) -> None:
        response = client.get(f"/gallery/{published.slug}")
        assert response.status_code == 200
        html = response.text
        assert "Sharp synthetic fundus images." in html
        assert 'href="https://creativecommons.org/licenses/by/4.0/"' in html
        assert "@misc{synthmed_" in html and "cff-version: 1.2.0" in html
        assert published.pipeline.training_data in html
        assert published.pipeline.name in html

    def test_method_names_what_the_recipe_did(
        self, client: TestClient, session: Session, published: Dataset
    ) -> None:
        plain = visible_text(client.get(f"/gallery/{published.slug}").text)
        assert "pix2pix" in plain
        assert "trained for the first" not in plain and "colouring" not in plain
        pipeline = published.pipeline
        pipeline.config = {
            **pipeline.config,
            "stage1": {"train_steps": 2000},
            "stage2": {"appearance": True},
        }
        pipeline.steps = 4000
        session.flush()
        text = visible_text(client.get(f"/gallery/{published.slug}").text)
        assert "(it trained for the first 2,000 steps)" in text
        assert "Each image's colouring" in text

    def test_download_commands(self, client: TestClient, published: Dataset) -> None:
        text = visible_text(client.get(f"/gallery/{published.slug}").text)
        site = "http://127.0.0.1:8000"  # the test settings' site_url default
        archive = f"{published.slug}-v{published.version}.zip"
        assert f"curl -fL -C - -o {archive} {site}/datasets/{published.slug}/download" in text
        assert "sha256sum -c SHA256SUMS" in text
        assert f'load_dataset("imagefolder", data_dir="{published.slug}"' in text

    def test_sample_grid_paging(self, client: TestClient, published: Dataset) -> None:
        html = client.get(f"/gallery/{published.slug}").text
        thumbs = re.findall(r'<img src="/datasets/[^"]+/thumb\.webp"[^>]*>', html)
        assert len(thumbs) == 24
        for tag in thumbs:
            assert 'loading="lazy"' in tag and 'width="' in tag and 'height="' in tag
            assert re.search(r'alt="[^"]+"', tag)
        page2 = client.get(f"/gallery/{published.slug}?page=2").text
        assert f"/datasets/{published.slug}/samples/29/thumb.webp" in page2
        assert f"/datasets/{published.slug}/samples/0/thumb.webp" not in page2

    def test_says_how_tstr_was_run(
        self, client: TestClient, session: Session, published: Dataset
    ) -> None:
        # The fixture's metrics predate the protocol in their details: no sentence.
        assert 'id="tstr-protocol"' not in client.get(f"/gallery/{published.slug}").text
        for metric in published.metrics:
            if metric.name in ("tstr_f1_synthetic", "tstr_f1_real"):
                n_train = 30 if metric.name == "tstr_f1_synthetic" else 20
                metric.details = tstr_details(steps=4000, seeds=3, n_train=n_train)
        session.flush()
        text = visible_text(client.get(f"/gallery/{published.slug}").text)
        assert (
            "Each segmenter trained for 4,000 steps; mean ± std over 3 seeds; trained on 30 "
            "synthetic pairs or 20 real pairs; tested on 20 real images." in text
        )

    def test_says_when_tstr_was_not_run(
        self, client: TestClient, session: Session, s3_storage: Storage
    ) -> None:
        # `make demo` publishes with no segmenter steps: its other evidence has no TSTR row.
        dataset = publish(session, s3_storage, title="Untested vessels")
        session.add(Metric(dataset_id=dataset.id, name="kl_real_syn", value=0.012))
        session.flush()
        text = visible_text(client.get(f"/gallery/{dataset.slug}").text)
        assert "TSTR F1 not measured" in text
        assert "No TSTR figures were recorded for this dataset" in text
        assert "TSTR: a U-Net vessel segmenter is trained" not in text
        card = visible_text(client.get("/gallery").text).split("Untested vessels", 1)[1]
        assert card.split("Published", 1)[0].strip().endswith("TSTR F1 not measured")

    def test_says_what_kl_cannot_show(
        self, client: TestClient, session: Session, published: Dataset
    ) -> None:
        # The fixture's pipeline predates the appearance model: its KL needs no caveat.
        assert 'id="kl-caveat"' not in client.get(f"/gallery/{published.slug}").text
        published.pipeline.config = {**published.pipeline.config, "stage2": {"appearance": True}}
        session.flush()
        text = visible_text(client.get(f"/gallery/{published.slug}").text)
        assert "so those histograms match by construction" in text

    def test_metrics_and_plots(self, client: TestClient, published: Dataset) -> None:
        html = client.get(f"/gallery/{published.slug}").text
        assert "0.8877" in html and "0.8988" in html and "0.012" in html
        assert html.count('<svg class="plot') == 2
        assert "plot-histogram" in html and "plot-bars" in html

    def test_vessel_metrics_beside_the_real_figure(
        self, client: TestClient, session: Session, published: Dataset
    ) -> None:
        overlap = {"real": 0.1504, "plot": {"kind": "distribution", "series": {}}}
        orientation = {"statistic": "axis_aligned", "real": {"axis_aligned": 0.2218, "n": 9}}
        for name, value, details in (
            ("vessel_sample_overlap", 0.761, overlap),
            ("vessel_orientation", 0.31, orientation),
            ("vessel_width", 2.5, {"real": {"mean": 1.9}}),  # no statistic named: no figure
        ):
            session.add(Metric(dataset_id=published.id, name=name, value=value, details=details))
        session.flush()
        text = visible_text(client.get(f"/gallery/{published.slug}").text)
        assert "Metric Value Real training data" in text
        assert "(Dice) vessel_sample_overlap 0.761 0.1504" in text
        assert "(fraction) vessel_orientation 0.31 0.2218" in text
        assert "vessel_width 2.5 " in text and "vessel_width 2.5 1.9" not in text
        assert "real DRIVE" not in text  # the reference is the dataset's own, not a constant

    def test_nothing_private(self, client: TestClient, published: Dataset) -> None:
        pages = [
            client.get("/").text,
            client.get("/gallery").text,
            client.get(f"/gallery/{published.slug}").text,
            client.get(f"/gallery/{published.slug}/0").text,
        ]
        for html in pages:
            assert "memorisation_nearest_secret" not in html
            assert "0.4242" not in html
            assert SECRET_NAME not in html
            assert "private/" not in html
            assert "public/datasets/" not in html  # storage keys
            assert "checkpoint" not in html


class TestSamplePage:
    def test_image_mask_and_stats(self, client: TestClient, published: Dataset) -> None:
        response = client.get(f"/gallery/{published.slug}/1")
        assert response.status_code == 200
        html = response.text
        base = f"/datasets/{published.slug}/samples/1"
        assert f'src="{base}/image.png"' in html and f'src="{base}/mask.png"' in html
        assert 'id="overlay-toggle"' in html and '<label for="overlay-toggle"' in html
        assert "1001" in html  # the sample's seed
        assert "Vessel fraction" in html
        assert f'href="/gallery/{published.slug}/0" rel="prev"' in html
        assert f'href="/gallery/{published.slug}/2" rel="next"' in html

    def test_ends_have_no_link_past_them(self, client: TestClient, published: Dataset) -> None:
        assert 'rel="prev"' not in client.get(f"/gallery/{published.slug}/0").text
        assert 'rel="next"' not in client.get(f"/gallery/{published.slug}/29").text


class TestNotFound:
    @pytest.mark.parametrize("path", ["/gallery/no-such-set", "/gallery/no-such-set/0"])
    def test_unknown_slug(self, client: TestClient, path: str) -> None:
        response = client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "We could not find that page" in response.text

    @pytest.mark.parametrize("index", ["30", "999", "-1", "abc"])
    def test_unknown_index(self, client: TestClient, published: Dataset, index: str) -> None:
        response = client.get(f"/gallery/{published.slug}/{index}")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")

    def test_unpublished_is_invisible(
        self, client: TestClient, session: Session, s3_storage: Storage, published: Dataset
    ) -> None:
        ready = make_published_dataset(session, s3_storage, title="Hidden ready set", publish=False)
        draft = make_dataset(session, title="Hidden draft set")
        for dataset in (ready, draft):
            assert client.get(f"/gallery/{dataset.slug}").status_code == 404
            assert client.get(f"/gallery/{dataset.slug}/0").status_code == 404
        for path in ("/", "/gallery", "/gallery?q=hidden", f"/gallery/{published.slug}"):
            assert "Hidden" not in client.get(path).text


class TestStatic:
    def test_css_cached(self, client: TestClient) -> None:
        html = client.get("/gallery").text
        css = re.search(r'href="(/static/site\.css\?v=[0-9a-f]+)"', html)
        assert css
        response = client.get(css.group(1))
        assert response.status_code == 200
        assert "max-age=" in response.headers["cache-control"]
        assert response.headers["etag"]
        again = client.get(css.group(1), headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
        assert client.get("/static/site.js").status_code == 200
