"""The paper's Figure 4: the memory queue's items, a memory matrix's learnt items (the "memory
matrix instead of queue" ablation) and real patch features in one t-SNE (scikit-learn). A
two-sample distance turns the paper's claim into a number: the queue's items share the
distribution of the real features, the matrix's items do not.

    python -m benchmarks.memory_tsne --dataset_dir ../shared/data/zhanglab224 --output_root runs/figure4 \\
        --queue_model runs/figure4/queue/seed0/models --matrix_model runs/figure4/matrix/seed0/models --write
    python -m benchmarks.memory_tsne --dataset_dir DATA --output_root runs/figure4 --write
    python -m benchmarks.memory_tsne --dataset_dir DATA --output_root runs/figure4 --preset paper --epochs 200 --dry_run

A model not given is trained first (full SQUID, and ``{'memory': 'matrix'}``) with the
multi-seed runner (:func:`compare.run_variants`) into ``<output_root>/queue|matrix/seed<k>/``,
for the first of ``--seeds`` only (default 0; it also draws the images and the permutations).
The real patch features are the tokens the in-painting memory is read with: the encoder
bottleneck after the block's 1x1 projection, one per tile, in eval mode, of ``--n_images``
un-augmented normal training images (the calibration set).
Each memory is compared with its own model's features. In the t-SNE each model's points are
divided by the RMS norm of its features, so the two models share one scale. The distance is
the unbiased squared MMD with a Gaussian kernel whose bandwidth is the median pairwise
squared distance, which makes it scale-free, and its permutation p-value. Writes
``memory_tsne.md``, ``.json`` and ``.png`` into ``--output_root``, and with ``--write`` the
section into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import compare, seeds
from benchmarks.report import markdown_table, provenance, publish, published_figure

HEADING = "## The memory's t-SNE (paper Figure 4)"
#: memory -> (training overrides of its model, the paper's claim, does the claim want the same distribution?)
MEMORIES = {
    "queue": ({}, "shares the distribution of the real patch features", True),
    "matrix": ({"memory": "matrix"}, "lies away from the real patch features", False),
}
ALPHA = 0.05


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int = 200, seed: int = 0) -> dict:
    """Unbiased squared MMD between the rows of ``x`` and ``y`` (Gaussian kernel, bandwidth the
    median pairwise squared distance of the pooled rows) and the permutation p-value of "one
    distribution"."""
    z = np.concatenate([x, y]).astype(np.float64)
    sq = (z * z).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    n = len(z)
    bandwidth = float(np.median(d2[~np.eye(n, dtype=bool)]))
    kernel = np.exp(-d2 / bandwidth) if bandwidth > 0 else np.ones_like(d2)
    np.fill_diagonal(kernel, 0.0)  # the unbiased estimate leaves out the i == j terms

    def stat(in_x: np.ndarray) -> float:
        a, b = in_x.astype(np.float64), (~in_x).astype(np.float64)
        na, nb, ka = a.sum(), b.sum(), kernel @ a
        return a @ ka / (na * (na - 1)) + b @ kernel @ b / (nb * (nb - 1)) - 2 * b @ ka / (na * nb)

    labels = np.arange(n) < len(x)
    observed = stat(labels)
    rng = np.random.default_rng(seed)
    null = np.array([stat(rng.permutation(labels)) for _ in range(permutations)])
    return {
        "mmd2": float(observed),
        "p_value": float((1 + (null >= observed).sum()) / (1 + permutations)),
        "bandwidth": bandwidth,
        "n_items": len(x),
        "n_features": len(y),
        "permutations": permutations,
    }


def memory_items(gen) -> np.ndarray:
    """The in-painting memory's entries (every region's), the queue's written slots only."""
    memory = gen.inpainting.memory
    items = memory.memory.detach()
    if hasattr(memory, "size"):
        if int(memory.size) == 0:
            raise ValueError("the memory queue is empty: the model was never trained")
        items = items[:, : int(memory.size)]
    return items.reshape(-1, items.shape[-1]).cpu().numpy()


def patch_features(gen, images, batch: int = 32) -> np.ndarray:
    """(N, 1, H, W) images -> (N * tiles, D) tokens as the in-painting memory reads them (eval mode)."""
    import torch

    from squid_monai.nn import tile

    gen.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            bottleneck, _ = gen.encoder(tile(images[start : start + batch], gen.grid))
            z = gen.inpainting.project_in(bottleneck)
            out.append(z.reshape(len(z), -1))
    return torch.cat(out).cpu().numpy()


def load_memory_model(models: Path, kind: str):
    """The generator of a trained-model folder, checked to hold an in-painting memory of ``kind``."""
    from squid_monai.loading import load_scorer
    from squid_monai.methods.squid.networks import MemoryMatrix, MemoryQueue

    gen = load_scorer(models / "model.pt").generator
    want = MemoryQueue if kind == "queue" else MemoryMatrix
    if gen.inpainting is None or not isinstance(gen.inpainting.memory, want):
        raise ValueError(
            f"{models}: no in-painting {want.__name__} (the {kind} model must have one)"
        )
    return gen


def training_images(models: Path, image_size: int, n: int, dataset_dir, datalist, seed: int):
    """``n`` un-augmented normal training images, preprocessed as the model was trained."""
    import torch

    from squid_monai.workflow import choose_data, trained_intensity

    data = choose_data(dataset_dir, datalist, seed=seed)
    dataset = data.calibration(
        image_size, max_images=n, intensity=trained_intensity(models, "percentile")
    )
    return torch.stack([torch.as_tensor(dataset[i]["image"]) for i in range(len(dataset))])


def main(argv: list[str] | None = None) -> int:
    own, extra = seeds.split_args(argv)
    args = _parser().parse_args(own)
    start, seed = time.time(), args.seeds[0]
    root = Path(args.output_root).resolve()
    models = {"queue": args.queue_model, "matrix": args.matrix_model}
    chest = bool(args.dataset_dir or args.datalist)
    data = ["--dataset_dir", args.dataset_dir] if args.dataset_dir else []
    data += ["--datalist", args.datalist] if args.datalist else []
    common = [*data, "--progress", "false", *compare.budget_overrides(args), *extra]
    train = compare.train_command("squid", compare.recipe(args, chest))
    runs = {
        kind: (
            train,
            [
                *common,
                *(["--network_overrides", repr(MEMORIES[kind][0])] if MEMORIES[kind][0] else []),
            ],
        )
        for kind, given in models.items()
        if not given
    }
    splits = compare.SPLITS["zhanglab" if chest else "digitanatomy"]
    trained = compare.run_variants(
        runs, root, [seed], splits, args.parallel, args.collect, args.dry_run
    )
    if args.dry_run:
        if not runs:
            print("both models given: nothing to train")
        return 0
    for row in trained:
        models[row["name"]] = str(root / row["name"] / f"seed{seed}" / "models")
    result = {
        "command": "python -m benchmarks.memory_tsne "
        + shlex.join(own + (["--", *extra] if extra else [])),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "trained_here": [row["name"] for row in trained],
        "memories": {},
    }
    rng = np.random.default_rng(seed)
    points = {}
    for kind, folder in models.items():
        folder = Path(folder)
        gen = load_memory_model(folder, kind)
        images = training_images(
            folder, gen.image_size, args.n_images, args.dataset_dir, args.datalist, seed
        )
        items, features = (
            _at_most(a, args.max_points, rng)
            for a in (memory_items(gen), patch_features(gen, images))
        )
        test = mmd_test(items, features, args.permutations, seed)
        same = test["p_value"] >= ALPHA
        result["memories"][kind] = {
            "model": str(folder),
            "claim": MEMORIES[kind][1],
            **test,
            "holds": "yes" if same == MEMORIES[kind][2] else "no",
        }
        scale = np.sqrt((features**2).sum(1).mean()) or 1.0
        points[kind] = (items / scale, features / scale)
    figure = _tsne_figure(
        points, result["memories"], root / "memory_tsne.png", args.perplexity, seed
    )
    result["wall_time_s"] = time.time() - start
    how = f"models trained here: {', '.join(result['trained_here']) or 'none'}; t-SNE and test computed"
    figure_ref = published_figure(figure, "memory_tsne.png", args.write)
    publish(root, "memory_tsne", HEADING, markdown(result, figure_ref, how), result, args.write)
    return 0


def markdown(result: dict, figure: str, how: str) -> str:
    rows = [
        [
            kind,
            f"`{m['model']}`",
            str(m["n_items"]),
            str(m["n_features"]),
            f"{m['mmd2']:.4f}",
            f"{m['p_value']:.3f}",
            m["claim"],
            m["holds"],
        ]
        for kind, m in result["memories"].items()
    ]
    table = markdown_table(
        [
            "memory",
            "model",
            "items",
            "real patch features",
            "MMD^2",
            "permutation p",
            "the paper's claim",
            "holds here?",
        ],
        rows,
    )
    m = result["memories"]
    order = "smaller" if m["queue"]["mmd2"] < m["matrix"]["mmd2"] else "**not** smaller"
    return "\n".join(
        [
            *provenance(result["command"], result["wall_time_s"], how),
            *table,
            "",
            f"The queue's MMD^2 is {order} than the matrix's. \"holds here?\": for the queue, no difference at "
            f"p < {ALPHA}; for the matrix, a difference at p < {ALPHA}. Each memory is compared with its own "
            "model's features. The queue holds tokens of training-mode passes (batch statistics, augmented images, "
            "weights of earlier iterations), and the features come from eval mode, so even a faithful queue differs "
            f"a little, and with many points the test resolves small differences. t-SNE figure: {figure}. For "
            "the paper's scale, train both models with `--preset paper --epochs 200` on a GPU (or pass models "
            "trained so); the t-SNE and the test take minutes on a CPU.",
            "",
        ]
    )


def _at_most(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return rows if len(rows) <= n else rows[np.sort(rng.choice(len(rows), n, replace=False))]


def _tsne_figure(points: dict, memories: dict, path: Path, perplexity: float, seed: int) -> Path:
    """One t-SNE of every model's items and features; real features grey, queue red, matrix blue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    groups = [
        (
            f"real patch features ({kind} model)",
            feats,
            dict(
                c="0.65" if kind == "queue" else "0.3", s=6, marker="o" if kind == "queue" else "x"
            ),
        )
        for kind, (_, feats) in points.items()
    ]
    colours = {"queue": "tab:red", "matrix": "tab:blue"}
    groups += [
        (
            f"{kind} items (MMD^2 {memories[kind]['mmd2']:.3f}, p {memories[kind]['p_value']:.3f})",
            items,
            dict(c=colours[kind], s=8, marker="o"),
        )
        for kind, (items, _) in points.items()
    ]
    stacked = np.concatenate([g[1] for g in groups])
    reduced = PCA(n_components=min(50, *stacked.shape), random_state=seed).fit_transform(stacked)
    embedded = TSNE(
        n_components=2,
        perplexity=min(perplexity, (len(stacked) - 1) / 3),
        init="pca",
        random_state=seed,
    ).fit_transform(reduced)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    start = 0
    for label, rows, style in groups:
        ax.scatter(
            *embedded[start : start + len(rows)].T, label=label, alpha=0.7, linewidths=0.5, **style
        )
        start += len(rows)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, loc="best")
    ax.set_title("t-SNE of the in-painting memories and real patch features", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory_tsne",
        description=__doc__.split("\n\n")[0],
        epilog="Bundle overrides for the trainings go after `--`.",
    )
    parser.add_argument(
        "--queue_model",
        default=None,
        help="a trained full-SQUID models/ folder (default: train one)",
    )
    parser.add_argument(
        "--matrix_model",
        default=None,
        help="a trained {'memory': 'matrix'} models/ folder (default: train one)",
    )
    parser.add_argument(
        "--dataset_dir", default=None, help="the training data (default: DigitAnatomy)"
    )
    parser.add_argument("--datalist", default=None, help="a datalist JSON instead of --dataset_dir")
    parser.add_argument(
        "--n_images", type=int, default=200, help="normal training images for the real features"
    )
    parser.add_argument(
        "--max_points", type=int, default=1000, help="items and features per memory, at most"
    )
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--perplexity", type=float, default=30.0)
    compare.study_arguments(parser)
    parser.set_defaults(
        seeds=[0]
    )  # one pair of models: the first seed trains them, draws the images and the test
    return parser


if __name__ == "__main__":
    sys.exit(main())
