"""Echo the inputs doubled and report the reference's version: proves the oracle venv runs."""

import json
import sys
from importlib.metadata import version

import numpy as np

inputs, args = np.load(sys.argv[1]), json.loads(open(sys.argv[2]).read())
import depth_anything_3.api  # noqa: F401, E402  (the reference must import, after its inputs are read)

np.savez(
    sys.argv[3], doubled=inputs["x"] * 2, version=np.array(version("depth-anything-3")), factor=np.array(args["factor"])
)
