"""The torch-free inference side: the model repository contract, the ensemble
arithmetic and (later) the runtime, HTTP app and batch scorer.

Nothing in this package imports torch or `trainer`, so a serving image carries no torch.
The trainer imports the contract modules (`manifest`, `ensemble`, `atomic`) from here
so that there is one definition of each.
"""

__version__ = "0.1.0"
