"""Knowledge distillation: the KD methods (``methods/``, one file each), the teacher bank, the
frozen teacher, feature hooks, the multi-step schedule and the teacher-output cache."""
