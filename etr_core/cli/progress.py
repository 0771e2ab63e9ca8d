"""The progress bar of ``etr train`` and ``etr compare`` (a training callback, see
:func:`etr_core.training.train`)."""

from __future__ import annotations

import sys


class _Progress:
    """tqdm bar showing loss, radius (TR) and backprops."""

    def __init__(self, total: float | None, desc: str, by_epoch: bool, disable: bool) -> None:
        from tqdm.auto import tqdm

        self.by_epoch = by_epoch
        self.bar = tqdm(
            total=total,
            desc=desc,
            unit="epoch" if by_epoch else "step",
            disable=disable or None,
            dynamic_ncols=True,
            leave=True,
            file=sys.stderr,
        )

    def on_step(self, record: dict) -> None:
        if self.by_epoch:
            self.bar.n = round(record["epoch"], 3)
            self.bar.refresh()
        else:
            self.bar.update(1)
        post = {"loss": f"{record['loss']:.4g}", "backprops": record["backprops"]}
        if record.get("radius") is not None:
            post["radius"] = f"{record['radius']:.3g}"
        self.bar.set_postfix(post, refresh=False)

    def on_end(self, record: dict) -> None:
        self.bar.close()


def _progress(config, desc: str, disable: bool) -> _Progress:
    by_epoch = config.max_steps is None and config.max_epochs is not None
    total = config.max_steps if config.max_steps is not None else config.max_epochs
    return _Progress(total, desc, by_epoch, disable)

