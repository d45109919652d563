"""codepeft: specialize code LLMs cheaply and show, with evidence, which way is best.

The package is split by concern; each subpackage's docstring says what it owns:

- ``data``        task objects (load, prompt, reference, postprocess) in a registry
- ``models``      resolve a model spec to (model, tokenizer); GGUF conversion; adapter targets
- ``methods``     every arm by name: zero-shot, ICL, RAG and the fine-tuning methods
- ``retrieval``   BM25 / dense / hybrid retrievers for RAG, with an on-disk index cache
- ``training``    fine-tuning loop, collators, checkpoints, cost accounting
- ``generation``  batched decoding and the ``generations.jsonl`` run-directory format
- ``metrics``     exact match, CodeBLEU, BLEU/chrF, pass@k over a saved generations file
- ``sandbox``     running hostile model-generated code in an isolated process
- ``mining``      turning a Python codebase into an instruction data set
- ``study``       one config that runs every arm, with provenance and confidence intervals
- ``report``      HTML / Markdown reports of a study
- ``cli``         the ``codepeft`` command, a thin layer over the above
"""

__version__ = "0.1.0"
