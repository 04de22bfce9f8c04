""".krew.yaml, rendered as krew-release-bot renders it for a release tag, matches what packaging/ builds."""

from __future__ import annotations

import hashlib
import re
import tarfile
from typing import Any

import yaml

from svctrace import __version__
from tests.packaging.conftest import REPO, PluginBuild

TAG = f"v{__version__}"
ADD_URI_AND_SHA = re.compile(r'\{\{\s*addURIAndSha\s+"([^"]+)"\s+\.TagName\s*\}\}')


def render(template: str, tag: str, sha256: str) -> dict[str, Any]:
    """krew-release-bot's rendering: the tag for {{ .TagName }}, uri and sha256 for addURIAndSha."""
    def uri_and_sha(match: re.Match[str]) -> str:
        uri = match.group(1).replace("{{ .TagName }}", tag)
        return f"uri: {uri}\n    sha256: {sha256}"

    text = ADD_URI_AND_SHA.sub(uri_and_sha, template).replace("{{ .TagName }}", tag)
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def manifest(plugin_build: PluginBuild) -> dict[str, Any]:
    sha = hashlib.sha256(plugin_build.archive.read_bytes()).hexdigest()
    return render((REPO / ".krew.yaml").read_text(), TAG, sha)


def test_the_manifest_is_a_krew_plugin(plugin_build: PluginBuild) -> None:
    doc = manifest(plugin_build)
    assert doc["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2" and doc["kind"] == "Plugin"
    assert doc["metadata"]["name"] == "svctrace"
    spec = doc["spec"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", spec["version"])  # krew refuses a version without the v
    assert spec["shortDescription"] and spec["homepage"].startswith("https://")
    assert {(p["selector"]["matchLabels"]["os"], p["selector"]["matchLabels"]["arch"]) for p in spec["platforms"]} \
        >= {("linux", "amd64"), ("linux", "arm64")}


def test_every_platform_points_at_the_built_archive(plugin_build: PluginBuild) -> None:
    with tarfile.open(plugin_build.archive) as tar:
        executables = {m.name for m in tar.getmembers() if m.isfile() and m.mode & 0o111}
    sha = hashlib.sha256(plugin_build.archive.read_bytes()).hexdigest()
    for platform in manifest(plugin_build)["spec"]["platforms"]:
        assert platform["uri"].endswith(f"/{TAG}/{plugin_build.archive.name}")
        assert platform["sha256"] == sha and re.fullmatch(r"[0-9a-f]{64}", platform["sha256"])
        assert platform["bin"] in executables


def test_the_template_keeps_the_bots_placeholders() -> None:
    template = (REPO / ".krew.yaml").read_text()
    assert "version: {{ .TagName }}" in template
    uris = ADD_URI_AND_SHA.findall(template)
    assert uris and all(u.endswith("svctrace-{{ .TagName }}.tar.gz") for u in uris)
