"""A query-protocol client: serves an ONNX classifier's logits to edgedistill (docs/query-protocol.md).

    python -m edgedistill.examples.query_client MODEL.onnx [--count-file PATH]

In a run config:

    teacher = {command = ["python", "-m", "edgedistill.examples.query_client", "model.onnx"], max_queries = 20000}

A client for a model behind a paid API looks the same: `answer` calls the API instead of onnxruntime.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgedistill.query import serve


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, open the model, and serve until edgedistill closes stdin."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="an ONNX classifier: one input with a batch axis, logits first output")
    parser.add_argument("--count-file", type=Path, help="append the number of inputs of each request to this file")
    args = parser.parse_args(argv)

    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    classes = session.get_outputs()[0].shape[-1]
    if not isinstance(classes, int):
        parser.error(f"{args.model}: the number of logits is not fixed ({classes!r})")

    def answer(x: np.ndarray) -> np.ndarray:
        if args.count_file:
            with args.count_file.open("a") as f:
                f.write(f"{len(x)}\n")
        return session.run(None, {input_name: x})[0]

    serve(answer, outputs=classes)


if __name__ == "__main__":
    main()
