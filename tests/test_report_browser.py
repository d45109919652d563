"""report.html in a real headless browser: it renders its table and plots, and its script runs without errors."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from codepeft.report import build_reports

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install chromium; .ci/run installs it)"),
]


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                           *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report_html(tmp_path_factory, tiny_causal_dir) -> Path:
    from test_report import build_fake_study

    study_dir = build_fake_study(tmp_path_factory.mktemp("browser"), tiny_causal_dir, seeds="[0]")
    return build_reports(study_dir).html


def test_report_renders_table_and_plots_without_errors(report_html, tmp_path):
    result = chromium(["--virtual-time-budget=5000", "--dump-dom", report_html.as_uri()], tmp_path / "profile")
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attributes = dict(re.findall(r'(data-[a-z]+)="([^"]*)"', body.group(1)))
    # Set by the page's own script after the DOM loaded: it ran, saw no errors, and counted what rendered.
    assert attributes.get("data-rendered") == "ok", attributes
    assert int(attributes["data-tables"]) == 3  # leaderboard rows: lora, zero-shot, icl (failed)
    assert int(attributes["data-plots"]) >= 3
    assert attributes["data-errors"] == "0"
    assert "Uncaught" not in result.stderr and "SyntaxError" not in result.stderr


def test_report_screenshot_is_not_blank(report_html, tmp_path):
    shot = tmp_path / "shot.png"
    result = chromium(["--window-size=1280,2400", f"--screenshot={shot}", report_html.as_uri()], tmp_path / "p2")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)
    # Text, table borders and plots make many distinct colours; a blank or error page has very few.
    distinct = {tuple(px) for px in (pixels[::7, ::7, :3] * 255).astype(int).reshape(-1, 3)}
    assert len(distinct) > 20
    shutil.copy(shot, report_html.with_name("report.png"))  # kept next to the report for a human to look at


def layout(report_html: Path, width: int, profile: Path) -> dict[str, str]:
    result = chromium([f"--window-size={width},900", "--virtual-time-budget=5000", "--dump-dom",
                       report_html.as_uri()], profile)
    assert result.returncode == 0, result.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", result.stdout)
    attributes = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body.group(1)))
    assert attributes["data-rendered"] == "ok", attributes
    return attributes


@pytest.mark.parametrize("width", [1400, 700])  # 700: narrower than the table, which must scroll in its box
def test_leaderboard_fits_1400_px_or_scrolls_in_its_own_box(report_html, tmp_path, width):
    attributes = layout(report_html, width, tmp_path / "p3")
    assert int(attributes["data-view-width"]) <= width
    assert int(attributes["data-page-width"]) <= int(attributes["data-view-width"])  # no sideways page scroll
    assert attributes["data-leaderboards-contained"] == "yes"
    if width != 1400:
        return
    shot = tmp_path / "wide.png"
    result = chromium(["--window-size=1400,1200", f"--screenshot={shot}", report_html.as_uri()], tmp_path / "p4")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    from matplotlib.image import imread

    assert imread(shot).shape[1] == 1400
    shutil.copy(shot, report_html.with_name("report-1400.png"))
