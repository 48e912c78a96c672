"""``python -m dmlr.demo`` (what ``make demo`` runs): CSV files -> ``dmlr stage`` -> ``dmlr fit`` -> summary.

1. Writes a synthetic survey-like table (string outcome ``mode``, numeric features, a categorical ``region``) as
   several CSV files, drawn from a multinomial logit with known coefficients.
2. Runs ``dmlr stage`` to put it in a Zarr store (one-hot encoding ``region``).
3. Runs ``dmlr fit`` on a LocalCluster of worker processes: progress on stderr, the summary on stdout.
4. Compares every estimate with the coefficient the data were drawn from, in standard errors.
"""

from __future__ import annotations

import argparse
import glob
import os
import shlex
import subprocess
import sys

import numpy as np
import pandas as pd

from dmlr.synthetic import draw_labels

__all__ = ["main", "make_table", "run_demo", "write_csv_parts"]

MODES = np.array(["bike", "bus", "car", "walk"])
REGIONS = np.array(["east", "north", "south", "west"])


def make_table(n: int, seed: int = 2026) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A table drawn from a multinomial logit, and the true coefficients in dmlr's layout.

    Returns
    -------
    table : pandas.DataFrame
        Columns ``age``, ``income``, ``distance``, ``rain``, ``region`` (text), ``mode`` (text outcome).
    truth : pandas.DataFrame, shape (8, 3)
        Rows ``const``, the four numeric features, ``region[T.north|south|west]``; columns the non-base modes.
    """
    rng = np.random.default_rng(seed)
    numeric = rng.standard_normal((n, 4))
    region = rng.choice(REGIONS, size=n)
    onehot = (region[:, None] == REGIONS[None, 1:]).astype(float)
    features = np.column_stack([numeric, onehot])
    coef = rng.normal(0.0, 0.5, size=(features.shape[1] + 1, MODES.size - 1))  # row 0: the intercept
    codes = draw_labels(features, coef, rng)
    table = pd.DataFrame(numeric, columns=["age", "income", "distance", "rain"])
    table["region"] = region
    table["mode"] = MODES[codes]
    names = ["const", "age", "income", "distance", "rain"] + [f"region[T.{r}]" for r in REGIONS[1:]]
    return table, pd.DataFrame(coef, index=names, columns=MODES[1:])


def write_csv_parts(table: pd.DataFrame, folder: str, files: int) -> str:
    """Write ``table`` as ``files`` CSV files ``part-I.csv`` in ``folder`` (replacing old parts); returns the glob."""
    os.makedirs(folder, exist_ok=True)
    for old in glob.glob(os.path.join(folder, "part-*.csv")):
        os.remove(old)
    rows = -(-len(table) // files)
    for i in range(files):
        table.iloc[i * rows : (i + 1) * rows].to_csv(os.path.join(folder, f"part-{i}.csv"), index=False)
    return os.path.join(folder, "part-*.csv")


def _dmlr(*args: str) -> None:
    command = [sys.executable, "-m", "dmlr", *args]
    print("$ dmlr " + " ".join(shlex.quote(a) for a in args), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)


def run_demo(n: int = 400_000, workdir: str = "demo-output", *, n_workers: int = 2, files: int = 4) -> float:
    """Run the whole demo; return the largest ``|estimate - truth| / std err``.

    Parameters
    ----------
    n : int
        Rows of the generated table.
    workdir : str
        Where the CSV files, the store and the result go (replaced if present).
    n_workers : int
        Worker processes of the LocalCluster ``dmlr fit`` starts.
    files : int
        Number of CSV files the table is split into.
    """
    import dmlr

    table, truth = make_table(n)
    write_csv_parts(table, os.path.join(workdir, "csv"), files)
    print(f"wrote {n:,} rows in {files} CSV files to {workdir}/csv", file=sys.stderr)
    store, result = os.path.join(workdir, "survey.zarr"), os.path.join(workdir, "result")
    _dmlr("stage", os.path.join(workdir, "csv", "*.csv"), store, "--target", "mode", "--categorical", "region",
          "--overwrite", "--no-progress")  # fmt: skip
    _dmlr("fit", store, "--out", result, "--workers", str(n_workers), "--overwrite")  # the demo owns its workdir
    res = dmlr.load(result)
    z = (res.params - truth.loc[res.params.index, res.params.columns]) / res.bse
    print("\nEstimates against the coefficients the data were drawn from, in standard errors:")
    print(z.round(2).to_string())
    max_z = float(np.abs(z.to_numpy()).max())
    print(f"max |estimate - truth| / se = {max_z:.2f} (within 4: {max_z < 4})")
    return max_z


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=400_000)
    parser.add_argument("--workdir", default="demo-output")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    max_z = run_demo(args.n, args.workdir, n_workers=args.workers)
    return 0 if max_z < 4 else 1


if __name__ == "__main__":
    sys.exit(main())
