"""A tqdm progress bar (a widget in notebooks, text in terminals) fed by training steps."""
from __future__ import annotations


class ProgressBar:
    def __init__(self, description: str = "training"):
        self.description = description
        self.bar = None

    def __call__(self, row: dict, result) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=result.total_steps, initial=row["step"] - 1, desc=self.description,
                            unit="step", dynamic_ncols=True)
        self.bar.update(row["step"] - self.bar.n)
        postfix = {"loss": f"{row['loss']:.4f}"}
        if "eval_loss" in row:
            postfix["eval"] = f"{row['eval_loss']:.4f}"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
