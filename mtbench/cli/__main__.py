"""``python -m mtbench.cli``: how helper workers are started (:func:`mtbench.workers.start_workers`)."""

from mtbench.cli import main

main()
