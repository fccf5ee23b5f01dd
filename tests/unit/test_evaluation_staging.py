"""Two evaluations staging one benchmark scene at once (they share its copy in the cache): neither fails and the
copy ends whole, with the GT cameras readable by pycolmap."""

from __future__ import annotations

import threading
from pathlib import Path

import pycolmap
import pytest

from da3core.evaluation.datasets import open_dataset
from da3core.synthetic import write_miniature
from tasks.evaluation import stage, staged_names


@pytest.mark.parametrize("kind", ["unposed", "posed"])
def test_a_second_evaluation_staging_meanwhile_does_not_break_the_first(kind, tmp_path, monkeypatch):
    """The first is held right after fetching a frame to its temporary name; the second stages the same scene
    meanwhile. Without turns, the second deleted the first's temporary file as stale and the first failed."""
    monkeypatch.setenv("DA3_CACHE_DIR", str(tmp_path / "cache"))
    write_miniature("hiroom", tmp_path / "bench")
    dataset = open_dataset("hiroom", tmp_path / "bench" / "hiroom")
    bench = dataset.load(dataset.scenes()[0])
    fs = bench.reader.store.fs
    fetched, resume = threading.Event(), threading.Event()
    fetch = fs.get_file

    def held_fetch(source: str, target: str, **kwargs) -> None:
        fetch(source, target, **kwargs)
        if threading.current_thread().name == "first" and not fetched.is_set():
            fetched.set()
            resume.wait(30)

    monkeypatch.setattr(fs, "get_file", held_fetch)
    errors: list[BaseException] = []
    waits: list[Path] = []

    def run(on_wait=None) -> None:
        try:
            stage(bench, kind, on_wait)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    first = threading.Thread(target=run, name="first")
    first.start()
    assert fetched.wait(30)
    second = threading.Thread(target=run, args=(waits.append,), name="second")
    second.start()
    second.join(1.0)  # the second waits for its turn rather than staging under the first
    resume.set()
    first.join(60)
    second.join(60)
    assert errors == []
    folder = stage(bench, kind)  # the shared copy, complete
    assert waits == [folder]
    images = folder / "images" if kind == "posed" else folder
    for name, source in zip(staged_names(bench), bench.image_files):
        assert (images / name).read_bytes() == Path(source).read_bytes()
    assert sorted(p.name for p in images.iterdir() if not p.name.startswith(".")) == sorted(staged_names(bench))
    if kind == "posed":
        model = pycolmap.Reconstruction(str(folder / "sparse" / "0"))
        assert sorted(image.name for image in model.images.values()) == sorted(staged_names(bench))
        assert [p.name for p in (folder / "sparse").iterdir()] == ["0"]  # no temporary model left
