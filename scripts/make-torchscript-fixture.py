"""Writes tests/fixtures/tiny_mlp.pt: a TorchScript module (16 features -> 3 logits)
saved with torch.jit.save, used by the tests that train a TorchScript model in-process.

Run with any Python that has PyTorch, e.g. the bench venv:
    target/bench-venv/bin/python scripts/make-torchscript-fixture.py
"""

import pathlib

import torch


class TinyMlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(16, 32)
        self.out = torch.nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


def main() -> None:
    torch.manual_seed(0)
    out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tiny_mlp.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(TinyMlp()), str(out))
    print(out)


if __name__ == "__main__":
    main()
