"""Execute a notebook top to bottom in a Jupyter kernel and store its outputs as this repository keeps them: stderr
(TensorFlow's log chatter) dropped, images over 100 KB stored as JPEG.

Usage (needs `pip install nbclient ipykernel`; the schedule is the real one, so unset ADTF_NOTEBOOK_SMOKE):
    python notebooks/execute.py notebooks/04_simplenet.ipynb [WORKDIR]
WORKDIR (default: a new temporary folder) is where the notebook runs and writes its runs/.
"""
import argparse
import base64
import io
import os
import tempfile
import time

import nbclient
import nbformat
from PIL import Image


def main(path, workdir=None):
    notebook = nbformat.read(path, as_version=4)
    if workdir:  # the kernel starts there: a folder not made yet stopped it with a FileNotFoundError from Popen
        os.makedirs(workdir, exist_ok=True)
    started = time.perf_counter()
    client = nbclient.NotebookClient(notebook, timeout=1800, kernel_name="python3",
                                     resources={"metadata": {"path": workdir or tempfile.mkdtemp(prefix="notebook-")}})
    client.execute()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [_stored(out) for out in cell.outputs
                            if not (out.output_type == "stream" and out.name == "stderr")]
    nbformat.write(notebook, path)
    print(f"{path}: executed in {time.perf_counter() - started:.0f} s")


def _stored(out):
    image = out.get("data", {}).get("image/png")
    if image and len(base64.b64decode(image)) > 100_000:  # a report's heat-map grid: kept readable, not 1 MB of PNG
        buffer = io.BytesIO()
        Image.open(io.BytesIO(base64.b64decode(image))).convert("RGB").save(buffer, "JPEG", quality=85)
        out.data = {"image/jpeg": base64.b64encode(buffer.getvalue()).decode(),
                    "text/plain": out.data.get("text/plain", "<IPython.core.display.Image object>")}
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", help="the .ipynb to execute; its outputs are replaced in place")
    parser.add_argument("workdir", nargs="?", default=None,
                        help="where the notebook runs and writes its runs/ (default: a new temporary folder)")
    args = parser.parse_args()
    main(args.notebook, args.workdir)
