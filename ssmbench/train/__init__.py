"""Accuracy runs on synthetic tasks: planning (:mod:`.plan`) and the training loop (:mod:`.loop`)."""
