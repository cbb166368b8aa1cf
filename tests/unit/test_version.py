"""One version number: relay.__version__ is the package's, the CLI's and the chart's."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

from relay import __version__
from relay.cli.main import build_parser

CHART = Path(__file__).resolve().parents[2] / "helm" / "mindvideo-relay" / "Chart.yaml"


def test_installed_distribution_has_the_package_version() -> None:
    # hatch reads the version from relay/__init__.py: an editable install built before a
    # bump would show the old one, so this also catches a stale environment.
    assert version("mindvideo-relay") == __version__


def test_relay_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"relay {__version__}"


def test_chart_app_version_is_the_package_version() -> None:
    match = re.search(r'^appVersion:\s*"?([^"\s]+)"?\s*$', CHART.read_text(), re.MULTILINE)
    assert match is not None, "Chart.yaml has no appVersion"
    assert match.group(1) == __version__, (
        f"helm/mindvideo-relay/Chart.yaml appVersion {match.group(1)} != relay.__version__ "
        f"{__version__}: change both together"
    )
