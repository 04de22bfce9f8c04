"""ListIndex finds a List's items without decoding the file, and refuses every layout it cannot be sure of."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from svctrace.parsers import list_index
from svctrace.parsers.list_index import ListIndex, NotIndexed, key_pattern

NS = {"ns": key_pattern("namespace")}


def _pod(ns: str, name: str, **extra: object) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80}, {"containerPort": 81}]}]},
            **extra}


def _list(items: list[object]) -> dict[str, object]:
    return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}


def _write(tmp_path: Path, text: str | bytes, name: str = "pods.json") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _all(index: ListIndex) -> list[object]:
    return [v for _, v in index.read()]


@pytest.mark.parametrize("indent", [1, 2, 4, "\t"])
def test_items_are_found_and_decoded_exactly(tmp_path: Path, indent: int | str) -> None:
    items = [_pod(f"ns{i % 3}", f"p{i}") for i in range(50)]
    path = _write(tmp_path, json.dumps(_list(items), indent=indent))
    index = ListIndex.open(path, NS)
    assert len(index) == 50
    assert _all(index) == items
    got = [v for _, v in index.read(index.items_where("ns", "ns1"))]
    assert got == [p for p in items if p["metadata"]["namespace"] == "ns1"]  # type: ignore[index]


def test_windows_line_ends_and_a_byte_order_mark(tmp_path: Path) -> None:
    items = [_pod("a", "x"), _pod("b", "y")]
    text = "\ufeff" + json.dumps(_list(items), indent=2).replace("\n", "\r\n")
    index = ListIndex.open(_write(tmp_path, text), NS)
    assert _all(index) == items
    assert index.keys["ns"] == ["a", "b"]


def test_pieces_boundaries_do_not_lose_or_double_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(list_index, "PIECE", 97)  # separators and keys fall across every piece boundary
    items = [_pod(f"n{i % 7}", f"pod-{i}", status={"podIP": f"10.0.0.{i}"}) for i in range(200)]
    path = _write(tmp_path, json.dumps(_list(items), indent=1))
    index = ListIndex.open(path, {**NS, "ip": key_pattern("podIP")})
    assert _all(index) == items
    assert index.keys["ns"] == [f"n{i % 7}" for i in range(200)]
    assert index.keys["ip"] == [f"10.0.0.{i}" for i in range(200)]


def test_empty_and_single_item_lists(tmp_path: Path) -> None:
    assert len(ListIndex.open(_write(tmp_path, json.dumps(_list([]), indent=1)), NS)) == 0
    one = ListIndex.open(_write(tmp_path, json.dumps(_list([_pod("a", "b")]), indent=1)), NS)
    assert _all(one) == [_pod("a", "b")]


def test_an_item_without_or_with_several_keys_is_unsure_and_always_handed_out(tmp_path: Path) -> None:
    items = [_pod("a", "1"), {"kind": "Pod", "metadata": {"name": "no-ns"}},
             _pod("b", "2", extra={"namespace": "a"}), _pod("a\u00e9", "3"), _pod('q"x', "4")]
    index = ListIndex.open(_write(tmp_path, json.dumps(_list(items), indent=1, ensure_ascii=False)), NS)
    assert index.keys["ns"] == ["a", None, None, "a\u00e9", None]
    assert index.items_where("ns", "a") == [0, 1, 2, 4]
    assert index.items_where("ns", "zzz") == [1, 2, 4]
    escaped = ListIndex.open(_write(tmp_path, json.dumps(_list(items), indent=1)), NS)  # "a\u00e9" as written
    assert escaped.keys["ns"] == ["a", None, None, None, None]


@pytest.mark.parametrize(("text", "why"), [
    (json.dumps(_list([_pod("a", "b")])), "minified"),
    (json.dumps([_pod("a", "b")], indent=1), "items array"),
    (json.dumps(_list([_pod("a", "b")]), indent=1) + "\n" + json.dumps(_list([]), indent=1),
     "not the rest of one JSON object"),
    (json.dumps(_list([_pod("a", "b")]), indent=1)[:-1] + " " * (2 << 20) + "}", "more than a List follows"),
    (json.dumps({"metadata": {"items": []}, "items": [_pod("a", "b")]}, indent=1), "own items"),
    (json.dumps(_list([_pod("a", "b")]), indent=1)[:-40], "not the rest of one JSON object"),
    (json.dumps(_list([_pod("a", "b")]), indent=1).partition("\n ]")[0], "end of its items"),
])
def test_layouts_it_cannot_be_sure_of_are_refused(tmp_path: Path, text: str, why: str) -> None:
    with pytest.raises(NotIndexed, match=why):
        ListIndex.open(_write(tmp_path, text), NS)


def test_an_item_split_by_a_misleading_indentation_fails_when_read(tmp_path: Path) -> None:
    # A hand-edited file: a nested list of objects outdented to the items' own indentation.
    text = ('{\n "items": [\n  {\n   "metadata": {"namespace": "a"},\n   "x": [\n  {"y": 1\n  },\n  {"z": 2}\n'
            '   ]\n  },\n  {\n   "metadata": {"namespace": "b"}\n  }\n ],\n "kind": "List"\n}\n')
    assert json.loads(text)["items"][1] == {"metadata": {"namespace": "b"}}
    index = ListIndex.open(_write(tmp_path, text), NS)
    with pytest.raises(NotIndexed, match="does not decode on its own"):
        _all(index)


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(items=st.lists(st.dictionaries(st.sampled_from(["namespace", "kind", "spec", "n"]), values, max_size=4),
                      max_size=8),
       indent=st.sampled_from([1, 2, 3, 4, "\t", " \t"]))
def test_any_pretty_printed_list_reads_back_exactly(tmp_path_factory: pytest.TempPathFactory,
                                                    items: list[dict[str, object]], indent: int | str) -> None:
    path = _write(tmp_path_factory.mktemp("l"), json.dumps(_list(items), indent=indent, ensure_ascii=False))
    index = ListIndex.open(path, NS)
    assert _all(index) == items
    for i, item in enumerate(items):
        ns = item.get("namespace")
        top_level_only = json.dumps(item).count('"namespace"') == 1
        written_plain = isinstance(ns, str) and json.dumps(ns, ensure_ascii=False)[1:-1] == ns  # no escapes
        if written_plain and top_level_only and len(ns.encode()) <= 256:  # type: ignore[union-attr]
            assert index.keys["ns"][i] == ns
            assert i in index.items_where("ns", ns)
        else:
            assert index.keys["ns"][i] is None or index.keys["ns"][i] == ns


def test_a_key_an_item_holds_several_times(tmp_path: Path) -> None:
    def pod(ns: str, *ips: str) -> dict[str, object]:
        return _pod(ns, "p", status={"podIP": ips[0] if ips else None, "podIPs": [{"ip": ip} for ip in ips],
                                     "hostIPs": [{"ip": "192.168.1.1"}]})

    items = [pod("a", "10.0.0.1", "fd00::1"), pod("a"), pod("b", "10.0.0.2"), pod("c", "10.0.0.3\u00e9")]
    index = ListIndex.open(_write(tmp_path, json.dumps(_list(items), indent=1)), NS, {"ip": key_pattern("ip")})
    assert index.many["ip"] == [("10.0.0.1", "fd00::1", "192.168.1.1"), ("192.168.1.1",),
                                ("10.0.0.2", "192.168.1.1"), None]  # the last is escaped as written: unsure
    assert index.items_where("ip", "fd00::1") == [0, 3]
    assert index.items_where("ip", "10.0.0.2") == [2, 3]
    assert index.items_where("ip", "192.168.1.1") == [0, 1, 2, 3]
    assert index.keys["ns"] == ["a", "a", "b", "c"]
    later = ListIndex.open(index.path, NS, {"ip": key_pattern("ip")}, later=True)  # mapped as scanned: the same
    for ip in ("10.0.0.1", "fd00::1", "10.0.0.2", "192.168.1.1", "10.0.0.9"):
        assert later.items_where("ip", ip) == index.items_where("ip", ip), ip


@pytest.mark.parametrize("indent", [1, 4, "\t"])
def test_keys_scanned_later_agree_with_keys_scanned_at_once(tmp_path: Path, indent: int | str) -> None:
    items = [_pod(f"ns{i % 4}", f"p{i}", status={"podIPs": [{"ip": f"10.0.0.{i}"}], "hostIPs": [{"ip": "192.0.2.1"}]},
                  metadata={"name": f"p{i}", "namespace": f"ns{i % 4}",
                            "ownerReferences": [{"kind": "ReplicaSet", "name": "rs"}]})
             for i in range(300)]
    path = _write(tmp_path, json.dumps(_list(items), indent=indent))
    many = {"ip": key_pattern("ip", "podIP")}
    now = ListIndex.open(path, NS, many, top=("kind",))
    later = ListIndex.open(path, NS, many, top=("kind",), later=True)
    assert later.keys == {"kind": ["Pod"] * 300}  # the item's own kind, not its owner's; nothing else yet
    for ns in ("ns0", "ns3", "nsX"):
        assert later.items_where("ns", ns) == now.items_where("ns", ns) == [i for i in range(300) if f"ns{i % 4}" == ns]
    assert later.items_where("ip", "10.0.0.7") == now.items_where("ip", "10.0.0.7") == [7]
    assert len(later.items_where("ip", "192.0.2.1")) == 300


def test_a_few_questions_before_a_key_is_indexed_scan_for_their_value_alone(tmp_path: Path) -> None:
    items = [_pod("a", "1"), {"kind": "Pod", "metadata": {"name": "no-ns"}},
             _pod("b", "2", extra={"namespace": "a"}), _pod("ab", "3"), _pod('q"x', "4")]
    later = ListIndex.open(_write(tmp_path, json.dumps(_list(items), indent=1)), NS, later=True)
    assert later.items_where("ns", "a") == [0, 2, 4]  # every item holding "a" as the key's value, or escaped
    assert later.items_where("ns", "zzz") == [4]
    assert "ns" not in later.keys  # nothing kept per item
    for _ in range(list_index.TARGETED):
        later.items_where("ns", "b")
    assert later.keys["ns"] == ["a", None, None, "ab", None]  # asked often: indexed, and answered from it
    assert later.items_where("ns", "zzz") == [1, 2, 4]


def test_a_kind_on_the_same_line_as_its_item_is_unsure(tmp_path: Path) -> None:
    text = '{"items": [\n {"kind": "Pod", "metadata": {"name": "a"}},\n {"kind": "Pod", "metadata": {"name": "b"}}\n]}'
    index = ListIndex.open(_write(tmp_path, text), {}, top=("kind",))
    assert index.keys["kind"] == [None, None]


def test_values_sharing_a_hash_only_add_candidates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = [_pod("ns", f"p{i}", status={"podIPs": [{"ip": f"10.0.0.{i}"}]}) for i in range(5)]
    path = _write(tmp_path, json.dumps(_list(items), indent=1))
    exact = ListIndex.open(path, NS, {"ip": key_pattern("ip")}, later=True)
    exact.prepare("ip")  # indexed now (the first lookups would scan for their one value instead)
    assert exact.items_where("ip", "10.0.0.3") == [3]
    monkeypatch.setattr(list_index._ValueMap, "_hash", staticmethod(lambda value: 5))  # every value collides
    colliding = ListIndex.open(path, NS, {"ip": key_pattern("ip")}, later=True)
    colliding.prepare("ip")
    assert colliding.items_where("ip", "10.0.0.3") == [0, 1, 2, 3, 4]  # candidates, each checked by the caller


def test_a_value_scan_skips_windows_without_it_and_misses_no_item(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    items = [_pod(f"ns{i}", f"p{i}") for i in range(200)]
    items[150] = _pod("wanted", "p150")
    items[60] = _pod('esc"aped', "p60")  # an escaped value is unsure: always a candidate
    path = _write(tmp_path, json.dumps(_list(items), indent=1))
    expected = ListIndex.open(path, NS).items_where("ns", "wanted")
    assert expected == [60, 150]
    searched: list[int] = []
    real = list_index._hits
    monkeypatch.setattr(list_index, "_hits", lambda *a: (searched.append(a[2]), real(*a))[1])
    for piece in (97, 1000, 5000, 1 << 20):  # windows whose edges fall everywhere, also inside the value
        monkeypatch.setattr(list_index, "LATER_PIECE", piece)
        searched.clear()
        later = ListIndex.open(path, NS, later=True)
        assert later.items_where("ns", "wanted") == expected, piece
        with path.open("rb") as f:
            windows = sum(1 for _ in list_index._windows(f, later.starts[0], 4096, end=later.ends[-1], size=piece))
        if windows > 4:
            assert len(searched) < windows / 2  # most windows hold neither the value nor an escape


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["10.0.0.1", "10.0.0.11", "110.0.0.1", "10.0.0.1x"]),
                          st.sampled_from(["ip", "podIP", "hostIP", "x"])), min_size=1, max_size=80),
       st.sampled_from([(",", ":"), (", ", ": "), (",", " :  ")]), st.integers(4200, 9000))
def test_a_value_is_looked_for_only_where_it_is_as_the_whole_window_is(
        pairs: list[tuple[str, str]], separators: tuple[str, str], piece: int) -> None:
    # a targeted scan searches only just before each place the value is (a window without an escape): the same
    # hits as the key's pattern over the whole window, across window edges too
    import re
    import tempfile

    items = [_pod("ns", f"p{i}", status={key: ip, "podIPs": [{"ip": ip}]}) for i, (ip, key) in enumerate(pairs)]
    text = json.dumps(_list(items), indent=1, separators=separators)
    with tempfile.TemporaryDirectory() as folder:
        index = ListIndex.open(_write(Path(folder), text), NS)
        pattern = re.compile(list_index._one_value(key_pattern("ip", "podIP"), "10.0.0.1"))
        old = list_index.LATER_PIECE
        list_index.LATER_PIECE = piece
        try:
            near = index._scan(pattern, needles=(b"10.0.0.1", b"\\"), near=b"10.0.0.1")
            whole = index._scan(pattern)
        finally:
            list_index.LATER_PIECE = old
    assert near == whole
    assert len(near) == sum(2 if key in ("ip", "podIP") and ip == "10.0.0.1" else ip == "10.0.0.1"
                            for ip, key in pairs)


@settings(max_examples=100, deadline=None)
@given(names=st.lists(st.text(max_size=6), min_size=1, max_size=12), data=st.data(),
       gap=st.integers(0, 300), run=st.integers(1, 2000))
def test_items_read_together_are_the_items_read_alone(tmp_path_factory: pytest.TempPathFactory, names: list[str],
                                                      data: st.DataObject, gap: int, run: int) -> None:
    # Items close together are read with one call and decoded from one text when it is ASCII: whatever the runs
    # (any gap and length, names that are not ASCII, items asked for in any order), each item is itself.
    items = [_pod("ns", name) for name in names]
    path = _write(tmp_path_factory.mktemp("r"), json.dumps(_list(items), indent=1, ensure_ascii=False))
    index = ListIndex.open(path, NS)
    asked = data.draw(st.lists(st.integers(0, len(items) - 1), max_size=20))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(list_index, "_GAP", gap)
        mp.setattr(list_index, "_RUN", run)
        assert list(index.read(asked)) == [(i, items[i]) for i in asked]
        assert _all(index) == items


def test_a_bad_item_in_a_run_is_said_as_when_it_is_read_alone(tmp_path: Path) -> None:
    text = json.dumps(_list([_pod("a", "p0"), _pod("a", "p1"), _pod("a", "p2")]), indent=1)
    index = ListIndex.open(_write(tmp_path, text), NS)
    # the middle item's text changed in place (same length): it no longer fills its span
    spoiled = text[:index.starts[1]] + "[" + text[index.starts[1] + 1:]
    _write(tmp_path, spoiled)
    for asked in ([1], [0, 1, 2]):
        with pytest.raises(NotIndexed, match="the item at byte [0-9,]+ does not decode on its own"):
            list(index.read(asked))
