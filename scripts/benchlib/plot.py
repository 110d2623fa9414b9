"""PNG charts for BENCHMARKS.md (matplotlib, Agg backend; the ``bench`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import peerreport
from .report import size_label


def plot(doc: dict[str, Any], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    api = doc.get("api", [])
    http = (doc.get("http") or {}).get("results", [])
    if api:
        labels = [f"{r['title']} (c{r['concurrency']})" for r in api]
        labels += [f"HTTP {r['title']} ({r['workers']}w, c16)" for r in http]
        chatstore = [r["chatstore"]["throughput"] for r in api] + [r["throughput"] for r in http]
        floor = [r["floor"]["throughput"] for r in api] + [r["floor_throughput"] for r in http]
        ratios = [r["ratio"] for r in api] + [r["ratio"] for r in http]
        fig, ax = plt.subplots(figsize=(10, 0.42 * len(labels) + 1.6))
        y = list(range(len(labels)))
        height = 0.38
        ax.barh(
            [i - height / 2 for i in y], floor, height, label="floor (raw asyncpg)", color="#9aa5b1"
        )
        ax.barh([i + height / 2 for i in y], chatstore, height, label="chatstore", color="#2b6cb0")
        for i, (value, ratio) in enumerate(zip(chatstore, ratios, strict=True)):
            ax.text(value * 1.05, i + height / 2, f"{ratio:.2f}x", va="center", fontsize=8)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("operations per second (log scale); label: chatstore / floor")
        ax.set_title(f"Throughput by workload, chatstore vs floor ({doc['mode']} run)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(axis="x", which="both", alpha=0.3)
        fig.tight_layout()
        path = directory / "throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    scaling = doc.get("scaling", [])
    if scaling:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, kind, xlabel, title in (
            (axes[0], "page", "messages in the conversation", "Newest 50 messages"),
            (axes[1], "list", "conversations of the user", "First page of 20 conversations"),
        ):
            points = sorted((p for p in scaling if p["kind"] == kind), key=lambda p: p["size"])
            sizes = [p["size"] for p in points]
            for key, label, style in (
                ("chatstore_p50_ms", "chatstore p50", "o-"),
                ("chatstore_p99_ms", "chatstore p99", "o--"),
                ("floor_p50_ms", "floor p50", "s-"),
                ("server_ms", "server (EXPLAIN ANALYZE)", "^:"),
            ):
                ax.plot(sizes, [p[key] for p in points], style, label=label)
            ax.set_xscale("log")
            ax.set_xticks(sizes, [size_label(s) for s in sizes])
            ax.set_ylim(bottom=0)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("ms per read")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"Latency vs size: flat means O(page) ({doc['mode']} run)")
        fig.tight_layout()
        path = directory / "scaling.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    written += peerreport.plot(doc, directory)
    return written
