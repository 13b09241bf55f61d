"""Flamingo visual language models on the CPU.

    import flamingo
    m = flamingo.Model("models/shapes-flamingo", weights="bf16", threads=2)
    g = m.generate("<image>A photo of", images=["a.png"], max_new_tokens=20)
    print(g.text)

The model computes in the C++ library (flamingo._flamingo, a pybind11
module); calls release the GIL, and one Model serves many threads at once.
Errors raise flamingo.Error, whose `kind` is the error's category.
"""
from ._flamingo import (  # noqa: F401
    Chat,
    Error,
    Generation,
    Model,
    eval_records,
    eval_table,
)

__all__ = ["Chat", "Error", "Generation", "Model", "eval_records", "eval_table"]
__version__ = "0.1.0"
