"""Progress display for a run: one tqdm bar per image (step / total, ETA, CLIP loss, status)."""

from __future__ import annotations


class ProgressBars:
    """One tqdm bar per image: step / total, ETA, CLIP loss."""

    def __init__(self, docs, enabled: bool = True):
        from tqdm import tqdm

        self.enabled = enabled
        self.bars = {}
        if enabled:
            for i, d in enumerate(docs):
                total = int(d.tags["steps"]) - int(d.tags["skip_steps"])
                self.bars[d.id] = tqdm(
                    total=total, position=i, desc=f"image {i} (seed {int(d.tags['seed'])})", unit="step", leave=True
                )

    def update(self, states) -> None:
        for state in states:
            bar = self.bars.get(state.id)
            step = state.tags.get("step")
            if bar is not None and step is not None:
                bar.update(int(step) - bar.n)
                if state.tags.get("loss") is not None:
                    bar.set_postfix(loss=f"{state.tags['loss']:.3f}", status=state.tags.get("status"))

    def finish(self, results) -> None:
        for result in results:
            for doc in result:
                bar = self.bars.get(doc.id)
                if bar is not None and doc.tags.get("steps_done") is not None:
                    bar.update(int(doc.tags["steps_done"]) - bar.n)
                    bar.set_postfix(status=doc.tags.get("status"))

    def note(self, message: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(message)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
