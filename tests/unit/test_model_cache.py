"""What keys a result on its weights: the contents of a local model dir or checkpoint file, not its name."""

from __future__ import annotations

import hashlib
import os

from tasks.model_cache import local_weights_identity


def test_local_weights_are_keyed_on_their_contents(tmp_path):
    model = tmp_path / "DA3-SMALL"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"first")
    checkpoint = tmp_path / "video_depth_anything_vits.pth"
    checkpoint.write_bytes(b"vda")
    sha = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731
    assert local_weights_identity(str(model), random=False) == {"weights_sha256": sha(b"first")}
    assert local_weights_identity(str(checkpoint), random=False) == {"weights_sha256": sha(b"vda")}
    (model / "model.safetensors").write_bytes(b"second")  # replaced in place: a new identity
    os.utime(model / "model.safetensors", ns=(1, 1))  # even with a clock that did not move on
    assert local_weights_identity(str(model), random=False) == {"weights_sha256": sha(b"second")}
    # random weights and hub names already say what they are
    assert local_weights_identity(str(model), random=True) == {}
    assert local_weights_identity("depth-anything/DA3-SMALL", random=False) == {}
    assert local_weights_identity(None, random=False) == {}
