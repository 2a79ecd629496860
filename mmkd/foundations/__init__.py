"""World foundation models: the pretrained starting points the papers take from the web (a SigLIP
vision tower, a Llama language model), trained once per world on data of their own and cached like
downloaded weights. `model.init=world` starts a run from them (docs/foundations.md).

    python launch/foundations.py                 # build (or show) the foundations of the default model
    python launch/train.py model.init=world      # a run that starts from them (built on first need)
"""
