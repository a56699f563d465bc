"""GPU checks run on a borrowed GPU machine: ``scripts/gpu-check`` (transformers) and ``scripts/gpu-llamacpp``.

Each writes ``report.md`` and ``results.json`` into the folder it is given.
Without a GPU they run as a dry run (simulated inventory, resident memory in
place of GPU memory) and the report says "no GPU" for what needs one.
"""
