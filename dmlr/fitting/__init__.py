"""A fit from its design to its results: the passes over the engine (``evaluator``), what happens before the loop
(``setup``: the first pass or checkpoint, the checks), the loop's set-up and run (``fitter``), and the results
(``results``)."""
