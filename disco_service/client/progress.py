"""Progress display for a run: one tqdm bar per image (step / total, ETA, CLIP loss, status).

An animation has one bar over the steps of all its frames, saying which frame it is making
(``frame i/N``, counted from 1) and the step within that frame.

An image whose job has not started says ``waiting for a sampler`` and how many of the run's
images are ahead of it. Its clock starts when its job starts, and the rate (and so the ETA) is
shown once two steps are done: a single step says little about the next ones.
"""

from __future__ import annotations

from typing import IO, Any

__all__ = ["FIRST_STEPS_FORMAT", "ProgressBars", "RATE_AFTER_STEPS", "WAITING", "WAITING_FORMAT"]

WAITING_FORMAT = "{desc}"
WAITING = "waiting for a sampler"
FIRST_STEPS_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
RATE_AFTER_STEPS = 2


class ProgressBars:
    """One tqdm bar per image: waiting, then step / total, ETA, CLIP loss."""

    def __init__(self, docs: Any, enabled: bool = True, file: IO[str] | None = None):
        from tqdm import tqdm

        self.enabled = enabled
        self.bars = {}
        self.order = [d.id for d in docs]
        self.started: set[str] = set()
        self.animations: set[str] = set()
        if enabled:
            for i, d in enumerate(docs):
                total, name = _image_steps(d.tags), f"image {i}"
                if int(d.tags.get("batch_size") or 1) > 1:  # one sampler call paints the batch's images
                    name = f"batch {i}, {int(d.tags['batch_size'])} images"
                if d.tags.get("animation_mode", "None") != "None":
                    total, name = _animation_steps(d.tags), "animation"
                    self.animations.add(d.id)
                self.bars[d.id] = tqdm(
                    total=total,
                    position=i,
                    desc=f"{name} (seed {int(d.tags['seed'])}): {WAITING}",
                    unit="step",
                    leave=True,
                    smoothing=0,  # the average since the job started: steps take about the same time
                    bar_format=WAITING_FORMAT,
                    file=file,
                )

    def update(self, states: Any) -> None:
        """Show the jobs' states as ``/progress`` reports them (``tags``: status, step, loss)."""
        status = {s.id: s.tags.get("status", "waiting") for s in states}
        for state in states:
            bar = self.bars.get(state.id)
            if bar is None:
                continue
            if state.tags.get("status", "waiting") == "waiting" and state.id not in self.started:
                before = self.order[: self.order.index(state.id)]
                ahead = [i for i in before if status.get(i, "done") in ("waiting", "running")]
                queue = f", {len(ahead)} of this run's images ahead" if ahead else ""
                bar.set_description_str(f"{self._name(bar)}: {WAITING}{queue}")
                continue
            step = state.tags.get("step")
            if state.id in self.animations:
                step = self._animation_step(bar, state.tags)
            if state.id not in self.started:
                self.started.add(state.id)
                bar.bar_format = FIRST_STEPS_FORMAT
                bar.set_description_str(self._name(bar), refresh=False)
                bar.reset(total=bar.total)  # the clock starts with the job, not with the request
            if state.tags.get("tiles") and state.id not in self.animations:  # GoBig's tiles, after the image
                bar.set_description_str(
                    f"{self._name(bar)}: GoBig tile {int(state.tags['tile'])}/{int(state.tags['tiles'])}", False
                )
            if step is not None:
                if int(step) >= RATE_AFTER_STEPS:
                    bar.bar_format = None  # tqdm's own: with the rate and the time left
                bar.update(int(step) - bar.n)
            if state.tags.get("loss") is not None:
                bar.set_postfix(loss=f"{state.tags['loss']:.3f}", status=state.tags.get("status"))

    def finish(self, results: Any) -> None:
        for result in results:
            for doc in result:
                bar = self.bars.get(doc.id)
                if bar is not None and doc.tags.get("steps_done") is not None:
                    if doc.id not in self.started:
                        bar.bar_format = FIRST_STEPS_FORMAT
                        bar.set_description_str(self._name(bar), refresh=False)
                    bar.update(int(doc.tags["steps_done"]) - bar.n)
                    bar.set_postfix(status=doc.tags.get("status"))

    def _animation_step(self, bar: Any, tags: Any) -> int | None:
        """The bar of an animation: the run's step of all, which frame, the step within it."""
        if tags.get("run_total"):
            bar.total = int(tags["run_total"])  # a video's frame count is known once its job reads it
        if tags.get("frame") is not None and tags.get("frames"):
            name = self._name(bar)
            within = f", step {int(tags.get('step') or 0)}/{int(tags.get('total') or 0)}"
            bar.set_description_str(f"{name}: frame {int(tags['frame']) + 1}/{int(tags['frames'])}{within}", False)
        return tags.get("run_step")

    @staticmethod
    def _name(bar: Any) -> str:
        return bar.desc.split(":")[0]  # "image i (seed s)"

    def note(self, message: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(message)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _image_steps(tags: Any) -> int:
    """A still image's steps: its own (none with ``gobig_from_init``) and GoBig's tiles' (disco.tiling)."""
    steps, skip = int(tags["steps"]), int(tags["skip_steps"])
    if not tags.get("gobig"):
        return steps - skip
    from disco.tiling import gobig_steps

    width, height = (int(v) for v in tags["width_height"])
    scale, ratio, overlap = int(tags["gobig_scale"]), float(tags["gobig_skip_ratio"]), int(tags["gobig_overlap"])
    own = 0 if tags.get("gobig_from_init") else steps - skip
    return own + gobig_steps(width, height, steps, scale, ratio, overlap)


def _animation_steps(tags: Any) -> int:
    """An animation's steps in all, as far as its settings tell (a video's length, and the frames
    turbo makes without steps, come with its job's ``run_total``)."""
    from disco.settings import Settings, frames_skip_steps

    steps, skip, frames = int(tags["steps"]), int(tags["skip_steps"]), int(tags["max_frames"])
    start = int(tags.get("start_frame") or 0)
    later = steps - frames_skip_steps(Settings(steps=steps, frames_skip_steps=tags["frames_skip_steps"]))
    first = steps - skip if tags.get("animation_mode") in ("2D", "3D") and start == 0 else later
    return first + max(frames - start - 1, 0) * later
