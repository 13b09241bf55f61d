"""The synthetic visual world the bundled model is trained and evaluated on:
scenes and their renderer, the tasks' text, a byte-level BPE, the training
stages of Flamingo's recipe, the evaluation set and the PyTorch evaluator."""
